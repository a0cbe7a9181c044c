"""What a rollout looks like from outside: the facts the metrics, the API, the CLI and
the notifications all show, derived from one RolloutSnapshot in one place.

Argo Rollouts' metric phase (`rollout_info{phase}`) from our engine's state:

| our state                                              | Argo phase  |
|--------------------------------------------------------|-------------|
| spec missing or invalid (`spec_error`)                 | InvalidSpec |
| the last reconcile failed (`last_error`; also when the state cannot be saved, shown Degraded) | Error |
| Paused (a pause step, Inconclusive analysis, freeze)   | Paused      |
| Degraded after ProgressDeadlineExceeded                | Timeout     |
| Degraded otherwise (aborted by analysis or a user)     | Abort       |
| Healthy                                                | Completed   |
| Progressing, or not reconciled yet                     | Progressing |

Steps are shown as Argo's CLI shows them during a rollout, `current/total`, with
`current` 1-based (the step being run); `total/total` once promoted and `0/total`
after an abort, as Argo resets its step index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meshshift.analysis.phases import limit_violation
from meshshift.analysis.run import AnalysisRun, MetricResult
from meshshift.engine.actions import AnalysisKind
from meshshift.engine.state import AnalysisRunRecord, RevisionRecord, RolloutPhase, RolloutState, Stage
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.spec.model import (
    STEP_KINDS,
    AnalysisPhase,
    BlueGreen,
    CanaryScale,
    Metric,
    Pause,
    SetCanaryScale,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    Step,
    StepAnalysis,
)

STRATEGY = "canary"  # the strategy of a rollout whose spec is not known (invalid, or not read yet)


def strategy(snapshot: RolloutSnapshot) -> str:
    """Argo's `strategy` label value: `canary` or `blueGreen`."""
    return snapshot.spec.strategy if snapshot.spec is not None else STRATEGY


class ArgoPhase(StrEnum):
    """The phase label values of Argo Rollouts' `rollout_info` and `rollout_phase`."""

    COMPLETED = "Completed"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    TIMEOUT = "Timeout"
    ERROR = "Error"
    ABORT = "Abort"
    INVALID_SPEC = "InvalidSpec"


TIMEOUT_REASON = "ProgressDeadlineExceeded"

# The `traffic_router` label of each router (by its Router.name), lowest precedence first.
# A rollout has one value: with several routers the last of these wins, as in Argo's
# getStrategyAndTrafficRouter (Istio, then Nginx, override what came before). Argo spells
# the ones it knows; routers Argo has no label for are named here, below Argo's.
_ROUTER_LABELS = {
    "envoy": "Envoy",
    "traefik": "Traefik",
    "gatewayapi": "GatewayAPI",
    "gateway-api": "GatewayAPI",
    "istio": "Istio",
    "nginx": "Nginx",
}
# Flagger's spelling of the same routers (its --mesh-provider values).
_FLAGGER_PROVIDERS = {"gateway-api": "gatewayapi:v1", "gatewayapi": "gatewayapi:v1"}

# Provider kinds as Argo's `analysis_run_metric_type` label spells them.
_PROVIDER_TYPES = {
    "prometheus": "Prometheus",
    "web": "Web",
    "datadog": "Datadog",
    "newRelic": "NewRelic",
    "meshshift": "Meshshift",
}
UNKNOWN_PROVIDER = "Unknown Provider"  # Argo's own wording


def argo_phase(snapshot: RolloutSnapshot) -> ArgoPhase:
    if snapshot.spec is None or snapshot.spec_error is not None:
        return ArgoPhase.INVALID_SPEC
    if snapshot.last_error is not None:
        return ArgoPhase.ERROR
    state = snapshot.state
    if state is None:
        return ArgoPhase.PROGRESSING
    if state.phase == RolloutPhase.PAUSED:
        return ArgoPhase.PAUSED
    if state.phase == RolloutPhase.DEGRADED:
        return ArgoPhase.TIMEOUT if state.abort_reason == TIMEOUT_REASON else ArgoPhase.ABORT
    if state.phase == RolloutPhase.HEALTHY:
        return ArgoPhase.COMPLETED
    return ArgoPhase.PROGRESSING


