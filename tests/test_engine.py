"""The step machine, driven through a simulated world (tests/engine_world.py)."""

from __future__ import annotations

import json

import pytest

from meshshift.engine.actions import (
    AnalysisKind,
    ApplyHeaderRoute,
    ApplyMirrorRoute,
    PromoteCanary,
    RemoveHeaderRoute,
    RemoveManagedRoutes,
    RemoveMirrorRoute,
    ScaleCanary,
    SetCanaryWeight,
    StartAnalysis,
    StopAnalysis,
    WaitUntil,
)
from meshshift.engine.machine import Command, CommandKind, Observation, reconcile, resume_actions
from meshshift.engine.state import PauseReason, RolloutPhase, RolloutState, Stage
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    BackgroundAnalysis,
    CanaryScale,
    FailurePolicy,
    HeaderMatch,
    MirrorMatch,
    Pause,
    RolloutSpec,
    SetCanaryScale,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    Step,
    StepAnalysis,
    StringMatch,
    TemplateRef,
)
from tests.engine_world import World, always

ANALYSIS = AnalysisRef(templates=(TemplateRef("success-rate"),))
QA_MATCH = (HeaderMatch("X-Canary", StringMatch("exact", "true")),)


def spec_of(*steps: Step, **options: object) -> RolloutSpec:
    return RolloutSpec(steps=tuple(steps), **options)  # type: ignore[arg-type]


def tutorial_exercise() -> RolloutSpec:
    """The seed's exercise: 10 -> 25 -> 50 -> 100, analysis each step, approval before 100."""
    return spec_of(
        SetWeight(10),
        Pause(120),
        StepAnalysis(ANALYSIS),
        SetWeight(25),
        Pause(120),
        StepAnalysis(ANALYSIS),
        SetWeight(50),
        Pause(120),
        StepAnalysis(ANALYSIS),
        Pause(None),
    )


def start(world: World, revision: str = "v2") -> None:
    """Settle on the stable, forget what that took, then ask for `revision`."""
    world.settle()
    world.weights.clear()
    world.actions.clear()
    world.events.clear()
    world.revision = revision
    world.tick()


# --- first sight ---------------------------------------------------------------------------


def test_first_sight_sets_up_the_stable_then_routes_everything_to_it() -> None:
    world = World(spec_of(SetWeight(50)), stable_revision=None, instant_promotion=False)
    world.tick()
    assert world.promotions == ["v1"]
    assert world.current.stage == Stage.INITIALIZING
    world.tick(5)
    assert world.weights == []  # nothing routed before the stable is ready
    world.promote_now()
    world.tick(5)
    assert world.weights == [0]
    assert world.canary_scale == CanaryScale.zero()
    assert world.phase() == RolloutPhase.HEALTHY


def test_first_sight_with_an_existing_stable_takes_it_as_it_is() -> None:
    world = World(spec_of(SetWeight(50)))
    world.tick()
    assert world.promotions == []
    assert world.weights == [0]
    assert world.phase() == RolloutPhase.HEALTHY


def test_a_stable_that_never_becomes_ready_is_reported_once() -> None:
    world = World(spec_of(SetWeight(50), progress_deadline=60), stable_revision=None, instant_promotion=False)
    world.tick()
    world.tick(61)
    world.tick(10)
    assert world.event_reasons().count("ProgressDeadlineExceeded") == 1
    assert world.phase() == RolloutPhase.DEGRADED
    world.promote_now()
    world.tick()
    assert world.phase() == RolloutPhase.HEALTHY


# --- every step kind -----------------------------------------------------------------------


