"""What the engine asks the adapters to do. Plain values; the runtime applies them in order.

The names follow Argo Rollouts' traffic-routing interface (SetWeight, SetHeaderRoute,
SetMirrorRoute, RemoveManagedRoutes) where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshshift.spec.model import AnalysisRef, CanaryScale, HeaderMatch, MirrorMatch


@dataclass(frozen=True, slots=True)
class SetCanaryWeight:
    """Send `weight` percent to the canary and the rest to the stable."""

    weight: int


@dataclass(frozen=True, slots=True)
class ApplyHeaderRoute:
    name: str
    match: tuple[HeaderMatch, ...]


@dataclass(frozen=True, slots=True)
class RemoveHeaderRoute:
    name: str


@dataclass(frozen=True, slots=True)
class ApplyMirrorRoute:
    name: str
    match: tuple[MirrorMatch, ...]
    percentage: int | None


@dataclass(frozen=True, slots=True)
class RemoveMirrorRoute:
    name: str


@dataclass(frozen=True, slots=True)
class RemoveManagedRoutes:
    """Remove every header and mirror route meshshift added."""


@dataclass(frozen=True, slots=True)
class HeaderRoute:
    name: str
    match: tuple[HeaderMatch, ...]


@dataclass(frozen=True, slots=True)
class MirrorRoute:
    name: str
    match: tuple[MirrorMatch, ...]
    percentage: int | None


@dataclass(frozen=True, slots=True)
class SetManagedRoutes:
    """Make meshshift's header and mirror routes exactly these, in one change.

    What a restart re-asserts: removing the routes and adding them back would send
    header-routed requests to the stable in between.
    """

    header_routes: tuple[HeaderRoute, ...]
    mirror_routes: tuple[MirrorRoute, ...]


@dataclass(frozen=True, slots=True)
class ScaleCanary:
    scale: CanaryScale
    traffic_weight: int  # for matchTrafficWeight


class AnalysisKind(StrEnum):
    STEP = "step"
    BACKGROUND = "background"
    PRE_PROMOTION = "prePromotion"  # blue-green, against the preview
    POST_PROMOTION = "postPromotion"  # blue-green, after the switch


@dataclass(frozen=True, slots=True)
class StartAnalysis:
    run_name: str
    kind: AnalysisKind
    analysis: AnalysisRef
    revision: str
    stable_revision: str


@dataclass(frozen=True, slots=True)
class StopAnalysis:
    run_name: str


@dataclass(frozen=True, slots=True)
class PromoteCanary:
    """Make the stable run `revision` (Kubernetes: copy the template to `-primary`)."""

    revision: str


@dataclass(frozen=True, slots=True)
class RollBack:
    """The rollout of `revision` was aborted; traffic actions precede this one."""

    revision: str
    reason: str


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class RecordEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Call the engine again at `at` (seconds since the epoch) even if nothing changes."""

    at: float


Action = (
    SetCanaryWeight
    | ApplyHeaderRoute
    | RemoveHeaderRoute
    | ApplyMirrorRoute
    | RemoveMirrorRoute
    | RemoveManagedRoutes
    | SetManagedRoutes
    | ScaleCanary
    | StartAnalysis
    | StopAnalysis
    | PromoteCanary
    | RollBack
    | RecordEvent
    | WaitUntil
)