def rollout_phase(snapshot: RolloutSnapshot) -> str:
    """The phase people read (Argo's CLI words): Healthy, Progressing, Paused, Degraded, ...

    A rollout whose state cannot be saved is Degraded: it holds, and will not act until it can."""
    if snapshot.spec is None or snapshot.spec_error is not None:
        return "InvalidSpec"
    if snapshot.store_error is not None:
        return "Degraded"
    if snapshot.state is None:
        return "Progressing"
    return snapshot.state.phase.value


def traffic_router_label(router: str) -> str:
    """Argo's `traffic_router` value for one router name: `istio` -> `Istio`."""
    return _ROUTER_LABELS.get(router, router[:1].upper() + router[1:])


def traffic_router(snapshot: RolloutSnapshot) -> str:
    """The one `traffic_router` value of a rollout ("" without a router, as Argo writes it)."""
    ranks = {name: rank for rank, name in enumerate(_ROUTER_LABELS)}
    if not snapshot.routers:
        return ""
    return traffic_router_label(max(snapshot.routers, key=lambda name: ranks.get(name, -1)))


def flagger_mesh_provider(routers: Iterable[str]) -> str:
    """`flagger_info{mesh_provider}`: the routers in use, as Flagger's --mesh-provider names
    them; `kubernetes` (Flagger's plain-Service provider) when there is none yet."""
    names = sorted({_FLAGGER_PROVIDERS.get(name, name) for name in routers})
    return ",".join(names) or "kubernetes"


def flagger_strategy(strategy: str) -> str:
    """Flagger's `deployment_strategy` label: canary, blue-green (ab-testing has no Argo twin)."""
    return "blue-green" if strategy == "blueGreen" else strategy


# Argo's CompletionStatus values (pkg/apis/rollouts/v1alpha1/types.go) for our history records.
COMPLETION_STATUSES = ("Promoted", "FastPromoted", "Aborted", "Superseded", "RolledBack", "FastRolledBack")


def completion_status(record: RevisionRecord, earlier_stables: Iterable[str]) -> str:
    """How a finished rollout ended, in Argo's words: `promote-full` is FastPromoted; going back
    to the stable mid-rollout is FastRolledBack (Argo skips the steps then); a promotion to a
    revision that was the stable before is RolledBack."""
    if record.outcome == "Promoted":
        if record.full_promotion:
            return "FastPromoted"
        return "RolledBack" if record.revision in set(earlier_stables) else "Promoted"
    if record.outcome == "Undone":
        return "FastRolledBack"
    return record.outcome  # Aborted, Superseded


def provider_type(metric: Metric) -> str:
    if metric.provider is None:
        return UNKNOWN_PROVIDER
    kind = metric.provider.kind
    return _PROVIDER_TYPES.get(kind, kind[:1].upper() + kind[1:])


@dataclass(frozen=True, slots=True)
class StepPosition:
    current: int  # 1-based; 0 after an abort
    total: int
    total_known: bool = True  # False: no valid spec to count the steps of (`3/?`)

    def __str__(self) -> str:
        return f"{self.current}/{self.total if self.total_known else '?'}"


def step_position(snapshot: RolloutSnapshot) -> StepPosition:
    state = snapshot.state
    if snapshot.spec is None:
        # No valid spec to count (the CLI reading a Deployment whose annotations turned invalid
        # mid-rollout): the step the state holds, out of an unknown number.
        if state is not None and state.in_rollout and state.phase != RolloutPhase.DEGRADED:
            return StepPosition(state.step_index + 1, 0, total_known=False)
        return StepPosition(0, 0)
    total = snapshot.spec.step_count
    if state is None:
        return StepPosition(0, total)
    return StepPosition(_current_step(state, total), total)


def _current_step(state: RolloutState, total: int) -> int:
    if state.phase == RolloutPhase.DEGRADED or state.stage == Stage.INITIALIZING:
        return 0
    if state.in_rollout:
        return min(state.step_index + 1, total)
    return total