def test_every_step_kind_in_one_rollout() -> None:
    mirror = (MirrorMatch(method=StringMatch("exact", "GET")),)
    world = World(
        spec_of(
            SetCanaryScale(CanaryScale(weight=25)),
            SetWeight(10),
            SetHeaderRoute("qa", QA_MATCH),
            SetMirrorRoute("shadow", mirror, 50),
            Pause(30),
            StepAnalysis(ANALYSIS),
            SetMirrorRoute("shadow"),
            SetWeight(40),
            SetHeaderRoute("qa"),
            Pause(None),
        )
    )
    start(world)
    state = world.current
    assert state is not None
    assert world.canary_scale == CanaryScale(weight=25)
    assert world.weight == 10
    assert world.header_routes == {"qa": QA_MATCH}
    assert world.mirror_routes == {"shadow"}
    assert state.phase == RolloutPhase.PAUSED and state.step_index == 4
    assert world.wake_at == world.now + 30

    world.tick(29.9)
    assert world.current.step_index == 4  # still paused
    world.tick(0.1)
    # The analysis started, concluded Successful on the next tick, and the steps went on.
    assert [s.kind for s in world.started] == [AnalysisKind.STEP]
    world.tick()
    assert world.mirror_routes == set()
    assert world.weight == 40
    assert world.header_routes == {}
    assert world.phase() == RolloutPhase.PAUSED
    assert world.current.pause_until is None  # waits for a promote

    world.command(CommandKind.PROMOTE)
    assert world.promotions == ["v2"]
    assert world.weight == 40  # until the stable runs v2
    world.tick()
    assert world.stable_revision == "v2"
    assert world.weight == 0
    assert world.canary_scale == CanaryScale.zero()
    assert world.phase() == RolloutPhase.HEALTHY
    assert world.current.history[-1].outcome == "Promoted"
    assert world.weights == [10, 40, 0]


def test_the_tutorial_exercise_schedule_needs_approval_before_100() -> None:
    world = World(tutorial_exercise())
    start(world)
    world.settle()
    assert world.weights == [10, 25, 50]
    assert len(world.started) == 3
    assert world.phase() == RolloutPhase.PAUSED
    assert world.promotions == []
    world.command(CommandKind.PROMOTE)
    assert world.promotions == ["v2"]
    world.tick()
    assert world.phase() == RolloutPhase.HEALTHY


def test_timed_pause_accepts_zero_and_wakes_at_its_end() -> None:
    world = World(spec_of(SetWeight(10), Pause(0), SetWeight(20), Pause(90), SetWeight(30)))
    start(world)
    assert world.weight == 20
    pause_started = world.now
    assert world.wake_at == pause_started + 90
    world.tick(45)
    assert world.weight == 20
    world.now = pause_started + 90
    world.settle()
    assert world.weights == [10, 20, 30, 0]
    assert world.phase() == RolloutPhase.HEALTHY


def test_set_weight_waits_for_the_canary_to_be_ready() -> None:
    world = World(spec_of(SetWeight(10), SetWeight(20)), canary_ready=False)
    start(world)
    assert world.weights == []
    assert world.state is not None and "ready" in world.current.message
    world.canary_ready = True
    world.settle()
    assert world.weights == [10, 20, 0]


def test_match_traffic_weight_scales_the_canary_with_each_weight() -> None:
    world = World(
        spec_of(SetCanaryScale(CanaryScale(match_traffic_weight=True)), SetWeight(10), SetWeight(30))
    )
    start(world)
    scales = [a for a in world.actions if isinstance(a, ScaleCanary)]
    assert [(s.scale.match_traffic_weight, s.traffic_weight) for s in scales[1:4]] == [
        (True, 0),
        (True, 10),
        (True, 30),
    ]
    assert CanaryScale(match_traffic_weight=True).replicas_for(10, 30) == 3


# --- commands ------------------------------------------------------------------------------


def test_promote_skips_a_timed_pause() -> None:
    world = World(spec_of(SetWeight(10), Pause(3600), SetWeight(50)))
    start(world)
    decision = world.command(CommandKind.PROMOTE)
    assert decision.outcomes[0].applied
    world.settle()
    assert world.weights == [10, 50, 0]


def test_promote_never_skips_an_analysis() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS), SetWeight(50)), verdict=None)
    start(world)
    decision = world.command(CommandKind.PROMOTE)
    assert not decision.outcomes[0].applied
    assert "promote-full" in decision.outcomes[0].message
    assert world.weight == 10
    assert "CommandIgnored" in world.event_reasons()


def test_promote_when_nothing_is_rolling_out_is_ignored() -> None:
    world = World(spec_of(SetWeight(10)))
    world.settle()
    decision = world.command(CommandKind.PROMOTE)
    assert not decision.outcomes[0].applied
    assert "Healthy" in decision.outcomes[0].message


def test_promote_full_skips_steps_and_analysis() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS), SetWeight(50), Pause(None)), verdict=None)
    start(world)
    run_name = world.started[0].run_name
    world.command(CommandKind.PROMOTE_FULL)
    assert run_name in world.stopped
    assert world.promotions == ["v2"]
    world.tick()
    assert world.weights == [10, 0]
    assert world.current.history[-1].full_promotion


