"""In-memory stand-ins for the data plane, so a real RolloutController runs in unit tests.

They are adapters for the ports (what Envoy, Kubernetes or a state file would be), not
mocks of meshshift: the controller, engine, analysis executor and registry under test
are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshshift.engine.actions import StartAnalysis
from meshshift.engine.state import HeaderRoute, MirrorRoute
from meshshift.ports import (
    AppliedRoutes,
    EventSink,
    MeasureContext,
    ProviderError,
    ProviderResult,
    StoredRollout,
    TemplateSource,
    WorkloadStatus,
)
from meshshift.runtime.analysis import ArgContext, builtin_args
from meshshift.runtime.controller import RolloutController, RolloutKey
from meshshift.runtime.events import FanOutEvents, LogEvents
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import (
    AnalysisRef,
    AnalysisTemplate,
    Arg,
    CanaryScale,
    HeaderMatch,
    Metric,
    MirrorMatch,
    Pause,
    RolloutSpec,
    SetHeaderRoute,
    SetWeight,
    StepAnalysis,
    StringMatch,
    TemplateRef,
)
from meshshift.spec.templates import parse_template

QA_ROUTE = SetHeaderRoute("canary-by-header", (HeaderMatch("X-Canary", StringMatch("exact", "true")),))
STEP_ANALYSIS = StepAnalysis(
    AnalysisRef(templates=(TemplateRef("success-rate"),), args=(Arg("service-name", "myapp"),))
)
# setWeight 20, an analysis, a header route, then a pause for a human at step 4/6.
PAUSING_SPEC = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, QA_ROUTE, Pause(), SetWeight(50), Pause()))


class MemoryRouter:
    """A data plane that applies what it is told, and can be told to lag or fail."""

    def __init__(self, name: str = "envoy") -> None:
        self.name = name
        self.weight = 0
        self.header_routes: dict[str, tuple[HeaderMatch, ...]] = {}
        self.mirror_routes: dict[str, tuple[MirrorMatch, ...]] = {}
        self.weights_written: list[int] = []

    async def set_weight(self, canary_weight: int) -> None:
        self.weight = canary_weight
        self.weights_written.append(canary_weight)

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None:
        self.header_routes[name] = tuple(match)

    async def remove_header_route(self, name: str) -> None:
        self.header_routes.pop(name, None)

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        self.mirror_routes[name] = tuple(match)

    async def remove_mirror_route(self, name: str) -> None:
        self.mirror_routes.pop(name, None)

    async def remove_managed_routes(self) -> None:
        self.header_routes.clear()
        self.mirror_routes.clear()

    async def set_managed_routes(
        self, header_routes: Sequence[HeaderRoute], mirror_routes: Sequence[MirrorRoute]
    ) -> None:
        self.header_routes = {r.name: r.match for r in header_routes}
        self.mirror_routes = {r.name: r.match for r in mirror_routes}

    async def read_back(self) -> AppliedRoutes:
        return AppliedRoutes(self.weight, tuple(self.header_routes), tuple(self.mirror_routes))


class MemoryWorkloads:
    """Two versions of an app: the stable and whatever revision the user asks for."""

    def __init__(self, stable: str = "v1", revision: str | None = None, replicas: int = 4) -> None:
        self.revision = revision or stable
        self.stable: str | None = stable
        self.replicas = replicas
        self.canary_replicas = 0
        self.on_change: Callable[[], None] = lambda: None  # a watch would tell the controller

    def release(self, revision: str) -> None:
        """A user deploys a new revision."""
        self.revision = revision
        self.on_change()

    async def observe(self) -> WorkloadStatus:
        return WorkloadStatus(
            revision=self.revision,
            stable_revision=self.stable,
            stable_ready=True,
            canary_ready=True,
            images={"stable": (f"example/app:{self.stable}",), "canary": (f"example/app:{self.revision}",)},
            replicas={
                "desired": self.replicas,
                "updated": self.canary_replicas,
                "available": self.replicas + self.canary_replicas,
                "unavailable": 0,
            },
        )

    async def promote(self, revision: str) -> None:
        self.stable = revision
        self.on_change()

    async def scale_canary(self, scale: CanaryScale, traffic_weight: int) -> None:
        self.canary_replicas = scale.replicas_for(self.replicas, traffic_weight)


class MemoryStore:
    def __init__(self) -> None:
        self.stored: StoredRollout | None = None

    async def load(self) -> StoredRollout | None:
        return self.stored

    async def save(self, stored: StoredRollout) -> None:
        self.stored = stored


class MemoryTemplates:
    def __init__(self, templates: Sequence[AnalysisTemplate] = ()) -> None:
        self.templates = {t.name: t for t in templates}

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        return self.templates.get(name)


class ScriptedProvider:
    """A metrics backend answering from a script: a callable from (metric, query) to a value.

    It resolves `{{args.x}}` in the query, as a real provider does, so the measurement's
    query is the resolved one.
    """

    def __init__(self, answer: Callable[[Metric], Any], kind: str = "prometheus") -> None:
        self.kind = kind
        self.answer = answer
        self.calls = 0

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        self.calls += 1
        query = str(metric.provider.options.get("query", "")) if metric.provider else ""
        for name, value in context.args.items():
            query = query.replace("{{args." + name + "}}", value).replace("{{ args." + name + " }}", value)
        value = self.answer(metric)
        if isinstance(value, Exception):
            raise ProviderError(str(value))
        return ProviderResult(value=value, query=query)


def success_rate_template(interval: str = "1s", count: int = 3) -> AnalysisTemplate:
    """The tutorial's success-rate template, shortened for tests."""
    return parse_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "success-rate"},
            "spec": {
                "args": [{"name": "service-name"}],
                "metrics": [
                    {
                        "name": "success-rate",
                        "interval": interval,
                        "count": count,
                        "successCondition": "result[0] >= 0.95",
                        "failureLimit": 0,
                        "provider": {
                            "prometheus": {
                                "address": "http://127.0.0.1:9",
                                "query": 'sum(rate(http_requests_total{service="{{args.service-name}}",'
                                'status!~"5.."}[1m])) / sum(rate(http_requests_total'
                                '{service="{{args.service-name}}"}[1m]))',
                            }
                        },
                    }
                ],
            },
        }
    )