def current_step_index(snapshot: RolloutSnapshot) -> int | None:
    """The 0-based index of the step being run, None when no rollout is stepping."""
    state = snapshot.state
    if state is None or snapshot.spec is None or state.stage != Stage.STEPPING:
        return None
    if state.step_index >= snapshot.spec.step_count:
        return None
    return state.step_index


def on_newest_revision(state: RolloutState) -> bool:
    """No rollout under way and not aborted: the stable is the newest revision (promoted, never
    rolled out, or back on the stable), so it is what Argo's weights count as serving 100%."""
    return state.phase == RolloutPhase.HEALTHY and not state.in_rollout


def set_weight(snapshot: RolloutSnapshot) -> int:
    """Argo's SetWeight: the weight of the last setWeight step reached; 100 once promoted (or on
    the stable with nothing to roll out), 0 after an abort."""
    state = snapshot.state
    if state is None:
        return 0
    if on_newest_revision(state):
        return 100
    if state.phase == RolloutPhase.DEGRADED or not state.in_rollout or snapshot.spec is None:
        return 0 if state.phase == RolloutPhase.DEGRADED else state.desired_weight
    reached = snapshot.spec.steps[: state.step_index + 1]
    weights = [step.weight for step in reached if isinstance(step, SetWeight)]
    return weights[-1] if weights else 0


def desired_weight(snapshot: RolloutSnapshot) -> int:
    """The canary weight the engine asks the routers for (0 once promoted: the canary destination
    is empty, the new stable serves everything)."""
    return snapshot.state.desired_weight if snapshot.state is not None else 0


def applied_weight(snapshot: RolloutSnapshot) -> int | None:
    """What the data planes report when they all agree; None when unknown or split."""
    weights = {a.canary_weight for a in snapshot.applied.values() if a.canary_weight is not None}
    return weights.pop() if len(weights) == 1 else None


def actual_weight(snapshot: RolloutSnapshot) -> int:
    """The canary destination's share: the applied weight when known, else the one asked for."""
    applied = applied_weight(snapshot)
    return applied if applied is not None else desired_weight(snapshot)


def revision_weight(snapshot: RolloutSnapshot, canary_weight: int | None = None) -> int:
    """The share of the newest revision (Argo's ActualWeight, and what our weight metrics plot):
    the canary's share during a rollout, 100 once it is promoted (the stable is that revision
    now), 0 after an abort. A promotion and a rollback end at 100 and 0, never both at 0."""
    canary = actual_weight(snapshot) if canary_weight is None else canary_weight
    state = snapshot.state
    if state is not None and on_newest_revision(state):
        return 100 - canary  # what the stable destination serves: all of it, once settled
    return canary


def describe_step(step: Step) -> str:
    """One short line per step, in the words of the YAML a user wrote."""
    match step:
        case SetWeight(weight=weight):
            return f"setWeight: {weight}"
        case Pause(duration=None):
            return "pause: {} (until promoted)"
        case Pause(duration=duration):
            return f"pause: {{duration: {_seconds(duration or 0.0)}}}"
        case StepAnalysis(analysis=analysis):
            names = ", ".join(t.template_name for t in analysis.templates)
            return f"analysis: {names}"
        case SetHeaderRoute(name=name, match=match) if match:
            rules = ", ".join(f"{m.header_name} {m.value.kind} {m.value.value!r}" for m in match)
            return f"setHeaderRoute: {name} ({rules})"
        case SetHeaderRoute(name=name):
            return f"setHeaderRoute: {name} (removed)"
        case SetMirrorRoute(name=name, percentage=percentage, match=match) if match:
            share = f", {percentage}%" if percentage is not None else ""
            return f"setMirrorRoute: {name}{share}"
        case SetMirrorRoute(name=name):
            return f"setMirrorRoute: {name} (removed)"
        case SetCanaryScale(scale=scale):
            if scale.replicas is not None:
                return f"setCanaryScale: {scale.replicas} replicas"
            if scale.match_traffic_weight:
                return "setCanaryScale: matchTrafficWeight"
            return f"setCanaryScale: {scale.weight}%"
    return type(step).__name__  # pragma: no cover - every step kind is matched above


_STEP_KEYS = {kind: key for key, kind in STEP_KINDS.items()}