def test_abort_returns_traffic_and_scales_the_canary_down_after_the_delay() -> None:
    world = World(
        spec_of(
            SetWeight(10),
            SetHeaderRoute("qa", QA_MATCH),
            SetWeight(30),
            Pause(None),
            abort_scale_down_delay=30,
        )
    )
    start(world)
    assert world.weight == 30 and world.header_routes
    aborted_at = world.now
    world.command(CommandKind.ABORT)
    assert world.weight == 0
    assert world.header_routes == {}
    assert world.rollbacks[-1].reason == "AbortedByUser"
    assert world.phase() == RolloutPhase.DEGRADED
    assert world.canary_scale == CanaryScale.full()  # not yet
    assert world.wake_at == aborted_at + 30
    world.now = aborted_at + 30
    world.tick()
    assert world.canary_scale == CanaryScale.zero()


def test_aborted_rollout_stays_aborted_until_retry() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS), SetWeight(50)))
    world.verdict = always(AnalysisPhase.FAILED)
    start(world)
    world.settle()
    assert world.phase() == RolloutPhase.DEGRADED
    first_run = world.started[0].run_name
    world.tick(100)
    assert world.phase() == RolloutPhase.DEGRADED
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    decision = world.command(CommandKind.RETRY)
    assert decision.outcomes[0].applied
    world.settle()
    assert world.started[-1].run_name != first_run
    assert world.current.attempt == 2
    assert world.stable_revision == "v2"
    assert world.weights == [10, 0, 10, 50, 0]


def test_a_command_is_acted_on_once() -> None:
    world = World(spec_of(SetWeight(10), Pause(None), SetWeight(20), Pause(None), SetWeight(30)))
    start(world)
    same = Command(CommandKind.PROMOTE, "the-same-id")
    world.tick(commands=[same])
    world.tick(commands=[same])
    assert world.weights == [10, 20]
    assert world.state is not None and "the-same-id" in world.current.handled_commands


# --- analysis verdicts and failure policies --------------------------------------------------


@pytest.mark.parametrize("verdict", [AnalysisPhase.FAILED, AnalysisPhase.ERROR])
def test_failed_or_errored_analysis_rolls_back(verdict: AnalysisPhase) -> None:
    world = World(
        spec_of(
            SetWeight(10),
            SetHeaderRoute("qa", QA_MATCH),
            SetWeight(20),
            StepAnalysis(ANALYSIS),
            SetWeight(50),
        ),
        verdict=always(verdict),
    )
    start(world)
    world.tick()
    assert world.weight == 0
    assert world.header_routes == {}
    assert world.rollbacks[-1].reason == f"AnalysisRun{verdict.value}"
    assert world.phase() == RolloutPhase.DEGRADED
    assert world.current.history[-1].outcome == "Aborted"
    assert world.promotions == []
    warnings = [e for e in world.events if e.type.value == "Warning"]
    assert any(e.reason == f"AnalysisRun{verdict.value}" for e in warnings)


def test_inconclusive_analysis_pauses_for_a_human() -> None:
    world = World(
        spec_of(SetWeight(10), StepAnalysis(ANALYSIS), SetWeight(50)),
        verdict=always(AnalysisPhase.INCONCLUSIVE),
    )
    start(world)
    world.tick()
    state = world.current
    assert state.phase == RolloutPhase.PAUSED
    assert state.pause_reason == PauseReason.INCONCLUSIVE
    assert world.weight == 10
    world.tick(3600)
    assert world.weight == 10  # it waits for a human, however long

    refused = world.command(CommandKind.PROMOTE)
    assert not refused.outcomes[0].applied
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    retried = world.command(CommandKind.RETRY)
    assert retried.outcomes[0].applied
    assert world.started[-1].run_name.endswith("-retry1")
    world.settle()
    assert world.promotions == ["v2"]


def test_inconclusive_then_abort_rolls_back() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS)), verdict=always(AnalysisPhase.INCONCLUSIVE))
    start(world)
    world.tick()
    world.command(CommandKind.ABORT)
    assert world.weight == 0 and world.rollbacks


