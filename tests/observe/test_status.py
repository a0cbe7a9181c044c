"""The mapping from our engine's state to what Argo's metrics and CLI show."""

from __future__ import annotations

import pytest

from meshshift.engine.state import PauseReason, RevisionRecord, RolloutPhase, RolloutState, Stage
from meshshift.observe.status import (
    COMPLETION_STATUSES,
    ArgoPhase,
    argo_phase,
    completion_status,
    describe_step,
    flagger_mesh_provider,
    flagger_strategy,
    numeric_value,
    set_weight,
    step_position,
    traffic_router,
)
from meshshift.ports import AppliedRoutes
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.spec.model import (
    AnalysisRef,
    CanaryScale,
    HeaderMatch,
    Pause,
    RolloutSpec,
    SetCanaryScale,
    SetHeaderRoute,
    SetWeight,
    StepAnalysis,
    StringMatch,
    TemplateRef,
)

SPEC = RolloutSpec(steps=(SetWeight(20), Pause(120), SetWeight(50), Pause()))
STEPPING = RolloutState(
    stable_revision="v1",
    canary_revision="v2",
    phase=RolloutPhase.PROGRESSING,
    stage=Stage.STEPPING,
    step_index=2,
    desired_weight=20,
    attempt=1,
)


def snapshot(
    state: RolloutState | None = STEPPING,
    *,
    spec: RolloutSpec | None = SPEC,
    spec_error: str | None = None,
    last_error: str | None = None,
    routers: tuple[str, ...] = ("istio",),
    applied: dict[str, AppliedRoutes] | None = None,
) -> RolloutSnapshot:
    return RolloutSnapshot(
        key=RolloutKey("default", "myapp"),
        spec=spec,
        spec_error=spec_error,
        state=state,
        analysis_runs={},
        workloads=None,
        applied=applied or {},
        routers=routers,
        updated_at=0.0,
        last_error=last_error,
    )


def with_state(**changes: object) -> RolloutState:
    import dataclasses

    return dataclasses.replace(STEPPING, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snap", "expected"),
    [
        (snapshot(spec=None, spec_error="steps[0]: bad"), ArgoPhase.INVALID_SPEC),
        (snapshot(spec_error="steps[0]: bad"), ArgoPhase.INVALID_SPEC),
        (snapshot(last_error="RuntimeError: envoy is down"), ArgoPhase.ERROR),
        (snapshot(None), ArgoPhase.PROGRESSING),
        (snapshot(), ArgoPhase.PROGRESSING),
        (
            snapshot(with_state(phase=RolloutPhase.PAUSED, pause_reason=PauseReason.PAUSE_STEP)),
            ArgoPhase.PAUSED,
        ),
        (snapshot(with_state(phase=RolloutPhase.PAUSED, pause_reason=PauseReason.FROZEN)), ArgoPhase.PAUSED),
        (
            snapshot(with_state(phase=RolloutPhase.DEGRADED, abort_reason="ProgressDeadlineExceeded")),
            ArgoPhase.TIMEOUT,
        ),
        (
            snapshot(with_state(phase=RolloutPhase.DEGRADED, abort_reason="AnalysisRunFailed")),
            ArgoPhase.ABORT,
        ),
        (snapshot(with_state(phase=RolloutPhase.DEGRADED, abort_reason="AbortedByUser")), ArgoPhase.ABORT),
        (snapshot(RolloutState(stable_revision="v1")), ArgoPhase.COMPLETED),
    ],
)
def test_argo_phase(snap: RolloutSnapshot, expected: ArgoPhase) -> None:
    assert argo_phase(snap) == expected


def test_steps_are_shown_as_argo_shows_them() -> None:
    assert str(step_position(snapshot())) == "3/4"
    assert str(step_position(snapshot(with_state(step_index=4, stage=Stage.PROMOTING)))) == "4/4"
    aborted = with_state(phase=RolloutPhase.DEGRADED, stage=Stage.IDLE, abort_reason="AbortedByUser")
    assert str(step_position(snapshot(aborted))) == "0/4"
    healthy = RolloutState(stable_revision="v2", step_index=4)
    assert str(step_position(snapshot(healthy))) == "4/4"
    assert str(step_position(snapshot(None))) == "0/4"


