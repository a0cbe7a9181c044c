"""Invariants of the step machine over random specs and random event sequences."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshshift.engine.actions import AnalysisKind, PromoteCanary, SetCanaryWeight, StartAnalysis
from meshshift.engine.machine import Command, CommandKind
from meshshift.engine.state import RolloutState
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    BackgroundAnalysis,
    CanaryScale,
    FailurePolicy,
    HeaderMatch,
    Pause,
    RolloutSpec,
    SetCanaryScale,
    SetHeaderRoute,
    SetWeight,
    Step,
    StepAnalysis,
    StringMatch,
    TemplateRef,
)
from tests.engine_world import World

ANALYSIS = AnalysisRef(templates=(TemplateRef("t"),))

steps_strategy: st.SearchStrategy[list[Step]] = st.lists(
    st.one_of(
        st.builds(SetWeight, st.integers(0, 100)),
        st.builds(Pause, st.one_of(st.none(), st.floats(0, 600))),
        st.just(StepAnalysis(ANALYSIS)),
        st.sampled_from(
            [
                SetHeaderRoute("qa", (HeaderMatch("X-Canary", StringMatch("exact", "true")),)),
                SetHeaderRoute("qa"),
            ]
        ),
        st.sampled_from(
            [
                SetCanaryScale(CanaryScale(weight=50)),
                SetCanaryScale(CanaryScale(match_traffic_weight=True)),
                SetCanaryScale(CanaryScale(replicas=2)),
            ]
        ),
    ),
    max_size=10,
)


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    steps: list[Step] = draw(steps_strategy)
    background = draw(
        st.one_of(
            st.none(),
            st.integers(0, len(steps)).map(lambda start: BackgroundAnalysis(ANALYSIS, starting_step=start)),
        )
    )
    return RolloutSpec(
        steps=tuple(steps),
        analysis=background,
        on_failure=draw(st.sampled_from(list(FailurePolicy))),
        progress_deadline=draw(st.sampled_from([30.0, 600.0])),
        allow_non_monotonic=True,
        gradual_interval=draw(st.sampled_from([0.0, 10.0])),
    )


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Verdict:
    which: int  # index into the runs started so far
    phase: AnalysisPhase


@dataclass(frozen=True)
class Issue:
    kind: CommandKind


@dataclass(frozen=True)
class NewRevision:
    revision: str


@dataclass(frozen=True)
class CanaryReadiness:
    ready: bool


@dataclass(frozen=True)
class StableCatchesUp:
    pass


Event = Advance | Verdict | Issue | NewRevision | CanaryReadiness | StableCatchesUp

events_strategy = st.lists(
    st.one_of(
        # Time and promote come often, so random runs reach the ends of their schedules.
        st.builds(Advance, st.sampled_from([0.0, 1.0, 29.0, 61.0, 700.0])),
        st.builds(Advance, st.sampled_from([61.0, 700.0])),
        st.just(Issue(CommandKind.PROMOTE)),
        st.builds(Verdict, st.integers(0, 20), st.sampled_from(list(AnalysisPhase))),
        st.builds(Issue, st.sampled_from(list(CommandKind))),
        st.builds(NewRevision, st.sampled_from(["v1", "v2", "v3"])),
        st.builds(CanaryReadiness, st.booleans()),
        st.just(StableCatchesUp()),
    ),
    max_size=60,
)


def run_events(world: World, events: list[Event]) -> list[dict[str, AnalysisPhase]]:
    """Apply each event and tick; returns the verdicts the engine observed at each tick."""
    verdicts_seen = []
    for event in events:
        commands: list[Command] = []
        match event:
            case Advance(seconds=seconds):
                world.now += seconds
            case Verdict(which=which, phase=phase):
                if world.started:
                    name = world.started[which % len(world.started)].run_name
                    if not world.verdicts[name].completed:  # a completed run's verdict is final
                        world.verdicts[name] = phase
            case Issue(kind=kind):
                world._command_seq += 1
                commands.append(Command(kind, f"c{world._command_seq}"))
            case NewRevision(revision=revision):
                world.revision = revision
            case CanaryReadiness(ready=ready):
                world.canary_ready = ready
            case StableCatchesUp():
                if world.pending_promotion:
                    world.promote_now()
        verdicts_seen.append(dict(world.verdicts))
        world.tick(commands=commands)
    return verdicts_seen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), events=events_strategy, instant=st.booleans())
def test_weights_stay_within_0_and_100(spec: RolloutSpec, events: list[Event], instant: bool) -> None:
    world = World(
        spec, verdict=None, instant_promotion=instant, stable_revision=None if not instant else "v1"
    )
    run_events(world, events)
    for decision in world.decisions:
        for action in decision.actions:
            if isinstance(action, SetCanaryWeight):
                assert 0 <= action.weight <= 100
        assert 0 <= decision.state.desired_weight <= 100


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), events=events_strategy, on_stop=st.sampled_from(list(AnalysisPhase)))
def test_never_promotes_without_successful_analysis_or_promote_full(
    spec: RolloutSpec, events: list[Event], on_stop: AnalysisPhase
) -> None:
    world = World(spec, verdict=None, verdict_on_stop=on_stop)
    world.settle()
    settled = len(world.decisions)
    verdicts_seen = run_events(world, events)

    full_requested_in_attempt: set[int] = set()
    previous: RolloutState | None = world.state if settled else None
    for decision, verdicts in zip(world.decisions[settled:], verdicts_seen, strict=True):
        before = previous
        previous = decision.state
        if before is None:
            continue
        for outcome in decision.outcomes:
            if outcome.command.kind == CommandKind.PROMOTE_FULL and outcome.applied:
                full_requested_in_attempt.add(decision.state.attempt)
        promotions = [a for a in decision.actions if isinstance(a, PromoteCanary)]
        if not promotions:
            continue
        state = decision.state
        if state.attempt in full_requested_in_attempt:
            continue
        # Every step analysis of this attempt ran and was Successful, in the world's eyes.
        runs = state.current_runs()
        step_runs = {r.step_index for r in runs if r.kind == AnalysisKind.STEP}
        expected = {i for i, s in enumerate(spec.steps) if isinstance(s, StepAnalysis)}
        assert step_runs == expected
        for record in runs:
            assert verdicts.get(record.name) == AnalysisPhase.SUCCESSFUL, record
        if spec.analysis is not None and spec.analysis.starting_step <= len(spec.steps):
            assert any(r.kind == AnalysisKind.BACKGROUND for r in runs)


@settings(max_examples=200, deadline=None)
@given(spec=specs(), events=events_strategy)
def test_every_state_round_trips_through_json(spec: RolloutSpec, events: list[Event]) -> None:
    world = World(spec, verdict=None)
    run_events(world, events)
    for decision in world.decisions:
        assert RolloutState.from_json(decision.state.to_json()) == decision.state


@settings(max_examples=200, deadline=None)
@given(spec=specs(), events=events_strategy)
def test_analysis_runs_are_started_once_per_name(spec: RolloutSpec, events: list[Event]) -> None:
    world = World(spec, verdict=None)
    run_events(world, events)
    names = [a.run_name for a in world.actions if isinstance(a, StartAnalysis)]
    assert len(names) == len(set(names))