def test_gradual_policy_walks_the_weights_down_the_schedule() -> None:
    spec = spec_of(
        SetWeight(10),
        SetWeight(25),
        SetHeaderRoute("qa", QA_MATCH),
        SetWeight(50),
        StepAnalysis(ANALYSIS),
        on_failure=FailurePolicy.GRADUAL,
        gradual_interval=20,
    )
    world = World(spec, verdict=always(AnalysisPhase.FAILED))
    start(world)
    world.tick()
    assert world.weight == 25  # one step down at once
    assert world.header_routes == {}  # QA routes go at once
    assert world.current.stage == Stage.ROLLING_BACK
    world.tick(19)
    assert world.weight == 25
    world.tick(1)
    assert world.weight == 10
    world.tick(20)
    assert world.weight == 0
    assert world.rollbacks and world.phase() == RolloutPhase.DEGRADED
    assert world.weights == [10, 25, 50, 25, 10, 0]


def test_gradual_rollback_can_be_cut_short_by_abort() -> None:
    spec = spec_of(SetWeight(20), SetWeight(60), StepAnalysis(ANALYSIS), on_failure=FailurePolicy.GRADUAL)
    world = World(spec, verdict=always(AnalysisPhase.FAILED))
    start(world)
    world.tick()
    assert world.weight == 20
    world.command(CommandKind.ABORT)
    assert world.weight == 0


def test_freeze_policy_holds_the_weights_for_a_human() -> None:
    spec = spec_of(SetWeight(30), StepAnalysis(ANALYSIS), SetWeight(60), on_failure=FailurePolicy.FREEZE)
    world = World(spec, verdict=always(AnalysisPhase.FAILED))
    start(world)
    world.tick()
    state = world.current
    assert state.pause_reason == PauseReason.FROZEN
    assert world.weight == 30 and not world.rollbacks
    world.tick(7200)
    assert world.weight == 30
    assert not world.command(CommandKind.PROMOTE).outcomes[0].applied
    world.command(CommandKind.PROMOTE_FULL)
    assert world.promotions == ["v2"]
    world.tick()
    assert world.current.history[-1].full_promotion


def test_freeze_then_retry_runs_the_analysis_again() -> None:
    spec = spec_of(SetWeight(30), StepAnalysis(ANALYSIS), SetWeight(60), on_failure=FailurePolicy.FREEZE)
    world = World(spec, verdict=always(AnalysisPhase.ERROR))
    start(world)
    world.tick()
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    world.command(CommandKind.RETRY)
    world.settle()
    assert world.weights == [30, 60, 0]
    assert world.promotions == ["v2"]


# --- revisions -----------------------------------------------------------------------------


def test_a_new_revision_mid_rollout_restarts_at_step_zero_with_fresh_analysis() -> None:
    world = World(
        spec_of(SetWeight(10), SetHeaderRoute("qa", QA_MATCH), StepAnalysis(ANALYSIS), SetWeight(50)),
        verdict=None,
    )
    start(world)
    first_run = world.started[0].run_name
    world.revision = "v3"
    world.tick()
    assert first_run in world.stopped
    assert world.started[-1].run_name.startswith("v3-2-")
    assert world.header_routes == {"qa": QA_MATCH}  # removed, then set again by the new run
    assert world.weights == [10, 0, 10]
    assert world.current.canary_revision == "v3"
    assert world.current.history[-1].outcome == "Superseded"
    world.verdicts[world.started[-1].run_name] = AnalysisPhase.SUCCESSFUL
    world.settle()
    assert world.promotions == ["v3"]


def test_going_back_to_the_stable_revision_cancels_the_rollout() -> None:
    world = World(spec_of(SetWeight(10), Pause(None)))
    start(world)
    world.revision = "v1"
    world.tick()
    assert world.weight == 0
    assert world.canary_scale == CanaryScale.zero()
    assert world.phase() == RolloutPhase.HEALTHY
    assert world.current.history[-1].outcome == "Undone"


def test_a_new_revision_after_an_abort_starts_a_new_rollout() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS)), verdict=always(AnalysisPhase.FAILED))
    start(world)
    world.tick()
    assert world.phase() == RolloutPhase.DEGRADED
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    world.revision = "v3"
    world.settle()
    assert world.promotions == ["v3"]


def test_promotion_waits_for_the_stable_and_defers_newer_revisions() -> None:
    world = World(spec_of(SetWeight(50)), instant_promotion=False)
    start(world)
    assert world.current.stage == Stage.PROMOTING
    assert world.weight == 50
    world.revision = "v3"
    world.tick(1)
    assert world.current.stage == Stage.PROMOTING  # finishes v2 first
    world.promote_now()
    world.tick(1)
    assert world.stable_revision == "v2"
    assert world.current.canary_revision == "v3"  # v3's rollout began in the same tick
    assert world.weights == [50, 0, 50]


