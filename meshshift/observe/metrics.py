"""The daemon's Prometheus metrics: Argo Rollouts' names, the tutorial's, Flagger's, ours.

Every per-rollout series is rendered at scrape time from the registry's snapshots, so a
rollout's series go the moment it leaves the RolloutRegistry. The few things a snapshot
cannot tell (reconcile timings, events, finished rollouts) are counted as they happen,
per rollout, and dropped with it.

| family (labels)                                                        | from |
|------------------------------------------------------------------------|------|
| `rollout_info{namespace,name,strategy,traffic_router,phase}` = 1       | Argo |
| `rollout_info_replicas_{available,unavailable,desired,updated}{namespace,name}` | Argo |
| `rollout_phase{namespace,name,strategy,phase}` 0/1, one per phase      | Argo |
| `rollout_reconcile{namespace,name}` histogram (0.01 .. 1 s)            | Argo |
| `rollout_reconcile_error{namespace,name}` counter                      | Argo |
| `rollout_events_total{namespace,name,type,reason}`                     | Argo |
| `rollout_duration_seconds{status}` histogram of finished rollouts      | DESIGN §4 |
| `analysis_run_info{namespace,name,phase}` = 1                          | Argo |
| `analysis_run_metric_type{namespace,name,metric,type}` = 1             | Argo |
| `analysis_run_metric_phase{namespace,name,metric,type,dry_run,phase}`  | Argo |
| `argo_rollouts_controller_info{version}` = 1                           | Argo |
| `argo_rollouts_info{namespace,rollout,strategy,traffic_router,phase}`  | tutorial |
| `argo_rollouts_phase{namespace,rollout,strategy,phase}` 0/1            | tutorial |
| `argo_rollouts_analysis_run_phase{namespace,rollout,analysis_run,phase}` 0/1 | tutorial |
| `argo_rollouts_analysis_run_metric_phase{namespace,rollout,analysis_run,metric,type,dry_run,phase}` | tut. |
| `argo_rollouts_rollout_duration_seconds{namespace,rollout}` gauge      | tutorial |
| `flagger_canary_weight{workload,namespace}` (`NAME` and `NAME-primary`) | Flagger |
| `flagger_canary_status{name,namespace}` 0 running, 1 done, 2 failed    | Flagger |
| `flagger_canary_metric_analysis{name,namespace,metric}` last value     | Flagger |
| `meshshift_rollout_step{namespace,rollout}`, `meshshift_rollout_steps{...}` | ours |
| `meshshift_rollout_desired_weight{namespace,rollout}`                  | ours |
| `meshshift_rollout_applied_weight{namespace,rollout,router}`           | ours |
| `meshshift_rollout_rollbacks_total{namespace,rollout}`                 | ours |
| `meshshift_analysis_metric_value{namespace,rollout,analysis_run,metric}` | ours |

An analysis run's `name` label is `<rollout>-<run>`, as Argo names AnalysisRuns, so a
dashboard can tell whose run it is; the `analysis_run` label of the tutorial's and our
families carries the same value. Phases are mapped as `status.argo_phase` documents;
`dry_run` is `true`/`false`, as Argo prints it. `rollout_duration_seconds{status}`
counts rollouts by how they ended: Promoted, Aborted, Superseded, Undone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from meshshift import __version__
from meshshift.analysis.run import AnalysisRun, Measurement, MetricResult
from meshshift.engine.actions import RecordEvent
from meshshift.engine.state import RevisionRecord, RolloutPhase, RolloutState
from meshshift.observe.status import (
    STRATEGY,
    ArgoPhase,
    actual_weight,
    argo_phase,
    numeric_value,
    provider_type,
    step_position,
    traffic_router,
)
from meshshift.ports import EventSink
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import AnalysisPhase
from meshshift.spec.model import Metric as AnalysisMetric

log = structlog.get_logger(__name__)

RECONCILE_BUCKETS = (0.01, 0.15, 0.25, 0.5, 1.0)  # Argo's
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
OUTCOMES = ("Promoted", "Aborted", "Superseded", "Undone")  # RevisionRecord.outcome
REPLICA_KINDS = ("available", "unavailable", "desired", "updated")
ANALYSIS_PHASES = tuple(AnalysisPhase)

_NS_NAME = ("namespace", "name")
_NS_ROLLOUT = ("namespace", "rollout")


@dataclass
class Histogram:
    """A plain cumulative histogram we can render as one family's samples."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; +Inf last
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        index = next((i for i, upper in enumerate(self.buckets) if value <= upper), len(self.buckets))
        self.counts[index] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.buckets, list(self.counts), self.total, self.count)

    def cumulative(self) -> Iterator[tuple[str, int]]:
        running = 0
        for upper, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            yield _go_float(upper), running


