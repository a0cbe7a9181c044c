"""The runtime around the engine: the controller loop and the analysis executor.

A real RolloutController on in-memory data-plane adapters (tests/support/inmemory.py);
the analysis tests use the real web provider against a local HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web

from meshshift import codec
from meshshift.analysis.providers.web import WebProvider
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, RecordEvent, StartAnalysis
from meshshift.engine.machine import CommandKind
from meshshift.ports import ON_DEADLINE, StoredRollout
from meshshift.runtime.analysis import REDACTED, AnalysisExecutor, ArgContext, builtin_args
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    AnalysisTemplate,
    Arg,
    ArgValueFrom,
    HeaderMatch,
    Pause,
    RolloutSpec,
    SetHeaderRoute,
    SetWeight,
    StringMatch,
    TemplateRef,
)
from meshshift.spec.templates import parse_template
from tests.support.inmemory import MemoryRouter, MemoryStore, MemoryTemplates, make_controller, running

API_KEY = "sk-live-not-for-logs"


# --- the analysis executor ----------------------------------------------------------


@pytest.fixture
async def health_api() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A vendor API that answers {"healthy": 0.99} when called with the right key."""
    seen: list[web.Request] = []

    async def health(request: web.Request) -> web.Response:
        seen.append(request)
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": "bad key"}, status=403)
        return web.json_response({"healthy": 0.99})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


def vendor_template(base_url: str) -> AnalysisTemplate:
    return parse_template(
        {
            "apiVersion": "meshshift.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "vendor"},
            "spec": {
                "args": [{"name": "api-key"}, {"name": "service"}],
                "metrics": [
                    {
                        "name": "health",
                        "successCondition": "result >= 0.95",
                        "provider": {
                            "web": {
                                "url": base_url + "/health?service={{args.service}}&api={{args.api-key}}",
                                "headers": [{"key": "X-Api-Key", "value": "{{args.api-key}}"}],
                                "jsonPath": "{$.healthy}",
                            }
                        },
                    }
                ],
            },
        }
    )


def start_action(name: str = "v2-1-step1") -> StartAnalysis:
    secret_arg = Arg("api-key", value_from=ArgValueFrom(secret_name="vendor", secret_key="key"))
    analysis = AnalysisRef((TemplateRef("vendor"),), args=(secret_arg, Arg("service", "shop")))
    return StartAnalysis(name, AnalysisKind.STEP, analysis, revision="v2", stable_revision="v1")


class SecretReads:
    """Counts reads of a Secret store that holds one Secret."""

    def __init__(self, data: Mapping[str, Mapping[str, str]]) -> None:
        self.data = data
        self.reads = 0

    async def __call__(self, name: str, namespace: str | None) -> Mapping[str, str] | None:
        self.reads += 1
        return self.data.get(name)


class RunChanges:
    """Every change the executor reports, and a way to wait for one that matters."""

    def __init__(self) -> None:
        self.runs: list[AnalysisRun] = []
        self.changed = asyncio.Event()

    def __call__(self, run: AnalysisRun) -> None:
        self.runs.append(run)
        self.changed.set()

    async def until(self, predicate: Callable[[AnalysisRun], bool]) -> AnalysisRun:
        async with asyncio.timeout(20):  # hang guard
            while not (self.runs and predicate(self.runs[-1])):
                self.changed.clear()
                await self.changed.wait()
        return self.runs[-1]


def completed(run: AnalysisRun) -> bool:
    return run.phase.completed


def executor_for(
    template: AnalysisTemplate, reader: SecretReads | None, changes: RunChanges
) -> AnalysisExecutor:
    def arg_context(action: StartAnalysis) -> ArgContext:
        builtins = builtin_args(canary=action.revision, stable=action.stable_revision, namespace="shop")
        return ArgContext(builtins, namespace="shop", secret_reader=reader)

    return AnalysisExecutor(
        templates=MemoryTemplates([template]),
        providers={"web": WebProvider()},
        clock=time.time,
        on_change=changes,
        arg_context=arg_context,
    )


async def test_secret_args_reach_the_provider_but_never_the_persisted_run(
    health_api: tuple[str, list[web.Request]],
) -> None:
    base_url, seen = health_api
    changes = RunChanges()
    reader = SecretReads({"vendor": {"key": API_KEY}})
    executor = executor_for(vendor_template(base_url), reader, changes)
    await executor.start(start_action())
    run = await changes.until(completed)

    assert run.phase == AnalysisPhase.SUCCESSFUL
    assert seen[0].headers["X-Api-Key"] == API_KEY  # the vendor got the real key
    assert run.args == {"api-key": REDACTED, "service": "shop"}
    persisted = json.dumps(codec.encode(changes.runs))
    assert API_KEY not in persisted
    (measurement,) = run.result("health").measurements
    assert API_KEY not in measurement.query and "service=shop" in measurement.query
    await executor.close()