@dataclass
class Harness:
    """One real RolloutController on in-memory adapters, registered and running."""

    key: RolloutKey
    controller: RolloutController
    router: MemoryRouter
    workloads: MemoryWorkloads
    store: MemoryStore
    provider: ScriptedProvider
    registry: RolloutRegistry
    task: asyncio.Task[None] | None = None
    extra_sinks: list[EventSink] = field(default_factory=list)

    async def wait_for(
        self, predicate: Callable[[], bool], *, hang_guard: float = 20.0, what: str = "condition"
    ) -> None:
        """Poll until `predicate()` holds (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + hang_guard
        while not predicate():
            if self.task is not None and self.task.done():
                self.task.result()  # surfaces the controller's crash
            if time.monotonic() > deadline:
                state = self.controller.state
                raise AssertionError(f"timed out waiting for {what}; state: {state}")
            await asyncio.sleep(0.02)

    def state_is(self, **expected: object) -> bool:
        state = self.controller.state
        return state is not None and all(getattr(state, k) == v for k, v in expected.items())


def make_controller(
    registry: RolloutRegistry,
    spec: RolloutSpec,
    *,
    name: str = "myapp",
    namespace: str = "default",
    templates: Sequence[AnalysisTemplate] = (),
    answer: Callable[[Metric], Any] = lambda metric: [0.99],
    sinks: Sequence[EventSink] = (),
    router: MemoryRouter | None = None,
    store: MemoryStore | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    wrap_templates: Callable[[RolloutKey, TemplateSource], TemplateSource] | None = None,
) -> Harness:
    """`wrap_templates` is what a composition root does to the rollout's TemplateSource
    (RolloutMetrics.template_source, for `analysis_template_*`)."""
    key = RolloutKey(namespace, name)
    router = router or MemoryRouter()
    workloads = MemoryWorkloads()
    store = store or MemoryStore()
    provider = ScriptedProvider(answer)

    async def read_secret(secret: str, _namespace: str | None) -> Mapping[str, str] | None:
        return (secrets or {}).get(secret)

    def arg_context(action: StartAnalysis) -> ArgContext:
        builtins = builtin_args(canary=action.revision, stable=action.stable_revision, namespace=namespace)
        reader = read_secret if secrets is not None else None
        return ArgContext(builtin_args=builtins, namespace=namespace, secret_reader=reader)

    controller = RolloutController(
        key,
        spec=spec,
        routers=[router],
        workloads=workloads,
        store=store,
        templates=wrap_templates(key, MemoryTemplates(templates))
        if wrap_templates
        else MemoryTemplates(templates),
        providers={provider.kind: provider},
        events=FanOutEvents([LogEvents(rollout=str(key)), *sinks]),
        arg_context=arg_context,
    )
    workloads.on_change = controller.poke
    return Harness(key, controller, router, workloads, store, provider, registry, extra_sinks=list(sinks))


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Harness]:
    """Register the controller and run it for the block; cancel it afterwards."""
    harness.registry.add(harness.controller)
    harness.registry.ready = True
    harness.task = asyncio.create_task(harness.controller.run(), name=f"rollout:{harness.key}")
    try:
        yield harness
    finally:
        harness.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await harness.task


async def release_until_paused(harness: Harness, step_index: int, revision: str = "v2") -> None:
    """Deploy `revision` once the stable is set up; wait until the rollout pauses at `step_index`."""
    await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
    harness.workloads.release(revision)
    await harness.wait_for(
        lambda: harness.state_is(step_index=step_index, phase="Paused"), what=f"the pause at {step_index}"
    )