# --- deadlines -----------------------------------------------------------------------------


def test_an_exceeded_progress_deadline_aborts() -> None:
    world = World(spec_of(SetWeight(10), progress_deadline=600), canary_ready=False)
    start(world)
    assert world.wake_at == world.now + 600
    world.tick(599)
    assert world.phase() == RolloutPhase.PROGRESSING
    world.tick(1)
    assert world.rollbacks[-1].reason == "ProgressDeadlineExceeded"
    assert world.phase() == RolloutPhase.DEGRADED


def test_an_exceeded_progress_deadline_freezes_under_freeze() -> None:
    spec = spec_of(SetWeight(10), SetWeight(20), progress_deadline=60, on_failure=FailurePolicy.FREEZE)
    world = World(spec, canary_ready=False)
    start(world)
    world.tick(60)
    assert world.current.pause_reason == PauseReason.FROZEN
    assert world.rollbacks == []
    world.canary_ready = True
    world.tick(3600)
    assert world.weights == []  # frozen: waits for a human even once the canary is ready
    world.command(CommandKind.RETRY)
    world.settle()
    assert world.weights == [10, 20, 0]
    assert world.promotions == ["v2"]


# --- background analysis -------------------------------------------------------------------


def background_spec(starting_step: int = 0, **options: object) -> RolloutSpec:
    return spec_of(
        SetWeight(10),
        Pause(60),
        SetWeight(50),
        Pause(60),
        analysis=BackgroundAnalysis(ANALYSIS, starting_step=starting_step),
        **options,
    )


def test_background_analysis_starts_at_its_starting_step_and_is_stopped_at_the_end() -> None:
    world = World(background_spec(starting_step=2), verdict=None)
    start(world)
    assert world.started == []
    world.tick(60)
    assert [s.kind for s in world.started] == [AnalysisKind.BACKGROUND]
    name = world.started[0].run_name
    world.tick(60)
    assert name in world.stopped
    world.tick()
    assert world.promotions == ["v2"]  # verdict_on_stop is Successful


def test_background_analysis_failure_aborts_mid_rollout() -> None:
    world = World(background_spec(), verdict=None)
    start(world)
    world.verdicts[world.started[0].run_name] = AnalysisPhase.FAILED
    world.tick(1)
    assert world.rollbacks and world.weight == 0


def test_background_analysis_inconclusive_at_the_end_pauses() -> None:
    world = World(background_spec(), verdict=None, verdict_on_stop=AnalysisPhase.INCONCLUSIVE)
    start(world)
    world.settle()
    assert world.current.stage == Stage.FINALIZING
    assert world.current.pause_reason == PauseReason.INCONCLUSIVE
    assert world.promotions == []
    assert not world.command(CommandKind.RETRY).outcomes[0].applied
    world.command(CommandKind.PROMOTE_FULL)
    assert world.promotions == ["v2"]


def test_background_analysis_successful_early_stays_successful() -> None:
    world = World(background_spec(), verdict=always(AnalysisPhase.SUCCESSFUL))
    start(world)
    world.settle()
    assert len(world.started) == 1
    assert world.stopped == []  # it had finished; nothing to stop
    assert world.promotions == ["v2"]


# --- state and resumption ------------------------------------------------------------------


def scenario_world() -> World:
    spec = spec_of(
        SetCanaryScale(CanaryScale(weight=50)),
        SetWeight(10),
        SetHeaderRoute("qa", QA_MATCH),
        Pause(60),
        StepAnalysis(ANALYSIS),
        SetWeight(40),
        SetMirrorRoute("m", (MirrorMatch(path=StringMatch("prefix", "/")),), 10),
        Pause(None),
        SetWeight(80),
        Pause(30),
        analysis=BackgroundAnalysis(ANALYSIS, starting_step=1),
    )
    return World(spec, verdict=None)