async def test_a_resumed_run_reads_its_secret_again(health_api: tuple[str, list[web.Request]]) -> None:
    base_url, seen = health_api
    template = parse_template(
        {
            "apiVersion": "meshshift.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "vendor"},
            "spec": {
                "args": [{"name": "api-key"}, {"name": "service"}],
                "metrics": [
                    {
                        "name": "health",
                        "interval": "1s",
                        "count": 2,
                        "successCondition": "result >= 0.95",
                        "provider": {
                            "web": {
                                "url": f"{base_url}/health",
                                "headers": [{"key": "X-Api-Key", "value": "{{args.api-key}}"}],
                                "jsonPath": "{$.healthy}",
                            }
                        },
                    }
                ],
            },
        }
    )
    first = RunChanges()
    executor = executor_for(template, SecretReads({"vendor": {"key": API_KEY}}), first)
    await executor.start(start_action())
    measured_once = await first.until(lambda run: run.result("health").counts.count == 1)
    await executor.close()  # the daemon stops between two measurements

    restarted = RunChanges()
    reader = SecretReads({"vendor": {"key": API_KEY}})
    again = executor_for(template, reader, restarted)
    again.restore({"v2-1-step1": measured_once})
    await again.start(start_action())
    run = await restarted.until(completed)
    assert run.phase == AnalysisPhase.SUCCESSFUL
    assert run.result("health").counts.count == 2  # resumed, not restarted
    assert reader.reads == 1
    assert all(request.headers["X-Api-Key"] == API_KEY for request in seen)
    await again.close()


async def test_a_missing_secret_is_an_error_run_that_names_it(
    health_api: tuple[str, list[web.Request]],
) -> None:
    base_url, seen = health_api
    executor = executor_for(vendor_template(base_url), SecretReads({}), RunChanges())
    await executor.start(start_action())
    run = executor.runs["v2-1-step1"]
    assert run.phase == AnalysisPhase.ERROR
    assert "Secret vendor has no key 'key'" in run.message
    assert seen == []


async def test_an_unknown_template_is_an_error_run(health_api: tuple[str, list[web.Request]]) -> None:
    executor = executor_for(vendor_template(health_api[0]), SecretReads({}), RunChanges())
    action = StartAnalysis(
        "r", AnalysisKind.STEP, AnalysisRef((TemplateRef("nope"),)), revision="v2", stable_revision="v1"
    )
    await executor.start(action)
    assert executor.runs["r"].phase == AnalysisPhase.ERROR
    assert "AnalysisTemplate 'nope' not found" in executor.runs["r"].message


# --- the controller loop -------------------------------------------------------------


QA = SetHeaderRoute("qa", (HeaderMatch("X-Canary", StringMatch("exact", "true")),))


class WatchedStore(MemoryStore):
    """An in-memory state store whose latest save the router below can see."""

    def __init__(self, view: list[StoredRollout | None]) -> None:
        super().__init__()
        self.view = view

    async def save(self, stored: StoredRollout) -> None:
        await super().save(stored)
        self.view[0] = stored


class RecordingRouter(MemoryRouter):
    """Records, for each write, the state the store held at that moment."""

    def __init__(self, store_view: list[StoredRollout | None]) -> None:
        super().__init__()
        self.store_view = store_view
        self.saved_weight_at_write: list[int | None] = []
        self.failures_left = 0

    async def set_weight(self, canary_weight: int) -> None:
        stored = self.store_view[0]
        self.saved_weight_at_write.append(stored.rollout.desired_weight if stored else None)
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("data plane unreachable")
        await super().set_weight(canary_weight)


async def test_state_is_saved_before_the_weight_it_announces() -> None:
    registry = RolloutRegistry()
    view: list[StoredRollout | None] = [None]
    router = RecordingRouter(view)
    harness = make_controller(
        registry,
        RolloutSpec(steps=(SetWeight(20), SetWeight(40), Pause())),
        router=router,
        store=WatchedStore(view),
    )
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"))
        harness.workloads.release("v2")
        await harness.wait_for(lambda: harness.state_is(phase="Paused"))
    # Both steps ran in one pass: the state announcing weight 40 was saved before either write.
    assert router.weights_written[-2:] == [20, 40]
    assert router.saved_weight_at_write[-2:] == [40, 40]
    assert None not in router.saved_weight_at_write


async def test_a_failing_data_plane_is_retried_until_the_world_matches_the_state() -> None:
    registry = RolloutRegistry()
    view: list[StoredRollout | None] = [None]
    router = RecordingRouter(view)
    harness = make_controller(registry, RolloutSpec(steps=(SetWeight(30), QA, Pause())), router=router)
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"))
        router.failures_left = 2
        harness.workloads.release("v2")
        await harness.wait_for(
            lambda: harness.state_is(phase="Paused") and router.weight == 30, what="resync"
        )
        assert harness.controller.last_error is None
    assert router.header_routes == {"qa": QA.match}
    assert router.failures_left == 0


