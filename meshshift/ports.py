"""The small interfaces between the runtime and the outside world.

Kubernetes mode and standalone mode differ only in which implementations of these
they plug in: `routers/` for Router, `kube/` or `standalone/` for Workloads and
StateStore, `analysis/providers/` for MetricProvider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from meshshift.analysis.run import AnalysisRun, Measurement
from meshshift.engine.actions import RecordEvent
from meshshift.engine.state import HeaderRoute, MirrorRoute, RolloutState
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisTemplate,
    CanaryScale,
    HeaderMatch,
    Metric,
    MirrorMatch,
)

# Set while a rollout works on a deadline it was given (a pause that ended, a retry that came
# due), not in answer to a change it saw. Adapters that queue calls (the Kubernetes client's
# connections) serve these first: when a thousand rollouts move at once, one rollout's reaction
# to its Deployments must not make another's pause last longer than asked.
ON_DEADLINE: ContextVar[bool] = ContextVar("meshshift_on_deadline", default=False)


@dataclass(frozen=True, slots=True)
class AppliedRoutes:
    """What a router reads back from its data plane after a write."""

    canary_weight: int | None  # None: the router could not tell
    header_routes: tuple[str, ...] = ()
    mirror_routes: tuple[str, ...] = ()
    preview: str | None = None  # standalone preview listener: "canary" or "stable"; None: none or unknown


@runtime_checkable
class Router(Protocol):
    """Owns the traffic split of one rollout on one data plane (Argo's TrafficRoutingReconciler)."""

    name: str

    async def set_weight(self, canary_weight: int) -> None: ...

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None: ...

    async def remove_header_route(self, name: str) -> None: ...

    async def set_mirror_route(
        self, name: str, match: Sequence[MirrorMatch], percentage: int | None
    ) -> None: ...

    async def remove_mirror_route(self, name: str) -> None: ...

    async def remove_managed_routes(self) -> None: ...

    async def set_managed_routes(
        self, header_routes: Sequence[HeaderRoute], mirror_routes: Sequence[MirrorRoute]
    ) -> None:
        """Make meshshift's header and mirror routes exactly these, in one write (no gap)."""
        ...

    async def read_back(self) -> AppliedRoutes: ...


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    revision: str  # what the user asks for
    stable_revision: str | None  # what the stable runs (None: no stable yet)
    stable_ready: bool
    canary_ready: bool
    images: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # "stable"/"canary" -> images
    replicas: Mapping[str, int] = field(default_factory=dict)  # desired, updated, available, unavailable
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # standalone: role -> host:port
    versions: Mapping[str, str] = field(default_factory=dict)  # standalone: role -> its `version` label


class Workloads(Protocol):
    """The stable and canary versions of one rollout (Deployments, or endpoint sets)."""

    async def observe(self) -> WorkloadStatus: ...

    async def promote(self, revision: str) -> None: ...

    async def scale_canary(self, scale: CanaryScale, traffic_weight: int) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredRollout:
    """Everything a rollout persists: the engine's state and its analysis runs."""

    rollout: RolloutState
    analysis_runs: Mapping[str, AnalysisRun] = field(default_factory=dict)


class StateStoreError(RuntimeError):
    """The state cannot be saved where it lives (the message names where and why). The rollout
    does nothing it could not record: it shows as Degraded and the daemon as not ready until a
    save succeeds again."""


class StateStore(Protocol):
    async def load(self) -> StoredRollout | None: ...

    async def save(self, stored: StoredRollout) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderResult:
    value: Any  # a number, a list of numbers, or a JSON value
    query: str  # the query as sent, placeholders resolved
    # A provider that decides the phase itself (as Argo's Job and Kayenta providers do) sets
    # it; the metric's conditions, if it has any, still have the last word on a completed one.
    phase: AnalysisPhase | None = None
    message: str = ""
    # phase RUNNING: the measurement is in progress; resume it after this many seconds, and
    # complete it as `stop_phase` if the run stops before that. `metadata` is handed back.
    resume_after: float | None = None
    stop_phase: AnalysisPhase | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class ProviderError(Exception):
    """A measurement could not be taken; it becomes an Error measurement with this message."""


# (secret name, namespace or None for meshshift's own) -> the Secret's data, or None.
SecretReader = Callable[[str, str | None], Awaitable[Mapping[str, str] | None]]


@dataclass(frozen=True, slots=True)
class MeasureContext:
    """What a provider may need beyond the metric: resolved args, where we run, Secrets."""

    args: Mapping[str, str]
    namespace: str | None = None
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # already read
    secret_reader: SecretReader | None = None  # reads the others (Kubernetes mode)
    in_progress: Measurement | None = None  # the metric's Running measurement, to resume
    # A backtest's measurement: evaluate the query as of this Unix time, from the metrics
    # store's history. None (every live rollout): now. Only providers that are
    # HistoricalProviders accept it; the others refuse it with a ProviderError.
    evaluation_time: float | None = None


class MetricProvider(Protocol):
    """Takes one measurement of one metric (Argo's metric provider)."""

    kind: str

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult: ...


@runtime_checkable
class HistoricalProvider(Protocol):
    """A MetricProvider that can also measure as of a past time (`MeasureContext.evaluation_time`),
    for `meshshift analyze --from/--to`: Prometheus (`time=`), Datadog and New Relic (time ranges)."""

    kind: str

    def history_refusal(self, metric: Metric) -> str | None:
        """None when `metric` can be measured at a past time; otherwise why not (a sentence)."""
        ...

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult: ...


class TemplateSource(Protocol):
    """Finds AnalysisTemplates by name (cluster objects, inline templates, builtins)."""

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None: ...


class EventSink(Protocol):
    """Where the engine's RecordEvent actions go: Kubernetes Events, logs, notifications."""

    async def record(self, event: RecordEvent) -> None: ...