def drive_scenario(world: World, restart_at: int | None = None) -> list[list[object]]:
    """Drive the scenario tick by tick; optionally reload the state from JSON before tick `restart_at`."""
    script: list[tuple[float, list[Command], dict[int, AnalysisPhase]]] = [
        (0, [], {}),
        (0, [], {}),
        (60, [], {}),
        (0, [], {1: AnalysisPhase.SUCCESSFUL}),
        (5, [Command(CommandKind.PROMOTE, "p1")], {}),
        (30, [], {}),
        (0, [], {}),
    ]
    world.settle()
    world.revision = "v2"
    recorded: list[list[object]] = []
    for index, (advance, commands, verdicts) in enumerate(script):
        if restart_at == index:
            assert world.state is not None
            world.state = RolloutState.from_json(world.current.to_json())
        for position, phase in verdicts.items():
            world.verdicts[world.started[position].run_name] = phase
        decision = world.tick(advance, commands)
        recorded.append(list(decision.actions))
    return recorded


def test_state_round_trips_through_json_at_every_tick() -> None:
    world = scenario_world()
    drive_scenario(world)
    for decision in world.decisions:
        text = decision.state.to_json()
        assert RolloutState.from_json(text) == decision.state
        assert json.loads(text)["schemaVersion"] == 1


@pytest.mark.parametrize("restart_at", range(7))
def test_resuming_from_a_serialized_state_yields_the_same_remaining_actions(restart_at: int) -> None:
    uninterrupted = drive_scenario(scenario_world())
    resumed = drive_scenario(scenario_world(), restart_at=restart_at)
    assert resumed == uninterrupted
    assert uninterrupted[-1][-1:] != []  # the scenario really reached its end
    assert any(isinstance(a, PromoteCanary) for a in uninterrupted[-1] + uninterrupted[-2])


def test_resume_actions_re_establish_the_announced_world() -> None:
    world = scenario_world()
    drive_scenario(world)
    # Take a mid-rollout state: weight 40, header route and mirror set, background running.
    mid = next(d.state for d in world.decisions if d.state.desired_weight == 40 and d.state.mirror_routes)
    fresh = World(world.spec, verdict=None)
    for action in resume_actions(world.spec, mid):
        fresh.apply(action)
    assert fresh.weight == 40
    assert fresh.header_routes == {"qa": QA_MATCH}
    assert fresh.mirror_routes == {"m"}
    assert fresh.canary_scale == CanaryScale(weight=50)
    assert [s.kind for s in fresh.started] == [AnalysisKind.BACKGROUND]


def test_a_state_of_another_schema_version_is_refused() -> None:
    state = RolloutState(stable_revision="v1")
    data = state.to_dict() | {"schemaVersion": 99}
    with pytest.raises(ValueError, match="schemaVersion 99"):
        RolloutState.from_dict(data)


def test_reconcile_never_changes_the_state_it_is_given() -> None:
    world = scenario_world()
    drive_scenario(world)
    for decision in world.decisions:
        before = RolloutState.from_json(decision.state.to_json())
        reconcile(world.spec, decision.state, world.now + 3600, world.observation())
        assert decision.state == before


def test_the_engine_is_deterministic() -> None:
    spec = tutorial_exercise()
    observed = Observation(revision="v2", stable_revision="v1")
    state = RolloutState(stable_revision="v1")
    first = reconcile(spec, state, 5.0, observed)
    second = reconcile(spec, state, 5.0, observed)
    assert first == second
    assert isinstance(first.actions[-1], WaitUntil)


def test_actions_name_every_route_change() -> None:
    world = World(
        spec_of(
            SetHeaderRoute("qa", QA_MATCH),
            SetMirrorRoute("m", (MirrorMatch(),), 5),
            SetHeaderRoute("qa"),
            SetMirrorRoute("m"),
        )
    )
    start(world)
    world.settle()
    kinds = [
        type(a)
        for a in world.actions
        if isinstance(
            a,
            ApplyHeaderRoute | ApplyMirrorRoute | RemoveHeaderRoute | RemoveMirrorRoute | RemoveManagedRoutes,
        )
    ]
    assert kinds[-5:] == [
        ApplyHeaderRoute,
        ApplyMirrorRoute,
        RemoveHeaderRoute,
        RemoveMirrorRoute,
        RemoveManagedRoutes,
    ]


def test_start_analysis_carries_both_revisions_for_baseline_comparisons() -> None:
    world = World(spec_of(StepAnalysis(ANALYSIS)), verdict=None)
    start(world)
    started = world.started[0]
    assert isinstance(started, StartAnalysis)
    assert (started.revision, started.stable_revision) == ("v2", "v1")