def step_kind(step: Step) -> str:
    """The YAML key of the step: setWeight, pause, analysis, ..."""
    return _STEP_KEYS[type(step)]


def _seconds(value: float) -> str:
    whole = int(value)
    if whole == value and whole % 3600 == 0 and whole:
        return f"{whole // 3600}h"
    if whole == value and whole % 60 == 0 and whole:
        return f"{whole // 60}m"
    return f"{value:g}s"


def numeric_value(value: object) -> float | None:
    """A measurement's value as one number (`result[0]` for a vector, the evidence against the
    canary for a sequential judge's result); None if it has none."""
    judged = judge_view(value)
    if judged is not None:
        return numeric_value(judged["evidence"])
    if isinstance(value, list | tuple):
        return numeric_value(value[0]) if value else None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def judge_view(value: object) -> dict[str, Any] | None:
    """A sequential judge's result (meshshift.analysis.judge.result_value), or None for any other value."""
    if (
        not isinstance(value, Mapping)
        or "verdict" not in value
        or not isinstance(value.get("evidence"), Mapping)
    ):
        return None

    def side(raw: object) -> dict[str, Any]:
        data = raw if isinstance(raw, Mapping) else {}
        bad = next((key for key in ("errors", "slow") if key in data), "errors")
        return {
            "requests": data.get("requests"),
            "bad": data.get(bad),
            "badName": bad,
            "rate": data.get("rate"),
        }

    evidence = value["evidence"]
    return {
        "verdict": value.get("verdict"),
        "canary": side(value.get("canary")),
        "stable": side(value.get("stable")),
        "evidence": evidence.get("worse"),
        "evidenceNotWorse": evidence.get("notWorse"),
        "threshold": evidence.get("threshold"),
        "pValue": value.get("pValue"),
        "alpha": value.get("alpha"),
        "mode": value.get("mode"),
        "elapsed": value.get("elapsed"),
        "latencyThreshold": value.get("threshold"),
        "quantile": value.get("quantile"),
    }


MEASUREMENTS_SHOWN = 10  # the newest measurements a failure report carries


def shown_value(value: object) -> str:
    """A measurement's value in a few characters: `0.71`, `[0.71, 0.9]`, a judge's verdict."""
    judged = judge_view(value)
    if judged is not None:
        return f"{judged['verdict']} (evidence {judged['evidence']})"
    number = numeric_value(value) if not isinstance(value, list | tuple) or len(value) == 1 else None
    if number is not None and not isinstance(value, str):
        return f"{number:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown_value(v) for v in value[:5]) + (", ..." if len(value) > 5 else "") + "]"
    text = "none" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def metric_conditions(metric: Metric) -> str:
    """`successCondition: result[0] >= 0.95` (and/or the failureCondition), or `no condition`."""
    parts = [
        f"{label}: {condition}"
        for label, condition in (
            ("successCondition", metric.success_condition),
            ("failureCondition", metric.failure_condition),
        )
        if condition
    ]
    return "; ".join(parts) or "no condition"


def metric_failure(metric: Metric, result: MetricResult, mask: SecretMask | None = None) -> dict[str, Any]:
    """Why a metric ended as it did, in the words of its template: the value measured last, the
    condition it was held to, and the limit its counts crossed (`failed (2) > failureLimit (0)`)."""
    mask = mask or SecretMask(set(), [])
    completed = [m for m in result.measurements if m.phase.completed]
    last = completed[-1] if completed else None
    value = shown_value(last.value) if last is not None and last.value is not None else None
    problem = last.message if last is not None and last.phase == AnalysisPhase.ERROR else ""
    violated = limit_violation(metric, result.counts)
    limit = violated[1] if violated is not None else result.message
    summary = f"{metric.name} = {value}" if value is not None else f"{metric.name}: no value"
    summary += f", {metric_conditions(metric)}"
    if limit:
        summary += f"; {limit}"
    if problem:
        summary += f" ({problem})"
    return {
        "metric": metric.name,
        "phase": result.phase.value,
        "value": mask.text(value),
        "condition": metric_conditions(metric),
        "limit": limit,
        "error": mask.text(problem) or None,
        "message": mask.text(result.message) or "",
        "summary": mask.text(summary) or summary,
        "measurements": [
            {
                "phase": m.phase.value,
                "value": mask.text(shown_value(m.value)) if m.value is not None else None,
                "at": m.finished_at,
                "message": mask.text(m.message) or "",
            }
            for m in result.measurements[-MEASUREMENTS_SHOWN:]
        ],
    }


