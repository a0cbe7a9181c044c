"""A simulated world for driving the pure engine in tests.

It plays the adapters' part: it applies the engine's actions to plain fields (weight,
routes, the stable's revision) and reports them back as the next Observation. Analysis
verdicts come from a per-test policy, so tests decide what each run concludes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshshift.engine.actions import (
    Action,
    ApplyHeaderRoute,
    ApplyMirrorRoute,
    PromoteCanary,
    RecordEvent,
    RemoveHeaderRoute,
    RemoveManagedRoutes,
    RemoveMirrorRoute,
    RollBack,
    ScaleCanary,
    SetCanaryWeight,
    SetManagedRoutes,
    StartAnalysis,
    StopAnalysis,
    WaitUntil,
)
from meshshift.engine.machine import Command, CommandKind, Decision, Observation, reconcile
from meshshift.engine.state import RolloutPhase, RolloutState
from meshshift.spec.annotations import parse_deployment
from meshshift.spec.model import AnalysisPhase, CanaryScale, HeaderMatch, RolloutSpec

VerdictPolicy = Callable[[StartAnalysis], AnalysisPhase]


def always(phase: AnalysisPhase) -> VerdictPolicy:
    return lambda _start: phase


@dataclass
class World:
    spec: RolloutSpec
    revision: str = "v1"
    stable_revision: str | None = "v1"
    stable_ready: bool = True
    canary_ready: bool = True
    # What a started analysis concludes at the next tick; None leaves it Running.
    verdict: VerdictPolicy | None = field(default=always(AnalysisPhase.SUCCESSFUL))
    # What a stopped, still running analysis concludes.
    verdict_on_stop: AnalysisPhase = AnalysisPhase.SUCCESSFUL
    # PromoteCanary takes effect at once (standalone) or waits for promote_now().
    instant_promotion: bool = True
    now: float = 1000.0
    state: RolloutState | None = None

    weight: int = 0
    header_routes: dict[str, tuple[HeaderMatch, ...]] = field(default_factory=dict)
    mirror_routes: set[str] = field(default_factory=set)
    canary_scale: CanaryScale | None = None
    verdicts: dict[str, AnalysisPhase] = field(default_factory=dict)
    started: list[StartAnalysis] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    pending_promotion: str | None = None
    promotions: list[str] = field(default_factory=list)
    rollbacks: list[RollBack] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    wake_at: float | None = None
    decisions: list[Decision] = field(default_factory=list)
    _command_seq: int = 0

    # --- driving the engine ------------------------------------------------------------

    def observation(self, commands: Iterable[Command] = ()) -> Observation:
        return Observation(
            revision=self.revision,
            stable_revision=self.stable_revision,
            stable_ready=self.stable_ready,
            canary_ready=self.canary_ready,
            analysis=dict(self.verdicts),
            commands=tuple(commands),
        )

    def tick(self, advance: float = 0.0, commands: Iterable[Command] = ()) -> Decision:
        self.now += advance
        decision = reconcile(self.spec, self.state, self.now, self.observation(commands))
        self.state = decision.state
        self.decisions.append(decision)
        self.wake_at = decision.wake_at
        for action in decision.actions:
            self.apply(action)
        return decision

    def command(self, kind: CommandKind) -> Decision:
        self._command_seq += 1
        return self.tick(commands=[Command(kind, f"cmd-{self._command_seq}")])

    def settle(self, max_ticks: int = 200) -> None:
        """Tick, jumping to each WaitUntil, until nothing is left to wait for."""
        for _ in range(max_ticks):
            before = self.state
            self.tick()
            if self.state == before and self.wake_at is None:
                return
            if self.state == before and self.wake_at is not None:
                self.now = max(self.now, self.wake_at)
        raise AssertionError("the engine did not settle")

    def promote_now(self) -> None:
        assert self.pending_promotion is not None
        self.stable_revision = self.pending_promotion
        self.pending_promotion = None

    # --- the adapters' part --------------------------------------------------------------

    def apply(self, action: Action) -> None:
        self.actions.append(action)
        match action:
            case SetCanaryWeight(weight=weight):
                assert 0 <= weight <= 100, weight
                self.weight = weight
                self.weights.append(weight)
            case ApplyHeaderRoute(name=name, match=match):
                self.header_routes[name] = match
            case RemoveHeaderRoute(name=name):
                self.header_routes.pop(name, None)
            case ApplyMirrorRoute(name=name):
                self.mirror_routes.add(name)
            case RemoveMirrorRoute(name=name):
                self.mirror_routes.discard(name)
            case RemoveManagedRoutes():
                self.header_routes.clear()
                self.mirror_routes.clear()
            case SetManagedRoutes(header_routes=header_routes, mirror_routes=mirror_routes):
                self.header_routes = {r.name: r.match for r in header_routes}
                self.mirror_routes = {r.name for r in mirror_routes}
            case ScaleCanary(scale=scale):
                self.canary_scale = scale
            case StartAnalysis():
                self.started.append(action)
                verdict = self.verdict(action) if self.verdict else None
                self.verdicts[action.run_name] = verdict or AnalysisPhase.RUNNING
            case StopAnalysis(run_name=name):
                self.stopped.append(name)
                if not self.verdicts.get(name, AnalysisPhase.RUNNING).completed:
                    self.verdicts[name] = self.verdict_on_stop
            case PromoteCanary(revision=revision):
                self.promotions.append(revision)
                if self.instant_promotion:
                    self.stable_revision = revision
                else:
                    self.pending_promotion = revision
            case RollBack():
                self.rollbacks.append(action)
            case RecordEvent():
                self.events.append(action)
            case WaitUntil():
                pass

    # Read through methods, so mypy does not keep a narrowed type across ticks.
    @property
    def current(self) -> RolloutState:
        assert self.state is not None
        return self.state

    def phase(self) -> RolloutPhase:
        return self.current.phase

    def event_reasons(self) -> list[str]:
        return [e.reason for e in self.events]


__all__ = ["Command", "CommandKind", "World", "always"]


def weights_until_promotion(deployment: Mapping[str, Any]) -> list[int]:
    """The canary weights meshshift's engine sets for this opted-in Deployment, in order (a weight
    set again at once counted once, 0 left out), until it promotes; every analysis passes and
    every indefinite pause is promoted."""
    parsed = parse_deployment(deployment)
    assert parsed is not None
    world = World(parsed.rollout)
    world.tick()
    world.revision = "v2"
    for _ in range(len(parsed.rollout.steps) + 5):
        world.settle()
        if world.promotions:
            break
        world.command(CommandKind.PROMOTE)
    assert world.promotions == ["v2"]
    weights: list[int] = []
    for action in world.actions:
        if isinstance(action, PromoteCanary):
            break
        if isinstance(action, SetCanaryWeight) and (not weights or weights[-1] != action.weight):
            weights.append(action.weight)
    return [w for w in weights if w]