def test_set_weight_is_the_last_set_weight_reached() -> None:
    assert set_weight(snapshot()) == 50  # step 3 is setWeight 50
    assert set_weight(snapshot(with_state(step_index=1))) == 20
    assert set_weight(snapshot(with_state(step_index=0))) == 20
    history = (RevisionRecord("v1", "Promoted", 0.0, 10.0),)
    assert set_weight(snapshot(RolloutState(stable_revision="v1", history=history))) == 100
    aborted = with_state(phase=RolloutPhase.DEGRADED, stage=Stage.IDLE)
    assert set_weight(snapshot(aborted)) == 0


def test_traffic_router_is_one_value_in_argo_spelling() -> None:
    # Argo's getStrategyAndTrafficRouter lets Nginx override Istio: both managed reads Nginx.
    assert traffic_router(snapshot(routers=("istio", "nginx"))) == "Nginx"
    assert traffic_router(snapshot(routers=("nginx", "istio"))) == "Nginx"
    assert traffic_router(snapshot(routers=("istio",))) == "Istio"
    assert traffic_router(snapshot(routers=("envoy",))) == "Envoy"
    assert traffic_router(snapshot(routers=("traefik",))) == "Traefik"
    assert traffic_router(snapshot(routers=("gateway-api",))) == "GatewayAPI"
    assert traffic_router(snapshot(routers=("traefik", "istio"))) == "Istio"  # Argo's own names first
    assert traffic_router(snapshot(routers=("nginx-conf",))) == "Nginx-conf"  # any other router: its name
    assert traffic_router(snapshot(routers=())) == ""  # Argo's value without traffic routing


def test_completion_status_uses_argos_words() -> None:
    def record(outcome: str, revision: str = "v3", *, full: bool = False) -> RevisionRecord:
        return RevisionRecord(revision, outcome, 0.0, 10.0, full_promotion=full)

    assert completion_status(record("Promoted"), {"v1", "v2"}) == "Promoted"
    assert completion_status(record("Promoted", full=True), set()) == "FastPromoted"
    assert completion_status(record("Promoted", "v1"), {"v1", "v2"}) == "RolledBack"
    assert completion_status(record("Undone"), set()) == "FastRolledBack"
    assert completion_status(record("Aborted"), set()) == "Aborted"
    assert completion_status(record("Superseded"), set()) == "Superseded"
    assert set(COMPLETION_STATUSES) == {
        "Promoted",
        "FastPromoted",
        "Aborted",
        "Superseded",
        "RolledBack",
        "FastRolledBack",
    }


def test_flagger_spelling_of_providers_and_strategies() -> None:
    assert flagger_mesh_provider(["nginx", "istio", "istio"]) == "istio,nginx"
    assert flagger_mesh_provider(["gateway-api"]) == "gatewayapi:v1"
    assert flagger_mesh_provider([]) == "kubernetes"
    assert flagger_strategy("canary") == "canary"
    assert flagger_strategy("blueGreen") == "blue-green"


def test_steps_are_described_as_written() -> None:
    assert describe_step(SetWeight(20)) == "setWeight: 20"
    assert describe_step(Pause()) == "pause: {} (until promoted)"
    assert describe_step(Pause(120)) == "pause: {duration: 2m}"
    assert describe_step(Pause(90)) == "pause: {duration: 90s}"
    assert (
        describe_step(StepAnalysis(AnalysisRef((TemplateRef("success-rate"),)))) == "analysis: success-rate"
    )
    match = (HeaderMatch("X-Canary", StringMatch("exact", "true")),)
    assert describe_step(SetHeaderRoute("qa", match)) == "setHeaderRoute: qa (X-Canary exact 'true')"
    assert describe_step(SetHeaderRoute("qa")) == "setHeaderRoute: qa (removed)"
    assert describe_step(SetCanaryScale(CanaryScale(replicas=2))) == "setCanaryScale: 2 replicas"


@pytest.mark.parametrize(
    ("value", "expected"),
    [([0.97, 0.5], 0.97), (0.5, 0.5), (3, 3.0), ("0.25", 0.25), ("healthy", None), ([], None), ({}, None)],
)
def test_numeric_value(value: object, expected: float | None) -> None:
    assert numeric_value(value) == expected