@dataclass
class _RolloutCounters:
    """What is counted per rollout as it happens; dropped when the rollout goes."""

    reconcile: Histogram = field(default_factory=lambda: Histogram(RECONCILE_BUCKETS))
    reconcile_errors: int = 0
    rollbacks: int = 0
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_reconcile: tuple[float, float] | None = None
    finished: set[tuple[str, float, str]] | None = None  # history records seen; None: none yet

    def for_rendering(self) -> _RolloutCounters:
        """A copy of what a scrape shows (the bookkeeping of what was seen stays here)."""
        return _RolloutCounters(
            self.reconcile.copy(), self.reconcile_errors, self.rollbacks, Counter(self.events)
        )


class _Family:
    """Builds one metric family: a fixed label set, samples added by value."""

    def __init__(self, name: str, documentation: str, kind: str, labels: Sequence[str]) -> None:
        self.metric = Metric(name, documentation, kind)
        self.name = name
        self.labels = tuple(labels)

    def add(self, values: Sequence[str], value: float, *, suffix: str = "", **extra: str) -> None:
        labels = dict(zip(self.labels, values, strict=True))
        labels.update(extra)
        self.metric.add_sample(self.name + suffix, labels, value)

    def add_histogram(self, values: Sequence[str], histogram: Histogram) -> None:
        for upper, count in histogram.cumulative():
            self.add(values, count, suffix="_bucket", le=upper)
        self.add(values, histogram.count, suffix="_count")
        self.add(values, histogram.total, suffix="_sum")