def failed_metrics(run: AnalysisRun, mask: SecretMask | None = None) -> list[dict[str, Any]]:
    """metric_failure for each metric of `run` that stops the rollout or pauses it for a human
    (Failed, Error, Inconclusive); dry-run metrics decide nothing and are left out."""
    results = {r.name: r for r in run.results}
    return [
        metric_failure(metric, result, mask)
        for metric in run.metrics
        if (result := results.get(metric.name)) is not None
        and not result.dry_run
        and (result.phase.blocks_rollout or result.phase == AnalysisPhase.INCONCLUSIVE)
    ]


class SecretMask:
    """Hides the values of args read from Secrets, wherever a resolved query or message repeats them."""

    MASK = "<secret>"

    def __init__(self, names: set[str], values: list[str]) -> None:
        self.names = names
        self.values = sorted((v for v in values if v), key=len, reverse=True)

    @classmethod
    def for_run(cls, record: AnalysisRunRecord | None, run: AnalysisRun | None) -> SecretMask:
        refs = record.analysis.args if record is not None else ()
        names = {a.name for a in refs if a.value_from is not None and a.value_from.secret_name is not None}
        values = [run.args[n] for n in names if run is not None and n in run.args]
        return cls(names, values)

    def args(self, args: Mapping[str, str]) -> dict[str, str]:
        return {k: self.MASK if k in self.names else v for k, v in args.items()}

    def text(self, text: str | None) -> str | None:
        if text:
            for value in self.values:
                text = text.replace(value, self.MASK)
        return text


# --- blue-green ------------------------------------------------------------------------------


def active_revision(state: RolloutState) -> str:
    """The revision user traffic reaches: the new one once switched to, else the stable."""
    if state.switched and state.canary_revision is not None:
        return state.canary_revision
    return state.stable_revision


def preview_revision(state: RolloutState) -> str:
    """The revision the preview reaches: the new one while its pods run, else the stable."""
    if state.canary_revision is not None and state.canary_scale != CanaryScale.zero():
        return state.canary_revision
    return state.stable_revision


def revision_roles(state: RolloutState, revision: str | None) -> list[str]:
    """Argo's plugin tags for a revision of a blue-green rollout: `stable`, then `active` or else
    `preview` (an active revision is not also tagged preview, as in its get_rollout.go)."""
    roles = ["stable"] if revision == state.stable_revision else []
    if revision == active_revision(state):
        roles.append("active")
    elif revision == preview_revision(state):
        roles.append("preview")
    return roles


@dataclass(frozen=True, slots=True)
class BlueGreenPhase:
    """One phase of a blue-green rollout, as the dashboard lists them."""

    name: str  # preview, prePromotionAnalysis, pause, switch, postPromotionAnalysis, promotion
    description: str
    status: str  # completed, current, failed, pending, skipped
    run: str | None = None  # the analysis run of an analysis phase


def blue_green_phases(snapshot: RolloutSnapshot) -> list[BlueGreenPhase]:
    """The phases of the rollout's blue-green strategy, and where the rollout is among them."""
    spec, state = snapshot.spec, snapshot.state
    if spec is None or spec.blue_green is None:
        return []
    blue_green = spec.blue_green
    phases = _phase_names(blue_green)
    runs = {
        kind: _latest_run(state, kind) for kind in (AnalysisKind.PRE_PROMOTION, AnalysisKind.POST_PROMOTION)
    }
    current, failed = _position(snapshot, phases, runs)
    skipped = state is not None and state.full_promotion
    result = []
    for index, (name, description) in enumerate(phases):
        record = runs.get(_KINDS[name]) if name in _KINDS else None
        if failed is not None and index == failed:
            status = "failed"
        elif current is None or index > current:
            status = "pending"
        elif index == current:
            status = "current"
        elif skipped and name in _SKIPPED_BY_PROMOTE_FULL and (record is None or record.stop_requested):
            status = "skipped"
        else:
            status = "completed"
        result.append(BlueGreenPhase(name, description, status, record.name if record else None))
    return result