async def test_a_restarted_controller_resumes_from_the_store_and_re_asserts_routing() -> None:
    registry = RolloutRegistry()
    spec = RolloutSpec(steps=(SetWeight(25), QA, Pause(), SetWeight(75)))
    first = make_controller(registry, spec)
    async with running(first):
        await first.wait_for(lambda: first.state_is(stable_revision="v1"))
        first.workloads.release("v2")
        await first.wait_for(lambda: first.state_is(phase="Paused"))
    stored = first.store.stored
    assert stored is not None

    # A new daemon: fresh data plane (say, the proxy restarted too), the same store.
    second = make_controller(RolloutRegistry(), spec)
    second.store.stored = stored
    second.workloads.revision, second.workloads.stable = "v2", "v1"
    async with running(second):
        await second.wait_for(lambda: second.router.weight == 25 and "qa" in second.router.header_routes)
        assert second.controller.state is not None and second.controller.state.step_index == 2
        outcome = await second.registry.command(second.key, CommandKind.PROMOTE)
        assert outcome.applied
        await second.wait_for(lambda: second.state_is(stable_revision="v2"), what="promotion")
    assert second.router.weights_written == [25, 75, 0]


class WatchedRouter(MemoryRouter):
    """A data plane that records which header routes it serves after every write."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[set[str]] = []

    def __getattribute__(self, name: str) -> Any:
        method = super().__getattribute__(name)
        if name.startswith(("set_", "remove_")):

            async def recorded(*args: Any) -> None:
                await method(*args)
                self.served.append(set(self.header_routes))

            return recorded
        return method


async def test_a_restart_never_drops_the_header_routes_the_state_holds() -> None:
    registry = RolloutRegistry()
    spec = RolloutSpec(steps=(SetWeight(25), QA, Pause(), SetWeight(75)))
    first = make_controller(registry, spec)
    async with running(first):
        await first.wait_for(lambda: first.state_is(stable_revision="v1"))
        first.workloads.release("v2")
        await first.wait_for(lambda: first.state_is(phase="Paused"))
    stored = first.store.stored
    assert stored is not None

    # The daemon restarts; its proxy kept serving (adopted), header route included.
    router = WatchedRouter()
    router.weight, router.header_routes = 25, dict(first.router.header_routes)
    second = make_controller(RolloutRegistry(), spec, router=router)
    second.store.stored = stored
    second.workloads.revision, second.workloads.stable = "v2", "v1"
    async with running(second):
        await second.wait_for(lambda: second.controller.applied.get("envoy") is not None, what="resync")
    assert router.served, "the restart re-asserted nothing"
    assert all(served == {"qa"} for served in router.served), router.served


class EventList:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def record(self, event: RecordEvent) -> None:
        self.reasons.append(event.reason)


class SlowRouter(MemoryRouter):
    """A data plane whose weight writes wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()
        self.proceed = asyncio.Event()

    async def set_weight(self, canary_weight: int) -> None:
        if canary_weight:
            self.writing.set()
            await self.proceed.wait()
        await super().set_weight(canary_weight)


async def test_a_stop_during_a_pass_lets_the_pass_finish() -> None:
    router, events = SlowRouter(), EventList()
    harness = make_controller(
        RolloutRegistry(), RolloutSpec(steps=(SetWeight(30), Pause())), router=router, sinks=[events]
    )
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"))
        harness.workloads.release("v2")
        async with asyncio.timeout(20):  # hang guard
            await router.writing.wait()
        assert harness.task is not None
        harness.task.cancel()  # the daemon stops while the pass is writing weight 30
        await asyncio.sleep(0)
        router.proceed.set()
        with contextlib.suppress(asyncio.CancelledError):
            await harness.task
    # The saved state announced weight 30 and its Events: all of them went out.
    assert router.weight == 30
    assert "TrafficWeightUpdated" in events.reasons and "RolloutPaused" in events.reasons


class DeadlineNotingRouter(MemoryRouter):
    """Notes, for each weight written, whether the pass was on a deadline (ports.ON_DEADLINE)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_deadline: list[tuple[int, bool]] = []

    async def set_weight(self, canary_weight: int) -> None:
        self.on_deadline.append((canary_weight, ON_DEADLINE.get()))
        await super().set_weight(canary_weight)


async def test_a_pass_woken_by_its_pause_ending_is_on_a_deadline_and_one_woken_by_a_change_is_not() -> None:
    registry = RolloutRegistry()
    router = DeadlineNotingRouter()
    spec = RolloutSpec(steps=(SetWeight(20), Pause(0.2), SetWeight(60)))
    harness = make_controller(registry, spec, router=router)
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"))
        harness.workloads.release("v2")
        await harness.wait_for(lambda: harness.state_is(stable_revision="v2"), what="the promotion")
    # 20: the new revision was seen (a change); 60: the 0.2 s pause ran out (a deadline).
    assert (20, False) in router.on_deadline
    assert (60, True) in router.on_deadline
    assert ON_DEADLINE.get() is False  # nothing leaks out of the passes