def test_stop_analysis_is_sent_once_per_run() -> None:
    world = World(background_spec(), verdict=None, verdict_on_stop=AnalysisPhase.RUNNING)
    start(world)
    world.settle()
    world.tick(10)
    assert sum(isinstance(a, StopAnalysis) for a in world.actions) == 1


def test_weights_in_actions_match_the_state() -> None:
    world = World(tutorial_exercise())
    start(world)
    world.settle()
    for decision in world.decisions:
        weights = [a.weight for a in decision.actions if isinstance(a, SetCanaryWeight)]
        if weights:
            assert weights[-1] == decision.state.desired_weight


# --- Argo Rollouts' event reasons ------------------------------------------------------------


def test_events_carry_argo_reasons_for_steps_pauses_and_weights() -> None:
    """Argo's reasons (utils/conditions/conditions.go): RolloutUpdated, TrafficWeightUpdated,
    RolloutStepCompleted with Argo's message, RolloutPaused/RolloutResumed, RolloutCompleted."""
    world = World(spec_of(SetWeight(10), Pause(30), SetWeight(10), Pause(None), SetWeight(50)))
    start(world)
    world.settle()
    world.command(CommandKind.PROMOTE)
    world.settle()
    assert world.event_reasons() == [
        "RolloutUpdated",
        "TrafficWeightUpdated",  # 0 -> 10
        "RolloutStepCompleted",
        "RolloutPaused",
        "RolloutStepCompleted",  # the timed pause ended...
        "RolloutResumed",  # ...which Argo announces as a resume
        "RolloutStepCompleted",  # setWeight 10 again: the weight did not change, no TrafficWeightUpdated
        "RolloutPaused",
        "RolloutStepCompleted",
        "RolloutResumed",
        "CommandApplied",
        "TrafficWeightUpdated",
        "RolloutStepCompleted",
        "RolloutPromoting",
        "RolloutCompleted",
    ]
    completed = [e.message for e in world.events if e.reason == "RolloutStepCompleted"]
    assert completed == [
        "Rollout step 1/5 completed (setWeight: 10)",
        "Rollout step 2/5 completed (pause: 30s)",
        "Rollout step 3/5 completed (setWeight: 10)",
        "Rollout step 4/5 completed (pause)",
        "Rollout step 5/5 completed (setWeight: 50)",
    ]
    weights = [e.message for e in world.events if e.reason == "TrafficWeightUpdated"]
    assert weights == [
        "step 1/5: traffic weight updated from 0 to 10",
        "step 5/5: traffic weight updated from 10 to 50",
    ]


def test_step_words_follow_argo_for_every_step_kind() -> None:
    world = World(
        spec_of(
            SetCanaryScale(CanaryScale(weight=25)),
            SetCanaryScale(CanaryScale(match_traffic_weight=True)),
            SetCanaryScale(CanaryScale(replicas=2)),
            SetHeaderRoute("qa", QA_MATCH),
            SetMirrorRoute("shadow", (MirrorMatch(method=StringMatch("exact", "GET")),), 50),
            StepAnalysis(ANALYSIS),
        )
    )
    start(world)
    world.settle()
    words = [e.message.split("(", 1)[1][:-1] for e in world.events if e.reason == "RolloutStepCompleted"]
    assert words == [
        "setCanaryScale{weight: 25}",
        "setCanaryScale{matchTrafficWeight: true}",
        "setCanaryScale{replicas: 2}",
        "setHeaderRoute: qa",
        "setMirrorRoute: shadow",
        "analysis",
    ]


def test_an_abort_is_no_resume() -> None:
    world = World(spec_of(SetWeight(10), Pause(None), SetWeight(50)))
    start(world)
    world.command(CommandKind.ABORT)
    assert "RolloutAborted" in world.event_reasons()
    assert "RolloutResumed" not in world.event_reasons()


def test_retry_and_promote_full_out_of_a_human_pause_resume() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS)), verdict=always(AnalysisPhase.INCONCLUSIVE))
    start(world)
    world.settle()
    assert world.current.pause_reason == PauseReason.INCONCLUSIVE
    world.command(CommandKind.RETRY)
    assert world.event_reasons().count("RolloutResumed") == 1
    world.settle()
    world.command(CommandKind.PROMOTE_FULL)
    assert world.event_reasons().count("RolloutResumed") == 2


def test_going_back_to_the_stable_is_argos_skip_steps() -> None:
    world = World(spec_of(SetWeight(10), Pause(None)))
    start(world)
    world.revision = "v1"
    world.tick()
    assert world.events[-1].reason == "SkipSteps"
    assert world.events[-1].message == "rollback to the stable revision v1"


