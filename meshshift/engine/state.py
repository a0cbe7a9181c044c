"""The persisted state of one rollout: a plain, versioned, JSON-serializable value.

It is written before the actions it announces are applied, so a restarted daemon
resumes from it exactly (see `engine.machine.resume_actions`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meshshift import codec
from meshshift.engine.actions import AnalysisKind

# Defined with the actions that carry them; the state holds them too.
from meshshift.engine.actions import HeaderRoute as HeaderRoute
from meshshift.engine.actions import MirrorRoute as MirrorRoute
from meshshift.spec.model import AnalysisPhase, AnalysisRef, CanaryScale

SCHEMA_VERSION = 1
HANDLED_COMMANDS_KEPT = 32
HISTORY_KEPT = 10


class RolloutPhase(StrEnum):
    """Argo Rollouts' phases."""

    HEALTHY = "Healthy"  # the stable serves everything; nothing to roll out
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    DEGRADED = "Degraded"  # aborted: back on the stable until a new revision or a retry


class Stage(StrEnum):
    """Where the machine is inside its phase."""

    INITIALIZING = "Initializing"  # first sight: the stable is being set up
    STEPPING = "Stepping"  # running the canary steps
    FINALIZING = "Finalizing"  # steps done; waiting for the background analysis verdict
    PROMOTING = "Promoting"  # the stable is being updated to the canary revision
    ROLLING_BACK = "RollingBack"  # walking the weights down (gradual failure policy)
    IDLE = "Idle"  # Healthy or Degraded
    # Blue-green: the new revision is up on the preview only (pre-promotion analysis, pause);
    # then scaled to full before the switch; then switched to, while the old one still runs.
    PREVIEW = "Preview"
    SWITCHING = "Switching"
    POST_PROMOTION = "PostPromotion"


class PauseReason(StrEnum):
    PAUSE_STEP = "CanaryPauseStep"
    BLUE_GREEN_PAUSE = (
        "BlueGreenPause"  # before the switch: autoPromotionEnabled false, or autoPromotionSeconds
    )
    INCONCLUSIVE = "InconclusiveAnalysis"
    FROZEN = "FrozenAfterFailure"  # the freeze failure policy holds the weights
    USER = "PausedByUser"  # `meshshift pause` (Argo's spec.paused: "manually paused"), until promote

    @property
    def needs_human(self) -> bool:
        return self not in (PauseReason.PAUSE_STEP, PauseReason.BLUE_GREEN_PAUSE)


IN_ROLLOUT = frozenset(
    {
        Stage.STEPPING,
        Stage.FINALIZING,
        Stage.PROMOTING,
        Stage.ROLLING_BACK,
        Stage.PREVIEW,
        Stage.SWITCHING,
        Stage.POST_PROMOTION,
    }
)


@dataclass(frozen=True, slots=True)
class AnalysisRunRecord:
    """What the engine knows of one analysis run: its name and its last verdict."""

    name: str
    kind: AnalysisKind
    step_index: int | None
    analysis: AnalysisRef
    phase: AnalysisPhase = AnalysisPhase.PENDING
    started_at: float = 0.0
    stop_requested: bool = False
    superseded: bool = False  # replaced by a retry; its verdict no longer counts


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    """One finished rollout, newest last."""

    revision: str
    outcome: str  # Promoted, Aborted, Superseded, Undone
    started_at: float | None
    finished_at: float
    message: str = ""
    full_promotion: bool = False
    manual_pause_seconds: float = 0.0  # time spent waiting for a human (Argo's manual pause)


@dataclass(frozen=True, slots=True)
class RolloutState:
    stable_revision: str
    phase: RolloutPhase = RolloutPhase.HEALTHY
    stage: Stage = Stage.IDLE
    canary_revision: str | None = None
    attempt: int = 0
    step_index: int = 0
    step_started_at: float | None = None
    pause_reason: PauseReason | None = None
    pause_until: float | None = None
    desired_weight: int = 0
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()
    canary_scale: CanaryScale = field(default_factory=CanaryScale.zero)
    analysis_runs: tuple[AnalysisRunRecord, ...] = ()
    blocking_run: str | None = None  # the run an Inconclusive/frozen pause waits on
    waiting_since: float | None = None  # waiting on workloads: the progress deadline clock
    rollout_started_at: float | None = None
    abort_reason: str | None = None
    message: str = ""
    rollback_weights: tuple[int, ...] = ()
    next_rollback_at: float | None = None
    scale_down_at: float | None = None
    full_promotion: bool = False
    # Blue-green: when the preview was first up, and when user traffic moved to the new revision
    # (None before the switch, and again once traffic is back on the stable).
    preview_ready_at: float | None = None
    switched_at: float | None = None
    # This rollout's time in pauses only a human ends (`pause: {}`, Inconclusive, freeze).
    manual_pause_seconds: float = 0.0
    manual_pause_started_at: float | None = None
    handled_commands: tuple[str, ...] = ()
    history: tuple[RevisionRecord, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @property
    def in_rollout(self) -> bool:
        return self.stage in IN_ROLLOUT

    @property
    def switched(self) -> bool:
        """Blue-green: user traffic is on the new revision."""
        return self.switched_at is not None

    def run(self, name: str) -> AnalysisRunRecord | None:
        for record in self.analysis_runs:
            if record.name == name:
                return record
        return None

    def current_runs(self) -> tuple[AnalysisRunRecord, ...]:
        return tuple(r for r in self.analysis_runs if not r.superseded)

    # --- serialization ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        encoded = codec.encode(self)
        assert isinstance(encoded, dict)
        return encoded

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        version = data.get("schemaVersion", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"rollout state has schemaVersion {version}; this meshshift reads {SCHEMA_VERSION}"
            )
        return codec.decode(cls, data)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        return cls.from_dict(json.loads(text))