_SKIPPED_BY_PROMOTE_FULL = ("prePromotionAnalysis", "pause", "postPromotionAnalysis")
_KINDS = {
    "prePromotionAnalysis": AnalysisKind.PRE_PROMOTION,
    "postPromotionAnalysis": AnalysisKind.POST_PROMOTION,
}


def _phase_names(blue_green: BlueGreen) -> list[tuple[str, str]]:
    replicas = blue_green.preview_replica_count
    phases = [("preview", f"preview up ({replicas} replicas)" if replicas else "preview up")]
    if blue_green.pre_promotion_analysis is not None:
        names = ", ".join(t.template_name for t in blue_green.pre_promotion_analysis.templates)
        phases.append(("prePromotionAnalysis", f"pre-promotion analysis: {names}"))
    if not blue_green.auto_promotion_enabled:
        phases.append(("pause", "pause until promoted"))
    elif blue_green.auto_promotion_seconds is not None:
        phases.append(("pause", f"pause: {_seconds(blue_green.auto_promotion_seconds)}, then switch"))
    phases.append(("switch", "switch user traffic to the new revision"))
    if blue_green.post_promotion_analysis is not None:
        names = ", ".join(t.template_name for t in blue_green.post_promotion_analysis.templates)
        phases.append(("postPromotionAnalysis", f"post-promotion analysis: {names}"))
    phases.append(
        ("promotion", f"the new revision is the stable (after {_seconds(blue_green.scale_down_delay)})")
    )
    return phases


def _latest_run(state: RolloutState | None, kind: AnalysisKind) -> AnalysisRunRecord | None:
    if state is None:
        return None
    found = [r for r in state.analysis_runs if r.kind == kind]
    return found[-1] if found else None


def _position(
    snapshot: RolloutSnapshot,
    phases: list[tuple[str, str]],
    runs: Mapping[AnalysisKind, AnalysisRunRecord | None],
) -> tuple[int | None, int | None]:
    """(the index of the current phase, the index of the failed one), None where there is none."""
    state = snapshot.state
    names = [name for name, _ in phases]
    if state is None or (state.canary_revision is None and not state.in_rollout):
        # At rest: the last rollout promoted (all completed), or none yet.
        last = state.history[-1] if state is not None and state.history else None
        return (len(names), None) if last is not None and last.outcome == "Promoted" else (None, None)
    pre, post = runs[AnalysisKind.PRE_PROMOTION], runs[AnalysisKind.POST_PROMOTION]
    if state.phase == RolloutPhase.DEGRADED:
        if post is not None and post.phase != AnalysisPhase.SUCCESSFUL:
            return names.index("postPromotionAnalysis"), names.index("postPromotionAnalysis")
        reached = _reached(state, names, pre)
        return reached, reached
    stage = state.stage
    if stage == Stage.PREVIEW:
        return _reached(state, names, pre), None
    if stage == Stage.SWITCHING:
        return names.index("switch"), None
    if stage == Stage.POST_PROMOTION and "postPromotionAnalysis" in names:
        done = post is not None and post.phase == AnalysisPhase.SUCCESSFUL
        if not done and not state.full_promotion:
            return names.index("postPromotionAnalysis"), None
    return names.index("promotion"), None


def _reached(state: RolloutState, names: list[str], pre: AnalysisRunRecord | None) -> int:
    """The phase a rollout still in (or aborted in) the preview is at."""
    if state.preview_ready_at is None:
        return names.index("preview")
    pending = pre is None or pre.phase != AnalysisPhase.SUCCESSFUL
    if "prePromotionAnalysis" in names and pending and not state.full_promotion:
        return names.index("prePromotionAnalysis")
    if "pause" in names and state.stage == Stage.PREVIEW:
        return names.index("pause")
    return names.index("switch")