# --- manual pause time (Argo's rollout_manual_pause_duration_seconds) --------------------------


def test_manual_pause_time_counts_only_pauses_a_human_ends() -> None:
    world = World(spec_of(SetWeight(10), Pause(60), Pause(None), SetWeight(50)))
    start(world)
    world.settle()  # the timed pause passed on its own: not manual
    assert world.current.manual_pause_started_at == world.now
    world.tick(300)
    world.command(CommandKind.PROMOTE)
    world.settle()
    record = world.current.history[-1]
    assert record.outcome == "Promoted"
    assert record.manual_pause_seconds == 300
    assert record.finished_at - (record.started_at or 0) == 360


def test_manual_pause_time_includes_inconclusive_pauses_and_restarts_with_each_rollout() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS)), verdict=always(AnalysisPhase.INCONCLUSIVE))
    start(world)
    world.settle()
    world.tick(120)
    world.command(CommandKind.ABORT)
    assert world.current.history[-1].manual_pause_seconds == 120
    assert world.current.manual_pause_started_at is None
    world.revision = "v3"
    world.tick()
    assert world.current.manual_pause_seconds == 0.0


def test_manual_pause_time_survives_a_restart() -> None:
    world = World(spec_of(SetWeight(10), Pause(None)))
    start(world)
    world.tick(50)
    world.state = RolloutState.from_json(world.current.to_json())  # a restarted daemon
    world.tick(50)
    world.command(CommandKind.PROMOTE)
    world.settle()
    assert world.current.history[-1].manual_pause_seconds == 100


# --- pause (meshshift pause: Argo's spec.paused) --------------------------------------------


def test_pause_holds_the_steps_until_promote_resumes_them() -> None:
    world = World(spec_of(SetWeight(10), SetWeight(30), StepAnalysis(ANALYSIS), SetWeight(60)), verdict=None)
    start(world)  # 10 -> 30 -> the analysis (left running)
    assert world.weight == 30
    decision = world.command(CommandKind.PAUSE)
    assert decision.outcomes[0].applied, decision.outcomes[0].message
    assert world.phase() == RolloutPhase.PAUSED
    assert world.current.pause_reason == PauseReason.USER
    assert world.current.message == "step 3/4: manually paused; promote resumes"
    world.verdicts[world.started[0].run_name] = AnalysisPhase.SUCCESSFUL
    for _ in range(3):
        world.tick(advance=3600)  # the analysis succeeds, yet nothing advances, and no deadline aborts
    assert world.weight == 30 and world.phase() == RolloutPhase.PAUSED
    again = world.command(CommandKind.PAUSE)
    assert not again.outcomes[0].applied and "already paused" in again.outcomes[0].message
    resumed = world.command(CommandKind.PROMOTE)
    assert resumed.outcomes[0].message == "resumed at step 3/4"
    world.settle()
    assert world.weights == [10, 30, 60, 0] and world.promotions == ["v2"]
    assert "RolloutResumed" in world.event_reasons()


def test_a_failed_analysis_still_aborts_a_paused_rollout() -> None:
    world = World(spec_of(SetWeight(10), StepAnalysis(ANALYSIS), SetWeight(60)), verdict=None)
    start(world)
    world.command(CommandKind.PAUSE)
    world.verdicts[world.started[0].run_name] = AnalysisPhase.FAILED
    world.tick()
    assert world.phase() == RolloutPhase.DEGRADED and world.weight == 0


def test_a_paused_timed_pause_goes_on_where_it_was_once_resumed() -> None:
    world = World(spec_of(SetWeight(10), Pause(60), SetWeight(50)))
    start(world)
    world.tick(advance=10)
    assert world.command(CommandKind.PAUSE).outcomes[0].applied
    world.tick(advance=600)  # past the pause's end: held
    assert world.weight == 10
    world.command(CommandKind.PROMOTE)  # resumed: the timed pause is over, the steps go on
    world.settle()
    assert world.weights == [10, 50, 0]


def test_pause_when_nothing_rolls_out_is_ignored() -> None:
    world = World(spec_of(SetWeight(10)))
    world.settle()
    decision = world.command(CommandKind.PAUSE)
    assert not decision.outcomes[0].applied and "nothing to pause" in decision.outcomes[0].message