class RolloutMetrics(Collector):
    """A Collector over a RolloutRegistry; also the registry listener that counts."""

    def __init__(
        self,
        registry: RolloutRegistry,
        *,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.version = version
        self.clock = clock
        self.counters: dict[RolloutKey, _RolloutCounters] = {}
        self.durations = {outcome: Histogram(DURATION_BUCKETS) for outcome in OUTCOMES}
        registry.listeners.append(self.observe)

    def close(self) -> None:
        """Stop listening to the registry."""
        if self.observe in self.registry.listeners:
            self.registry.listeners.remove(self.observe)

    def event_sink(self, key: RolloutKey) -> EventSink:
        """An EventSink counting one rollout's events into `rollout_events_total`."""
        return _EventCounter(self, key)

    # --- counting, as snapshots arrive ---------------------------------------------

    def observe(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        try:
            self._observe(key, snapshot)
        except Exception:  # a bug here must never reach the controller that published
            log.exception("cannot count metrics", rollout=str(key))

    def _observe(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        if snapshot is None:
            self.counters.pop(key, None)
            return
        counters = self.counters.setdefault(key, _RolloutCounters())
        # Each reconcile publishes once with fresh timings; registering publishes none.
        if snapshot.reconcile_seconds is not None:
            stamp = (snapshot.updated_at, snapshot.reconcile_seconds)
            if stamp != counters.last_reconcile:
                counters.last_reconcile = stamp
                counters.reconcile.observe(snapshot.reconcile_seconds)
                if snapshot.last_error is not None:
                    counters.reconcile_errors += 1
        if snapshot.state is not None:
            self._count_finished(counters, snapshot.state)

    def _count_finished(self, counters: _RolloutCounters, state: RolloutState) -> None:
        records = {_record_id(record): record for record in state.history}
        if counters.finished is None:
            counters.finished = set(records)  # finished before we were watching
            return
        for record_id, record in records.items():
            if record_id in counters.finished:
                continue
            counters.finished.add(record_id)
            if record.started_at is not None:
                histogram = self.durations.setdefault(record.outcome, Histogram(DURATION_BUCKETS))
                histogram.observe(max(0.0, record.finished_at - record.started_at))
            if record.outcome == "Aborted":
                counters.rollbacks += 1

    def count_event(self, key: RolloutKey, event: RecordEvent) -> None:
        if key not in self.registry.snapshots:
            return  # removed already (or never added): its series are gone
        counters = self.counters.setdefault(key, _RolloutCounters())
        counters.events[(event.type.value, event.reason)] += 1

    # --- rendering, at scrape time ----------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # series depend on the rollouts; nothing to check at registration

    def capture(self) -> Capture:
        """What one scrape shows, taken at once on the event loop; rendering may then run anywhere."""
        empty = _RolloutCounters()
        rollouts = [
            (snapshot, self.counters.get(snapshot.key, empty).for_rendering())
            for snapshot in self.registry.list()
        ]
        durations = {outcome: histogram.copy() for outcome, histogram in self.durations.items()}
        return Capture(rollouts, durations, self.clock())

    def collect(self) -> Iterator[Metric]:
        capture = _CAPTURES.get({}).get(id(self)) or self.capture()
        families = _Families()
        families.controller_info.add((self.version,), 1)
        for outcome, histogram in sorted(capture.durations.items()):
            families.duration.add_histogram((outcome,), histogram)
        for snapshot, counters in capture.rollouts:
            _collect_rollout(families, snapshot, counters, capture.now)
        yield from families.all()


@dataclass(frozen=True, slots=True)
class Capture:
    rollouts: list[tuple[RolloutSnapshot, _RolloutCounters]]
    durations: dict[str, Histogram]
    now: float


# Captures taken on the event loop for a render in a worker thread (asyncio.to_thread
# copies the context), keyed by the collector's id.
_CAPTURES: ContextVar[dict[int, Capture]] = ContextVar("meshshift_metrics_captures")


async def render_off_loop(registry: CollectorRegistry, collectors: Iterable[RolloutMetrics]) -> bytes:
    """`render` in a worker thread, from captures taken now: a scrape of many rollouts
    never holds up the controllers."""
    _CAPTURES.set({id(c): c.capture() for c in collectors})
    return await asyncio.to_thread(render, registry)


def _record_id(record: RevisionRecord) -> tuple[str, float, str]:
    return (record.revision, record.finished_at, record.outcome)


class _EventCounter:
    def __init__(self, metrics: RolloutMetrics, key: RolloutKey) -> None:
        self.metrics, self.key = metrics, key

    async def record(self, event: RecordEvent) -> None:
        self.metrics.count_event(self.key, event)


class _Families:
    """Every family, built fresh for one scrape."""

    def __init__(self) -> None:
        gauge, counter, histogram = "gauge", "counter", "histogram"
        self.rollout_info = _Family(
            "rollout_info",
            "Information about rollout.",
            gauge,
            (*_NS_NAME, "strategy", "traffic_router", "phase"),
        )
        self.replicas = {
            kind: _Family(
                f"rollout_info_replicas_{kind}",
                f"The number of {kind} replicas per rollout.",
                gauge,
                _NS_NAME,
            )
            for kind in REPLICA_KINDS
        }
        self.rollout_phase = _Family(
            "rollout_phase",
            "Information on the state of the rollout (one series per phase, 1 for the current one).",
            gauge,
            (*_NS_NAME, "strategy", "phase"),
        )
        self.reconcile = _Family(
            "rollout_reconcile", "Rollout reconciliation performance.", histogram, _NS_NAME
        )
        self.reconcile_error = _Family(
            "rollout_reconcile_error", "Error occurring during the rollout", counter, _NS_NAME
        )
        self.events = _Family(
            "rollout_events_total", "Count of rollout events", counter, (*_NS_NAME, "type", "reason")
        )
        self.duration = _Family(
            "rollout_duration_seconds",
            "How long finished rollouts took, by how they ended (Promoted, Aborted, Superseded, Undone).",
            histogram,
            ("status",),
        )
        self.run_info = _Family(
            "analysis_run_info", "Information about analysis run.", gauge, (*_NS_NAME, "phase")
        )
        self.metric_type = _Family(
            "analysis_run_metric_type",
            "Information on the type of a specific metric in the Analysis Runs",
            gauge,
            (*_NS_NAME, "metric", "type"),
        )
        self.metric_phase = _Family(
            "analysis_run_metric_phase",
            "Information on the phase of a specific metric in the Analysis Run (1 for the current phase).",
            gauge,
            (*_NS_NAME, "metric", "type", "dry_run", "phase"),
        )
        self.controller_info = _Family(
            "argo_rollouts_controller_info",
            "Running meshshift version (Argo-compatible name)",
            gauge,
            ("version",),
        )
        self.argo_info = _Family(
            "argo_rollouts_info",
            "Information about rollout (the tutorial's name, with a rollout label).",
            gauge,
            (*_NS_ROLLOUT, "strategy", "traffic_router", "phase"),
        )
        self.argo_phase = _Family(
            "argo_rollouts_phase",
            "The rollout's phase, one series per phase, 1 for the current one.",
            gauge,
            (*_NS_ROLLOUT, "strategy", "phase"),
        )
        self.argo_run_phase = _Family(
            "argo_rollouts_analysis_run_phase",
            "The phase of each analysis run of a rollout, one series per phase, 1 for the current one.",
            gauge,
            (*_NS_ROLLOUT, "analysis_run", "phase"),
        )
        self.argo_metric_phase = _Family(
            "argo_rollouts_analysis_run_metric_phase",
            "The phase of each analysis metric of a rollout, one series per phase, 1 for the current one.",
            gauge,
            (*_NS_ROLLOUT, "analysis_run", "metric", "type", "dry_run", "phase"),
        )
        self.argo_duration = _Family(
            "argo_rollouts_rollout_duration_seconds",
            "Seconds since the current rollout started, or how long the last one took.",
            gauge,
            _NS_ROLLOUT,
        )
        self.flagger_weight = _Family(
            "flagger_canary_weight",
            "The canary (NAME) and primary (NAME-primary) traffic weights.",
            gauge,
            ("workload", "namespace"),
        )
        self.flagger_status = _Family(
            "flagger_canary_status",
            "Last canary analysis result: 0 running, 1 successful, 2 failed.",
            gauge,
            ("name", "namespace"),
        )
        self.flagger_analysis = _Family(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric (the newest measured value).",
            gauge,
            ("name", "namespace", "metric"),
        )
        self.step = _Family(
            "meshshift_rollout_step",
            "The step being run, 1-based; the step count once promoted, 0 after an abort.",
            gauge,
            _NS_ROLLOUT,
        )
        self.steps = _Family("meshshift_rollout_steps", "The number of canary steps.", gauge, _NS_ROLLOUT)
        self.desired_weight = _Family(
            "meshshift_rollout_desired_weight",
            "The canary weight (percent) the engine asks for.",
            gauge,
            _NS_ROLLOUT,
        )
        self.applied_weight = _Family(
            "meshshift_rollout_applied_weight",
            "The canary weight (percent) each data plane reports it applies.",
            gauge,
            (*_NS_ROLLOUT, "router"),
        )
        self.rollbacks = _Family(
            "meshshift_rollout_rollbacks_total",
            "Rollouts aborted (all traffic back to the stable) since the daemon started.",
            counter,
            _NS_ROLLOUT,
        )
        self.metric_value = _Family(
            "meshshift_analysis_metric_value",
            "The last measured value of each analysis metric (result[0] for a vector).",
            gauge,
            (*_NS_ROLLOUT, "analysis_run", "metric"),
        )

    def all(self) -> Iterator[Metric]:
        for value in vars(self).values():
            if isinstance(value, _Family):
                yield value.metric
            elif isinstance(value, dict):
                yield from (family.metric for family in value.values())


def _collect_rollout(
    families: _Families, snapshot: RolloutSnapshot, counters: _RolloutCounters, now: float
) -> None:
    namespace, name = snapshot.key.namespace, snapshot.key.name
    ns_name = (namespace, name)
    phase = argo_phase(snapshot)
    router = traffic_router(snapshot)
    state = snapshot.state

    families.rollout_info.add((*ns_name, STRATEGY, router, phase.value), 1)
    families.argo_info.add((*ns_name, STRATEGY, router, phase.value), 1)
    for candidate in ArgoPhase:
        current = float(candidate == phase)
        families.rollout_phase.add((*ns_name, STRATEGY, candidate.value), current)
        families.argo_phase.add((*ns_name, STRATEGY, candidate.value), current)
    if snapshot.workloads is not None:
        for kind, family in families.replicas.items():
            family.add(ns_name, snapshot.workloads.replicas.get(kind, 0))

    families.reconcile.add_histogram(ns_name, counters.reconcile)
    families.reconcile_error.add(ns_name, counters.reconcile_errors)
    for (event_type, reason), count in sorted(counters.events.items()):
        families.events.add((*ns_name, event_type, reason), count)
    families.rollbacks.add(ns_name, counters.rollbacks)

    position = step_position(snapshot)
    families.step.add(ns_name, position.current)
    families.steps.add(ns_name, position.total)
    desired = state.desired_weight if state is not None else 0
    families.desired_weight.add(ns_name, desired)
    for router_name, applied in sorted(snapshot.applied.items()):
        if applied.canary_weight is not None:
            families.applied_weight.add((*ns_name, router_name), applied.canary_weight)
    canary = actual_weight(snapshot)
    families.flagger_weight.add((name, namespace), canary)
    families.flagger_weight.add((f"{name}-primary", namespace), 100 - canary)
    families.flagger_status.add((name, namespace), _flagger_status(state))
    duration = _rollout_duration(state, now)
    if duration is not None:
        families.argo_duration.add(ns_name, duration)
    _collect_analysis(families, snapshot)


def _flagger_status(state: RolloutState | None) -> int:
    if state is None:
        return 0
    if state.phase == RolloutPhase.DEGRADED:
        return 2
    return 0 if state.in_rollout else 1


def _rollout_duration(state: RolloutState | None, now: float) -> float | None:
    if state is None:
        return None
    if state.in_rollout and state.rollout_started_at is not None:
        return max(0.0, now - state.rollout_started_at)
    for record in reversed(state.history):
        if record.started_at is not None:
            return max(0.0, record.finished_at - record.started_at)
    return None


def _collect_analysis(families: _Families, snapshot: RolloutSnapshot) -> None:
    namespace, rollout = snapshot.key.namespace, snapshot.key.name
    newest: dict[str, tuple[float, float]] = {}  # metric -> (finished_at, value), for Flagger's gauge
    for run in sorted(snapshot.analysis_runs.values(), key=lambda r: (r.started_at, r.name)):
        run_name = analysis_run_name(snapshot.key, run.name)
        families.run_info.add((namespace, run_name, run.phase.value), 1)
        for candidate in ANALYSIS_PHASES:
            families.argo_run_phase.add(
                (namespace, rollout, run_name, candidate.value), float(candidate == run.phase)
            )
        for metric, result in _metric_results(run):
            kind = provider_type(metric)
            dry_run = "true" if result.dry_run else "false"
            families.metric_type.add((namespace, run_name, metric.name, kind), 1)
            for candidate in ANALYSIS_PHASES:
                current = float(candidate == result.phase)
                families.metric_phase.add(
                    (namespace, run_name, metric.name, kind, dry_run, candidate.value), current
                )
                families.argo_metric_phase.add(
                    (namespace, rollout, run_name, metric.name, kind, dry_run, candidate.value), current
                )
            last = _last_value(result.measurements)
            if last is not None:
                finished_at, value = last
                families.metric_value.add((namespace, rollout, run_name, metric.name), value)
                if metric.name not in newest or newest[metric.name][0] <= finished_at:
                    newest[metric.name] = last
    for metric_name, (_, value) in sorted(newest.items()):
        families.flagger_analysis.add((rollout, namespace, metric_name), value)


def analysis_run_name(key: RolloutKey, run_name: str) -> str:
    """The name an analysis run goes by in metrics: `<rollout>-<run>`, as Argo names them."""
    return f"{key.name}-{run_name}"


def _metric_results(run: AnalysisRun) -> Iterator[tuple[AnalysisMetric, MetricResult]]:
    results = {result.name: result for result in run.results}
    for metric in run.metrics:
        result = results.get(metric.name)
        if result is not None:
            yield metric, result


def _last_value(measurements: Sequence[Measurement]) -> tuple[float, float] | None:
    for measurement in reversed(measurements):
        value = numeric_value(measurement.value)
        if value is not None:
            return measurement.finished_at, value
    return None


# --- exposition ---------------------------------------------------------------------

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format, keeping every sample name exactly as collected.

    prometheus_client's generate_latest() names every counter family `<name>_total`;
    Argo's `rollout_reconcile_error` counter has no such suffix, so we render ourselves.
    """
    lines: list[str] = []
    for family in registry.collect():
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        type_name = family.name
        if family.type == "counter" and any(s.name == family.name + "_total" for s in samples):
            type_name = family.name + "_total"
        kind = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}.get(family.type, family.type)
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {type_name} {help_text}")
        lines.append(f"# TYPE {type_name} {kind}")
        for sample in samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            body = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{body} {_go_float(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _go_float(value: float) -> str:
    """A float as Go's strconv.FormatFloat(v, 'g', -1) writes it: `1`, `0.15`, `+Inf`."""
    if value == 0 or value == 1:
        return "1" if value else "0"  # most samples: one-hot phases and info series
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def metrics_registry(registry: RolloutRegistry) -> tuple[CollectorRegistry, RolloutMetrics]:
    """A CollectorRegistry serving a RolloutMetrics over `registry`."""
    collectors = CollectorRegistry(auto_describe=False)
    metrics = RolloutMetrics(registry)
    collectors.register(metrics)
    return collectors, metrics
