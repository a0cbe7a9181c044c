"""One asyncio task per rollout: observe, run the engine, save, then apply.

The loop is level-triggered. The state is saved before the actions it announces;
after a restart, or after an action failed half-way, `resume_actions` re-asserts the
whole desired world, which is idempotent. Failures back off exponentially.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from meshshift.analysis.run import AnalysisRun
from meshshift.backoff import Backoff
from meshshift.engine.actions import (
    Action,
    ApplyHeaderRoute,
    ApplyMirrorRoute,
    EventType,
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
from meshshift.engine.machine import Command, CommandOutcome, Observation, reconcile, resume_actions
from meshshift.engine.state import RolloutState
from meshshift.ports import (
    ON_DEADLINE,
    AppliedRoutes,
    EventSink,
    MetricProvider,
    Router,
    StateStore,
    StateStoreError,
    StoredRollout,
    TemplateSource,
    Workloads,
    WorkloadStatus,
)
from meshshift.runtime.analysis import AnalysisExecutor, ArgContext
from meshshift.spec.model import RolloutSpec

log = structlog.get_logger(__name__)

# How long a stopping controller lets its current pass finish.
FINISH_PASS_SECONDS = 5.0
ROUTING_ACTIONS = (
    SetCanaryWeight,
    ApplyHeaderRoute,
    RemoveHeaderRoute,
    ApplyMirrorRoute,
    RemoveMirrorRoute,
    RemoveManagedRoutes,
    SetManagedRoutes,
)


@dataclass(frozen=True, slots=True, order=True)
class RolloutKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RolloutSnapshot:
    """What the API, the metrics and the CLI show of one rollout."""

    key: RolloutKey
    spec: RolloutSpec | None
    spec_error: str | None
    state: RolloutState | None
    analysis_runs: Mapping[str, AnalysisRun]
    workloads: WorkloadStatus | None
    applied: Mapping[str, AppliedRoutes]
    routers: tuple[str, ...]
    updated_at: float
    last_error: str | None = None
    reconcile_seconds: float | None = None
    # The state could not be saved (StateStoreError): the rollout holds, shown Degraded.
    store_error: str | None = None


class WeightMismatchError(RuntimeError):
    pass


@dataclass
class _PendingCommand:
    command: Command
    outcome: asyncio.Future[CommandOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RolloutController:
    def __init__(
        self,
        key: RolloutKey,
        *,
        spec: RolloutSpec | None,
        routers: Sequence[Router],
        workloads: Workloads,
        store: StateStore,
        templates: TemplateSource,
        providers: Mapping[str, MetricProvider],
        events: EventSink,
        arg_context: Callable[[StartAnalysis], ArgContext],
        clock: Callable[[], float] = time.time,
        on_snapshot: Callable[[RolloutSnapshot], None] | None = None,
        measurement_timeout: float = 30.0,
    ) -> None:
        self.key = key
        self.spec = spec
        self.spec_error: str | None = None
        self.routers = list(routers)
        self.workloads = workloads
        self.store = store
        self.events = events
        self.clock = clock
        self.on_snapshot = on_snapshot
        self.executor = AnalysisExecutor(
            templates=templates,
            providers=providers,
            clock=clock,
            on_change=self._analysis_changed,
            arg_context=arg_context,
            measurement_timeout=measurement_timeout,
        )
        self.state: RolloutState | None = None
        self.applied: dict[str, AppliedRoutes] = {}
        self.workload_status: WorkloadStatus | None = None
        self.last_error: str | None = None
        self.store_error: str | None = None
        self.log = log.bind(rollout=str(key))
        self._wakeup = asyncio.Event()
        self._pending: dict[str, _PendingCommand] = {}
        self._runs_dirty = False
        self._needs_resync = False
        self._backoff = Backoff()
        self._reconcile_seconds: float | None = None

    # --- inputs --------------------------------------------------------------------

    def poke(self) -> None:
        """Something changed (workloads, templates): reconcile now."""
        self._wakeup.set()

    def update_spec(self, spec: RolloutSpec | None, error: str | None = None) -> None:
        """A new spec; None with an error keeps the rollout where it is (invalid spec).

        The last valid spec is kept to show where the rollout holds (its step and weight);
        nothing is reconciled while `spec_error` is set.
        """
        if spec is not None or self.spec is None or error is None:
            self.spec = spec
        self.spec_error = error if spec is None else None
        self.poke()

    def submit(self, command: Command) -> asyncio.Future[CommandOutcome]:
        """Queue a command; the future resolves with what the engine did with it."""
        pending = self._pending.get(command.id)
        if pending is None:
            pending = self._pending[command.id] = _PendingCommand(command)
        self.poke()
        return pending.outcome

    def _analysis_changed(self, run: AnalysisRun) -> None:
        self._runs_dirty = True
        self.poke()

    # --- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            await self._restore()
            on_deadline = False
            while True:
                self._wakeup.clear()
                started = time.perf_counter()
                try:
                    token = ON_DEADLINE.set(on_deadline)  # the pass's task copies it
                    try:
                        wake_at = await self._finish_even_if_cancelled(self.reconcile_once())
                    finally:
                        ON_DEADLINE.reset(token)
                    self._backoff.reset()
                    if self.store_error is not None:
                        self.log.info("the state is saved again; the rollout goes on")
                    self.last_error = self.store_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    if isinstance(error, StateStoreError):
                        self.store_error, self.last_error = str(error), str(error)
                    else:
                        self.last_error = f"{type(error).__name__}: {error}"
                    self._needs_resync = True
                    delay = self._backoff.next()
                    self.log.warning("reconcile failed; retrying", error=self.last_error, retry_in=delay)
                    wake_at = self.clock() + delay
                finally:
                    self._reconcile_seconds = time.perf_counter() - started
                    # A pass that a stop waited for still shows what it did.
                    self._publish()
                on_deadline = await self._sleep_until(wake_at)
        finally:
            await self.executor.close()
            for pending in self._pending.values():
                if not pending.outcome.done():
                    pending.outcome.cancel()

    async def _finish_even_if_cancelled(self, reconcile: Coroutine[Any, Any, float | None]) -> float | None:
        """Run one pass; a stop that arrives meanwhile waits for it (up to FINISH_PASS_SECONDS).

        A pass saves its state and then applies what that state announces; cutting it in
        between would lose the Events of that pass (the world itself is re-asserted on
        restart). Stopping between passes loses nothing.
        """
        work = asyncio.ensure_future(reconcile)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait({work}, timeout=FINISH_PASS_SECONDS)
            raise
        finally:
            work.cancel()  # a no-op once it is done; stops it if the grace ran out

    async def _restore(self) -> None:
        stored = await self.store.load()
        if stored is None:
            return
        self.state = stored.rollout
        self.executor.restore(stored.analysis_runs)
        self._needs_resync = True
        self.log.info(
            "resuming rollout",
            phase=stored.rollout.phase.value,
            step=stored.rollout.step_index + 1,  # 1-based, as Events and the CLI count
            weight=stored.rollout.desired_weight,
        )

    async def _sleep_until(self, wake_at: float | None) -> bool:
        """Wait for a poke, or until `wake_at`; True if woken by the time, not by a poke."""
        timeout = None if wake_at is None else max(0.0, wake_at - self.clock())
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            return True
        return False

    async def reconcile_once(self) -> float | None:
        """One pass; returns when to come back at the latest."""
        spec = self.spec
        if spec is None or self.spec_error is not None:
            return None  # invalid or missing spec: change nothing
        if self._needs_resync and self.state is not None:
            await self._apply_all(resume_actions(spec, self.state))
            self._needs_resync = False
        status = await self.workloads.observe()
        self.workload_status = status
        observed = Observation(
            revision=status.revision,
            stable_revision=status.stable_revision,
            stable_ready=status.stable_ready,
            canary_ready=status.canary_ready,
            analysis=self.executor.verdicts(),
            commands=tuple(p.command for p in self._pending.values()),
        )
        decision = reconcile(spec, self.state, self.clock(), observed)
        if decision.state != self.state or self._runs_dirty:
            self._runs_dirty = False
            await self.store.save(StoredRollout(decision.state, self._runs_for(decision.state)))
        self.state = decision.state
        self._settle_commands(decision.outcomes)
        try:
            await self._apply_all(decision.actions)
        except Exception:
            self._needs_resync = True
            raise
        self.executor.forget([r.name for r in decision.state.analysis_runs])
        return decision.wake_at

    def _runs_for(self, state: RolloutState) -> dict[str, AnalysisRun]:
        names = {r.name for r in state.analysis_runs}
        return {name: run for name, run in self.executor.runs.items() if name in names}

    def _settle_commands(self, outcomes: Sequence[CommandOutcome]) -> None:
        for outcome in outcomes:
            pending = self._pending.pop(outcome.command.id, None)
            if pending is not None and not pending.outcome.done():
                pending.outcome.set_result(outcome)
        handled = set(self.state.handled_commands) if self.state else set()
        for command_id in [cid for cid in self._pending if cid in handled]:
            pending = self._pending.pop(command_id)
            if not pending.outcome.done():
                pending.outcome.set_result(CommandOutcome(pending.command, False, "already handled"))

    async def _apply_all(self, actions: Sequence[Action]) -> None:
        routed = False
        for action in actions:
            await self._apply(action)
            routed = routed or isinstance(action, ROUTING_ACTIONS)
        if routed:
            await self._verify_routing()

    async def _apply(self, action: Action) -> None:
        match action:
            case SetCanaryWeight(weight=weight):
                for router in self.routers:
                    await router.set_weight(weight)
            case ApplyHeaderRoute(name=name, match=match):
                for router in self.routers:
                    await router.set_header_route(name, match)
            case RemoveHeaderRoute(name=name):
                for router in self.routers:
                    await router.remove_header_route(name)
            case ApplyMirrorRoute(name=name, match=match, percentage=percentage):
                for router in self.routers:
                    await router.set_mirror_route(name, match, percentage)
            case RemoveMirrorRoute(name=name):
                for router in self.routers:
                    await router.remove_mirror_route(name)
            case RemoveManagedRoutes():
                for router in self.routers:
                    await router.remove_managed_routes()
            case SetManagedRoutes(header_routes=header_routes, mirror_routes=mirror_routes):
                for router in self.routers:
                    await router.set_managed_routes(header_routes, mirror_routes)
            case ScaleCanary(scale=scale, traffic_weight=traffic_weight):
                await self.workloads.scale_canary(scale, traffic_weight)
            case StartAnalysis():
                await self.executor.start(action)
            case StopAnalysis(run_name=name):
                await self.executor.stop(name)
            case PromoteCanary(revision=revision):
                await self.workloads.promote(revision)
            case RollBack(revision=revision, reason=reason):
                self.log.warning("rolled back", revision=revision, reason=reason)
            case RecordEvent():
                await self.events.record(action)
            case WaitUntil():
                pass

    async def _verify_routing(self) -> None:
        """Read back what each data plane applied; a mismatch is retried through a resync."""
        assert self.state is not None
        for router in self.routers:
            applied = await router.read_back()
            self.applied[router.name] = applied
            if applied.canary_weight is not None and applied.canary_weight != self.state.desired_weight:
                message = (
                    f"{router.name} reports canary weight {applied.canary_weight}, "
                    f"expected {self.state.desired_weight}"
                )
                await self.events.record(RecordEvent(EventType.WARNING, "WeightVerifyError", message))
                raise WeightMismatchError(message)

    def snapshot(self) -> RolloutSnapshot:
        return RolloutSnapshot(
            key=self.key,
            spec=self.spec,
            spec_error=self.spec_error,
            state=self.state,
            analysis_runs=dict(self.executor.runs),
            workloads=self.workload_status,
            applied=dict(self.applied),
            routers=tuple(r.name for r in self.routers),
            updated_at=self.clock(),
            last_error=self.last_error,
            reconcile_seconds=self._reconcile_seconds,
            store_error=self.store_error,
        )

    def _publish(self) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(self.snapshot())
