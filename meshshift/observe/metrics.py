"""The daemon's Prometheus metrics: Argo Rollouts' families, Flagger's, the tutorial's, ours.

Every per-rollout series is rendered at scrape time from the registry's snapshots, so a
rollout's series go the moment it leaves the RolloutRegistry. What a snapshot cannot tell
(reconcile timings, events, notifications, finished rollouts, API calls) is counted as it
happens, per rollout, and dropped with it. Argo's authority is `controller/metrics/*.go`
(and `utils/record/record.go`), Flagger's `pkg/metrics/recorder.go`; names, types, label
names, label values and buckets are theirs (tests/observe/test_metrics_conformance.py).

Argo Rollouts (`controller/metrics/`):
- `rollout_info{namespace,name,strategy,traffic_router,phase}` = 1, and
  `rollout_info_replicas_{available,unavailable,desired,updated}{namespace,name}`
- `rollout_phase{namespace,name,strategy,phase}` 0/1 per phase (deprecated in Argo)
- `rollout_reconcile{namespace,name}` histogram, `rollout_reconcile_error` counter
- `rollout_events_total{namespace,name,type,reason}`
- `rollout_duration_seconds`, `rollout_progression_duration_seconds`,
  `rollout_manual_pause_duration_seconds` histograms `{status}` of finished rollouts
- `analysis_run_info{namespace,name,phase}` = 1, `analysis_run_phase` 0/1 per phase (deprecated),
  `analysis_run_metric_type{...,metric,type}`, `analysis_run_metric_phase{...,metric,type,dry_run,phase}`
- `analysis_run_reconcile{namespace,name}` histogram, `analysis_run_reconcile_error` counter
- `analysis_template_info{namespace,name}`, `analysis_template_metric_info{namespace,name,type,metric}`
- `notification_send_success`, `notification_send_error{namespace,name,type,reason}` counters,
  `notification_send{namespace,name}` histogram
- `controller_clientset_k8s_request_total{kind,namespace,name,verb,status_code}` (Kubernetes mode)
- `argo_rollouts_controller_info{version}`, `build_info{version,goversion,goarch,commit}` = 1
- `process_*` from prometheus_client's collectors, with `python_*` where Go has `go_*`

The tutorial's names, with a `rollout` label: `argo_rollouts_info`, `argo_rollouts_phase`,
`argo_rollouts_analysis_run_phase`, `argo_rollouts_analysis_run_metric_phase`,
`argo_rollouts_rollout_duration_seconds` (a gauge: seconds of the current or last rollout).

Flagger (`pkg/metrics/recorder.go`): `flagger_info{version,mesh_provider}`,
`flagger_canary_total{namespace}`, `flagger_canary_status{name,namespace}` (0 progressing,
1 any other phase, 2 failed), `flagger_canary_weight{workload,namespace}` (`NAME` and
`NAME-primary`), `flagger_canary_metric_analysis{name,namespace,metric}` (last value),
`flagger_canary_duration_seconds{name,namespace}` histogram (Go's DefBuckets),
`flagger_canary_successes_total` / `flagger_canary_failures_total`
`{name,namespace,deployment_strategy,analysis_status}`.

Ours: `meshshift_rollout_step`, `meshshift_rollout_steps`, `meshshift_rollout_desired_weight`,
`meshshift_rollout_rollbacks_total` `{namespace,rollout}`, `meshshift_rollout_applied_weight`
`{namespace,rollout,router}`, `meshshift_analysis_metric_value{namespace,rollout,analysis_run,metric}`.

An analysis run's `name` label is `<rollout>-<run>`, as Argo names AnalysisRuns, so a
dashboard can tell whose run it is; the `analysis_run` label of the tutorial's and our
families carries the same value. Phases are mapped as `status.argo_phase` documents;
`dry_run` is `true`/`false`, as Argo prints it. Histograms and Argo's and Flagger's
lazily created counters appear with their first observation, as client_golang's vectors do.

meshshift's readings of Argo's definitions, where Argo measures something meshshift does
not have: an AnalysisRun reconcile is one measurement pass of a run (the measurements due
at once, taken in parallel; the longest is observed); an AnalysisRun reconcile error is a
pass with a measurement in Error, or a run that could not start. The templates of
`analysis_template_*` are the ones meshshift read for the rollouts it manages.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from meshshift import __version__
from meshshift.analysis.run import AnalysisRun, Measurement, MetricResult
from meshshift.engine.actions import EventType, RecordEvent
from meshshift.engine.state import RevisionRecord, RolloutPhase, RolloutState, Stage
from meshshift.observe.notifications import Notification, Receiver, notification_reason
from meshshift.observe.status import (
    ArgoPhase,
    actual_weight,
    argo_phase,
    completion_status,
    flagger_mesh_provider,
    flagger_strategy,
    numeric_value,
    provider_type,
    revision_weight,
    step_position,
    strategy,
    traffic_router,
)
from meshshift.ports import EventSink, TemplateSource
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import AnalysisPhase, AnalysisTemplate
from meshshift.spec.model import Metric as AnalysisMetric

log = structlog.get_logger(__name__)

# Buckets, from Argo's controller/metrics/{prommetrics,metrics}.go and Flagger's recorder.go.
RECONCILE_BUCKETS = (
    0.01,
    0.15,
    0.25,
    0.5,
    1.0,
)  # rollout_reconcile, analysis_run_reconcile, notification_send
DURATION_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
PROGRESSION_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
MANUAL_PAUSE_BUCKETS = (0.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
FLAGGER_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Go's DefBuckets
REPLICA_KINDS = ("available", "unavailable", "desired", "updated")
ANALYSIS_PHASES = tuple(AnalysisPhase)
# Argo's deprecated rollout_phase has one series per phase but InvalidSpec (rollouts.go).
ROLLOUT_PHASE_VALUES = tuple(p for p in ArgoPhase if p != ArgoPhase.INVALID_SPEC)
# ... and analysis_run_phase lists them in this order (analysis.go).
ANALYSIS_RUN_PHASE_VALUES = (
    AnalysisPhase.PENDING,
    AnalysisPhase.ERROR,
    AnalysisPhase.FAILED,
    AnalysisPhase.SUCCESSFUL,
    AnalysisPhase.RUNNING,
    AnalysisPhase.INCONCLUSIVE,
)
FLAGGER_ANALYSIS_COMPLETED, FLAGGER_ANALYSIS_SKIPPED = "completed", "skipped"

_NS_NAME = ("namespace", "name")
_NS_ROLLOUT = ("namespace", "rollout")
_FLAGGER_OUTCOME = ("name", "namespace", "deployment_strategy", "analysis_status")
STABLE_REVISIONS_KEPT = 16


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


class RequestCounts(Protocol):
    """API calls by (kind, namespace, name, verb, status_code): Kubernetes mode's KubeRequests."""

    def counts(self) -> Mapping[tuple[str, str, str, str, str], int]: ...


@dataclass
class _RunCounters:
    """One analysis run's reconciles, counted from the measurements its snapshots show."""

    reconcile: Histogram = field(default_factory=lambda: Histogram(RECONCILE_BUCKETS))
    errors: int = 0
    seen: set[tuple[str, float, float]] = field(default_factory=set)  # (metric, started, finished)
    failed_start: bool = False

    def copy(self) -> _RunCounters:
        return _RunCounters(self.reconcile.copy(), self.errors)


@dataclass
class _RolloutCounters:
    """What is counted per rollout as it happens; dropped when the rollout goes."""

    reconcile: Histogram = field(default_factory=lambda: Histogram(RECONCILE_BUCKETS))
    reconcile_errors: int = 0
    rollbacks: int = 0
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    notifications_sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    notifications_failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    notification_send: Histogram = field(default_factory=lambda: Histogram(RECONCILE_BUCKETS))
    flagger_duration: Histogram = field(default_factory=lambda: Histogram(FLAGGER_DURATION_BUCKETS))
    flagger_outcomes: Counter[tuple[str, str, str]] = field(
        default_factory=Counter
    )  # (kind, strategy, status)
    runs: dict[str, _RunCounters] = field(default_factory=dict)
    templates: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    last_reconcile: tuple[float, float] | None = None
    finished: set[tuple[str, float, str]] | None = None  # history records seen; None: none yet
    stables: list[str] = field(default_factory=list)  # stable revisions seen, for RolledBack
    version: int = 0  # bumped on every change: a scrape re-renders a rollout only when it moved

    def for_rendering(self) -> _RolloutCounters:
        """A copy of what a scrape shows (the bookkeeping of what was seen stays here)."""
        return _RolloutCounters(
            reconcile=self.reconcile.copy(),
            reconcile_errors=self.reconcile_errors,
            rollbacks=self.rollbacks,
            events=Counter(self.events),
            notifications_sent=Counter(self.notifications_sent),
            notifications_failed=Counter(self.notifications_failed),
            notification_send=self.notification_send.copy(),
            flagger_duration=self.flagger_duration.copy(),
            flagger_outcomes=Counter(self.flagger_outcomes),
            runs={name: run.copy() for name, run in self.runs.items()},
            templates=dict(self.templates),
            version=self.version,
        )


@dataclass
class _Durations:
    """Argo's three duration histograms of finished rollouts, one each per completion status."""

    total: dict[str, Histogram] = field(default_factory=dict)
    progression: dict[str, Histogram] = field(default_factory=dict)
    manual_pause: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, status: str, total: float, manual_pause: float) -> None:
        self.total.setdefault(status, Histogram(DURATION_BUCKETS)).observe(total)
        self.progression.setdefault(status, Histogram(PROGRESSION_BUCKETS)).observe(total - manual_pause)
        self.manual_pause.setdefault(status, Histogram(MANUAL_PAUSE_BUCKETS)).observe(manual_pause)

    def copy(self) -> _Durations:
        def each(histograms: dict[str, Histogram]) -> dict[str, Histogram]:
            return {status: h.copy() for status, h in histograms.items()}

        return _Durations(each(self.total), each(self.progression), each(self.manual_pause))


class RolloutMetrics(Collector):
    """A Collector over a RolloutRegistry; also the registry listener that counts."""

    def __init__(
        self,
        registry: RolloutRegistry,
        *,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
        kube_requests: RequestCounts | None = None,
    ) -> None:
        self.registry = registry
        self.version = version
        self.clock = clock
        self.kube_requests = kube_requests
        self.counters: dict[RolloutKey, _RolloutCounters] = {}
        self.durations = _Durations()
        self._lines = _RenderedLines()  # each rollout's sample lines, as last rendered
        registry.listeners.append(self.observe)

    def close(self) -> None:
        """Stop listening to the registry."""
        if self.observe in self.registry.listeners:
            self.registry.listeners.remove(self.observe)

    def event_sink(self, key: RolloutKey) -> EventSink:
        """An EventSink counting one rollout's events into `rollout_events_total`."""
        return _EventCounter(self, key)

    def template_source(self, key: RolloutKey, source: TemplateSource) -> TemplateSource:
        """`source`, noting each template it finds for `analysis_template_*`."""
        return _NotedTemplates(self, key, source)

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
        counters.version += 1
        # Each reconcile publishes once with fresh timings; registering publishes none.
        if snapshot.reconcile_seconds is not None:
            stamp = (snapshot.updated_at, snapshot.reconcile_seconds)
            if stamp != counters.last_reconcile:
                counters.last_reconcile = stamp
                counters.reconcile.observe(snapshot.reconcile_seconds)
                if snapshot.last_error is not None:
                    counters.reconcile_errors += 1
                if snapshot.state is not None and snapshot.state.in_rollout:
                    counters.flagger_duration.observe(
                        snapshot.reconcile_seconds
                    )  # a pass analysing the canary
        for run in snapshot.analysis_runs.values():
            _count_run(counters.runs.setdefault(run.name, _RunCounters()), run)
        for name in [n for n in counters.runs if n not in snapshot.analysis_runs]:
            del counters.runs[name]
        if snapshot.state is not None:
            self._count_finished(counters, snapshot.state, strategy(snapshot))

    def _count_finished(self, counters: _RolloutCounters, state: RolloutState, kind: str) -> None:
        stables_before = set(counters.stables)  # the stables seen before this state: RolledBack targets
        if state.stable_revision not in counters.stables:
            counters.stables = [*counters.stables, state.stable_revision][-STABLE_REVISIONS_KEPT:]
        if counters.finished is None:
            counters.finished = {_record_id(record) for record in state.history}  # finished before we watched
            return
        for index, record in enumerate(state.history):
            record_id = _record_id(record)
            if record_id in counters.finished:
                continue
            counters.finished.add(record_id)
            earlier = stables_before | {r.revision for r in state.history[:index] if r.outcome == "Promoted"}
            status = completion_status(record, earlier)
            if record.started_at is not None:
                total = max(0.0, record.finished_at - record.started_at)
                self.durations.observe(status, total, min(total, max(0.0, record.manual_pause_seconds)))
            if record.outcome == "Aborted":
                counters.rollbacks += 1
                counters.flagger_outcomes[
                    ("failures", flagger_strategy(kind), FLAGGER_ANALYSIS_COMPLETED)
                ] += 1
            elif record.outcome == "Promoted":
                analysis = FLAGGER_ANALYSIS_SKIPPED if record.full_promotion else FLAGGER_ANALYSIS_COMPLETED
                counters.flagger_outcomes[("successes", flagger_strategy(kind), analysis)] += 1

    def count_event(self, key: RolloutKey, event: RecordEvent) -> None:
        counters = self._live(key)
        if counters is not None:
            counters.events[(event.type.value, event.reason)] += 1
            counters.version += 1

    def count_notification(
        self, notification: Notification, receiver: Receiver, sent: bool, seconds: float
    ) -> None:
        """A Notifier listener: Argo's notification_send_* families."""
        counters = self._live(RolloutKey(notification.namespace, notification.name))
        if counters is None:
            return
        labels = (
            (EventType.WARNING if notification.warning else EventType.NORMAL).value,
            notification_reason(notification),
        )
        (counters.notifications_sent if sent else counters.notifications_failed)[labels] += 1
        counters.notification_send.observe(seconds)
        counters.version += 1

    def note_template(self, key: RolloutKey, template: AnalysisTemplate) -> None:
        counters = self._live(key)
        if counters is None:
            return
        namespace = "" if template.cluster_scope else key.namespace  # Argo's ClusterAnalysisTemplates
        metrics = tuple((provider_type(m), m.name) for m in template.metrics)
        counters.templates[(namespace, template.name)] = metrics
        counters.version += 1

    def _live(self, key: RolloutKey) -> _RolloutCounters | None:
        if key not in self.registry.snapshots:
            return None  # removed already (or never added): its series are gone
        counters = self.counters.get(key)
        if counters is None:  # not setdefault: building one per call was 4% of the daemon at scale
            counters = self.counters[key] = _RolloutCounters()
        return counters

    # --- rendering, at scrape time ----------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # series depend on the rollouts; nothing to check at registration

    def capture(self, *, reuse: bool = False) -> Capture:
        """What one scrape shows, taken at once on the event loop; rendering may then run anywhere.

        With `reuse`, a rollout whose snapshot and counters are those its rendered lines were
        made from gets no copy (None): `render_lines` reuses those lines.
        """
        empty = _RolloutCounters()
        rollouts: list[tuple[RolloutSnapshot, _RolloutCounters | None]] = []
        for snapshot in self.registry.list():
            live = self.counters.get(snapshot.key, empty)
            if reuse and self._lines.unchanged(snapshot, live.version):
                rollouts.append((snapshot, None))
            else:
                rollouts.append((snapshot, live.for_rendering()))
        requests = dict(self.kube_requests.counts()) if self.kube_requests is not None else {}
        return Capture(rollouts, self.durations.copy(), requests, self.clock())

    def collect(self) -> Iterator[Metric]:
        capture = _CAPTURES.get({}).get(id(self))
        if capture is not None:  # a scrape's render (render_off_loop): the incremental lines
            yield _PreRendered(self.render_lines(capture))
            return
        capture = self.capture()
        families = self._daemon_families(capture)
        for labels, count in sorted(capture.requests.items()):
            families.k8s_requests.add(labels, count)
        templates: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        for snapshot, counters in capture.rollouts:
            counters = (
                counters if counters is not None else self.counters.get(snapshot.key, _RolloutCounters())
            )
            _collect_rollout(families, snapshot, counters, capture.now)
            templates.update(counters.templates)
        _collect_templates(families, templates)
        yield from families.all()

    def _daemon_families(self, capture: Capture) -> _Families:
        """The families with the daemon's own series (the rollouts' are added to them)."""
        families = _Families()
        families.controller_info.add((self.version,), 1)
        families.build_info.add(build_info_values(self.version), 1)
        routers = {router for snapshot, _ in capture.rollouts for router in snapshot.routers}
        families.flagger_info.add((self.version, flagger_mesh_provider(routers)), 1)
        for name, histograms in (
            ("duration", capture.durations.total),
            ("progression", capture.durations.progression),
            ("manual_pause", capture.durations.manual_pause),
        ):
            family = getattr(families, name)
            for status, histogram in sorted(histograms.items()):
                family.add_histogram((status,), histogram)
        per_namespace = Counter(snapshot.key.namespace for snapshot, _ in capture.rollouts)
        for namespace, total in sorted(per_namespace.items()):
            families.flagger_total.add((namespace,), total)
        return families

    def render_lines(self, capture: Capture) -> list[str]:
        """The exposition of this collector, re-rendering only the rollouts that changed.

        A scrape of a thousand rollouts of which ten moved formats ten rollouts' series; the
        others' lines are those of the scrape before. (A rollout in progress shows its
        duration so far: it is rendered at every scrape.) The request counts reuse each
        series' line while its count stays.
        """
        families = self._daemon_families(capture)
        per_rollout: list[dict[str, list[str]]] = []
        templates: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        for snapshot, counters in capture.rollouts:
            lines = self._lines.get(snapshot, counters, capture.now)
            per_rollout.append(lines.by_family)
            templates.update(lines.templates)
        _collect_templates(families, templates)
        self._lines.forget_others(snapshot.key for snapshot, _ in capture.rollouts)
        requests = families.k8s_requests
        request_lines = self._lines.request_lines(capture.requests, requests.name, requests.labels)
        out: list[str] = []
        for metric in families.all():
            samples = [_sample_line(sample) for sample in metric.samples]
            if metric is requests.metric:
                samples = request_lines
            rollout_samples = [line for lines in per_rollout for line in lines.get(metric.name, ())]
            out.extend(_header(metric, [*samples, *rollout_samples]))
            out.extend(samples)
            out.extend(rollout_samples)
        return out


@dataclass
class _Rendered:
    snapshot: RolloutSnapshot
    version: int
    until: float | None  # the `now` it was rendered for, when its series depend on it
    by_family: dict[str, list[str]]
    templates: dict[tuple[str, str], tuple[tuple[str, str], ...]]


class _RenderedLines:
    """Each rollout's sample lines by family, and each request counter's line, kept between scrapes."""

    def __init__(self) -> None:
        self._rollouts: dict[RolloutKey, _Rendered] = {}
        self._requests: dict[tuple[str, ...], tuple[int, str]] = {}
        self._lock = threading.Lock()  # two scrapes at once render in two threads
        self.rendered = 0  # rollouts formatted (again), over all scrapes

    def unchanged(self, snapshot: RolloutSnapshot, version: int) -> bool:
        rendered = self._rollouts.get(snapshot.key)
        return (
            rendered is not None
            and rendered.snapshot is snapshot
            and rendered.version == version
            and rendered.until is None
        )

    def get(self, snapshot: RolloutSnapshot, counters: _RolloutCounters | None, now: float) -> _Rendered:
        with self._lock:
            rendered = self._rollouts.get(snapshot.key)
        if counters is None and rendered is not None and rendered.snapshot is snapshot:
            return rendered
        counters = counters if counters is not None else _RolloutCounters()
        families = _Families()
        _collect_rollout(families, snapshot, counters, now)
        self.rendered += 1
        by_family = {
            metric.name: [_sample_line(s) for s in metric.samples]
            for metric in families.all()
            if metric.samples
        }
        depends_on_now = snapshot.state is not None and snapshot.state.in_rollout
        rendered = _Rendered(snapshot, counters.version, now if depends_on_now else None, by_family,
                             dict(counters.templates))  # fmt: skip
        with self._lock:
            self._rollouts[snapshot.key] = rendered
        return rendered

    def forget_others(self, keys: Iterable[RolloutKey]) -> None:
        keep = set(keys)
        with self._lock:
            for key in [key for key in self._rollouts if key not in keep]:
                del self._rollouts[key]

    def request_lines(
        self, counts: Mapping[tuple[str, str, str, str, str], int], name: str, labels: Sequence[str]
    ) -> list[str]:
        lines = []
        with self._lock:
            known = self._requests
            fresh: dict[tuple[str, ...], tuple[int, str]] = {}
            for values, count in sorted(counts.items()):
                line = known.get(values)
                if line is None or line[0] != count:
                    text = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(labels, values, strict=True))
                    line = (count, f"{name}{{{text}}} {_go_float(count)}")
                fresh[values] = line
                lines.append(line[1])
            self._requests = fresh
        return lines


@dataclass(frozen=True, slots=True)
class Capture:
    # Each rollout's counters as copied for this scrape; None: unchanged since its lines were made.
    rollouts: list[tuple[RolloutSnapshot, _RolloutCounters | None]]
    durations: _Durations
    requests: dict[tuple[str, str, str, str, str], int]
    now: float


# Captures taken on the event loop for a render in a worker thread (asyncio.to_thread
# copies the context), keyed by the collector's id.
_CAPTURES: ContextVar[dict[int, Capture]] = ContextVar("meshshift_metrics_captures")


async def render_off_loop(registry: CollectorRegistry, collectors: Iterable[RolloutMetrics]) -> bytes:
    """`render` in a worker thread, from captures taken now: a scrape of many rollouts
    never holds up the controllers, and re-renders only the rollouts that changed."""
    context = contextvars.copy_context()  # the captures are this render's only, not the caller's
    context.run(_CAPTURES.set, {id(c): c.capture(reuse=True) for c in collectors})
    return await asyncio.to_thread(context.run, render, registry)


class _PreRendered(Metric):
    """A collector's exposition, already in text (RolloutMetrics.render_lines)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("meshshift_prerendered", "", "untyped")
        self.lines = lines


def _collect_templates(
    families: _Families, templates: Mapping[tuple[str, str], tuple[tuple[str, str], ...]]
) -> None:
    for (namespace, name), metrics in sorted(templates.items()):
        families.template_info.add((namespace, name), 1)
        for kind, metric in metrics:
            families.template_metric_info.add((namespace, name, kind, metric), 1)


def _header(family: Metric, sample_lines: Sequence[str]) -> list[str]:
    """`# HELP` and `# TYPE`: a counter whose samples end in `_total` is typed by that name."""
    type_name = family.name
    if family.type == "counter" and any(line.startswith(family.name + "_total") for line in sample_lines):
        type_name = family.name + "_total"
    kind = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}.get(family.type, family.type)
    help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return [f"# HELP {type_name} {help_text}", f"# TYPE {type_name} {kind}"]


def _sample_line(sample: Any) -> str:
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
    body = f"{sample.name}{{{labels}}}" if labels else sample.name
    return f"{body} {_go_float(sample.value)}"


def _record_id(record: RevisionRecord) -> tuple[str, float, str]:
    return (record.revision, record.finished_at, record.outcome)


def _count_run(counters: _RunCounters, run: AnalysisRun) -> None:
    """New measurements are one pass (or several, taken between two snapshots)."""
    if not run.metrics and run.phase == AnalysisPhase.ERROR and not counters.failed_start:
        counters.failed_start = True  # the run could not start (a missing template, a bad arg)
        counters.errors += 1
    new = [
        (result.name, m)
        for result in run.results
        for m in result.measurements
        if (result.name, m.started_at, m.finished_at) not in counters.seen
    ]
    if not new:
        return
    counters.seen.update((name, m.started_at, m.finished_at) for name, m in new)
    counters.reconcile.observe(max(max(0.0, m.finished_at - m.started_at) for _, m in new))
    if any(m.phase == AnalysisPhase.ERROR for _, m in new):
        counters.errors += 1


class _EventCounter:
    def __init__(self, metrics: RolloutMetrics, key: RolloutKey) -> None:
        self.metrics, self.key = metrics, key

    async def record(self, event: RecordEvent) -> None:
        self.metrics.count_event(self.key, event)


class _NotedTemplates:
    def __init__(self, metrics: RolloutMetrics, key: RolloutKey, source: TemplateSource) -> None:
        self.metrics, self.key, self.source = metrics, key, source

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        template = await self.source.get(name, cluster_scope=cluster_scope)
        if template is not None:
            self.metrics.note_template(self.key, template)
        return template


def build_info_values(version: str) -> tuple[str, str, str, str]:
    """Argo's build_info labels (version, goversion, goarch, commit), for a Python daemon:
    `goversion` is the interpreter (`python3.11.9`), `goarch` the machine in Go's words."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(machine, machine)
    return version, f"python{platform.python_version()}", arch, os.environ.get("MESHSHIFT_GIT_COMMIT", "")


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
        if histogram.count == 0:
            return  # client_golang shows a histogram's series from its first observation
        for upper, count in histogram.cumulative():
            self.add(values, count, suffix="_bucket", le=upper)
        self.add(values, histogram.count, suffix="_count")
        self.add(values, histogram.total, suffix="_sum")


class _Families:
    """Every family, built fresh for one scrape."""

    def __init__(self) -> None:
        gauge, counter, histogram = "gauge", "counter", "histogram"
        # --- Argo Rollouts: controller/metrics/prommetrics.go, metrics.go, client.go
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
            "Information on the state of the rollout (DEPRECATED - use rollout_info)",
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
            "Total wall-clock time for a rollout from start to completion/abort/supersede",
            histogram,
            ("status",),
        )
        self.progression = _Family(
            "rollout_progression_duration_seconds",
            "Active progression time for a rollout (excluding manual pause time)",
            histogram,
            ("status",),
        )
        self.manual_pause = _Family(
            "rollout_manual_pause_duration_seconds",
            "Time spent in manual pause waiting for human intervention",
            histogram,
            ("status",),
        )
        self.run_reconcile = _Family(
            "analysis_run_reconcile", "Analysis Run reconciliation performance.", histogram, _NS_NAME
        )
        self.run_reconcile_error = _Family(
            "analysis_run_reconcile_error", "Error occurring during the analysis run", counter, _NS_NAME
        )
        self.run_info = _Family(
            "analysis_run_info", "Information about analysis run.", gauge, (*_NS_NAME, "phase")
        )
        self.run_phase = _Family(
            "analysis_run_phase",
            "Information on the state of the Analysis Run (DEPRECATED - use analysis_run_info)",
            gauge,
            (*_NS_NAME, "phase"),
        )
        self.metric_type = _Family(
            "analysis_run_metric_type",
            "Information on the type of a specific metric in the Analysis Runs",
            gauge,
            (*_NS_NAME, "metric", "type"),
        )
        self.metric_phase = _Family(
            "analysis_run_metric_phase",
            "Information on the duration of a specific metric in the Analysis Run",
            gauge,
            (*_NS_NAME, "metric", "type", "dry_run", "phase"),
        )
        self.template_info = _Family(
            "analysis_template_info", "Information about analysis templates.", gauge, _NS_NAME
        )
        self.template_metric_info = _Family(
            "analysis_template_metric_info",
            "Information on metrics in analysis templates.",
            gauge,
            (*_NS_NAME, "type", "metric"),
        )
        self.notification_success = _Family(
            "notification_send_success", "Notification send success.", counter, (*_NS_NAME, "type", "reason")
        )
        self.notification_error = _Family(
            "notification_send_error",
            "Error sending the notification",
            counter,
            (*_NS_NAME, "type", "reason"),
        )
        self.notification_send = _Family(
            "notification_send", "Notification send performance.", histogram, _NS_NAME
        )
        self.k8s_requests = _Family(
            "controller_clientset_k8s_request_total",
            "Number of kubernetes requests executed during application reconciliation.",
            counter,
            ("kind", "namespace", "name", "verb", "status_code"),
        )
        self.controller_info = _Family(
            "argo_rollouts_controller_info", "Running Argo-rollouts version", gauge, ("version",)
        )
        self.build_info = _Family(
            "build_info",
            "A metric with a constant '1' value labeled by version from which Argo-Rollouts was built.",
            gauge,
            ("version", "goversion", "goarch", "commit"),
        )
        # --- the tutorial's names, with a `rollout` label
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
        # --- Flagger: pkg/metrics/recorder.go (subsystem "flagger")
        self.flagger_info = _Family(
            "flagger_info",
            "Flagger version and mesh provider information",
            gauge,
            ("version", "mesh_provider"),
        )
        self.flagger_total = _Family(
            "flagger_canary_total", "Total number of canary object", gauge, ("namespace",)
        )
        self.flagger_duration = _Family(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis.",
            histogram,
            ("name", "namespace"),
        )
        self.flagger_weight = _Family(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            gauge,
            ("workload", "namespace"),
        )
        self.flagger_status = _Family(
            "flagger_canary_status", "Last canary analysis result", gauge, ("name", "namespace")
        )
        self.flagger_analysis = _Family(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            gauge,
            ("name", "namespace", "metric"),
        )
        self.flagger_successes = _Family(
            "flagger_canary_successes_total", "Total number of canary successes", counter, _FLAGGER_OUTCOME
        )
        self.flagger_failures = _Family(
            "flagger_canary_failures_total", "Total number of canary failures", counter, _FLAGGER_OUTCOME
        )
        # --- meshshift's own
        self.step = _Family(
            "meshshift_rollout_step",
            "The step being run, 1-based; the step count once promoted, 0 after an abort.",
            gauge,
            _NS_ROLLOUT,
        )
        self.steps = _Family("meshshift_rollout_steps", "The number of canary steps.", gauge, _NS_ROLLOUT)
        self.desired_weight = _Family(
            "meshshift_rollout_desired_weight",
            "The newest revision's weight (percent) the engine asks for: the canary's during a "
            "rollout, 100 once promoted, 0 after a rollback.",
            gauge,
            _NS_ROLLOUT,
        )
        self.applied_weight = _Family(
            "meshshift_rollout_applied_weight",
            "The newest revision's weight (percent) each data plane reports it applies.",
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

    kind = strategy(snapshot)
    families.rollout_info.add((*ns_name, kind, router, phase.value), 1)
    families.argo_info.add((*ns_name, kind, router, phase.value), 1)
    for deprecated in ROLLOUT_PHASE_VALUES:
        families.rollout_phase.add((*ns_name, kind, deprecated.value), float(deprecated == phase))
    for candidate in ArgoPhase:
        families.argo_phase.add((*ns_name, kind, candidate.value), float(candidate == phase))
    if snapshot.workloads is not None:
        for kind, family in families.replicas.items():
            family.add(ns_name, snapshot.workloads.replicas.get(kind, 0))

    families.reconcile.add_histogram(ns_name, counters.reconcile)
    families.reconcile_error.add(ns_name, counters.reconcile_errors)
    for (event_type, reason), count in sorted(counters.events.items()):
        families.events.add((*ns_name, event_type, reason), count)
    for (event_type, reason), count in sorted(counters.notifications_sent.items()):
        families.notification_success.add((*ns_name, event_type, reason), count)
    for (event_type, reason), count in sorted(counters.notifications_failed.items()):
        families.notification_error.add((*ns_name, event_type, reason), count)
    families.notification_send.add_histogram(ns_name, counters.notification_send)
    families.rollbacks.add(ns_name, counters.rollbacks)

    position = step_position(snapshot)
    families.step.add(ns_name, position.current)
    families.steps.add(ns_name, position.total)
    desired = state.desired_weight if state is not None else 0
    # The newest revision's share, as Argo's SetWeight/ActualWeight count it: a promotion ends at
    # 100, a rollback at 0 (the canary destination is 0 after both).
    families.desired_weight.add(ns_name, revision_weight(snapshot, desired))
    for router_name, applied in sorted(snapshot.applied.items()):
        if applied.canary_weight is not None:
            weight = revision_weight(snapshot, applied.canary_weight)
            families.applied_weight.add((*ns_name, router_name), weight)
    canary = actual_weight(snapshot)
    families.flagger_weight.add((name, namespace), canary)
    families.flagger_weight.add((f"{name}-primary", namespace), 100 - canary)
    families.flagger_status.add((name, namespace), _flagger_status(state))
    families.flagger_duration.add_histogram((name, namespace), counters.flagger_duration)
    for (outcome, deployment_strategy, analysis), count in sorted(counters.flagger_outcomes.items()):
        family = families.flagger_successes if outcome == "successes" else families.flagger_failures
        family.add((name, namespace, deployment_strategy, analysis), count)
    duration = _rollout_duration(state, now)
    if duration is not None:
        families.argo_duration.add(ns_name, duration)
    _collect_analysis(families, snapshot, counters)


def _flagger_status(state: RolloutState | None) -> int:
    """Flagger's SetStatus: 0 while Progressing, 2 once Failed, 1 for every other phase
    (Initialized, WaitingPromotion, Promoting, Succeeded...)."""
    if state is None:
        return 1
    if state.phase == RolloutPhase.DEGRADED:
        return 2
    progressing = state.phase == RolloutPhase.PROGRESSING and state.stage in (
        Stage.STEPPING,
        Stage.FINALIZING,
    )
    return 0 if progressing else 1


def _rollout_duration(state: RolloutState | None, now: float) -> float | None:
    if state is None:
        return None
    if state.in_rollout and state.rollout_started_at is not None:
        return max(0.0, now - state.rollout_started_at)
    for record in reversed(state.history):
        if record.started_at is not None:
            return max(0.0, record.finished_at - record.started_at)
    return None


def _collect_analysis(families: _Families, snapshot: RolloutSnapshot, counters: _RolloutCounters) -> None:
    namespace, rollout = snapshot.key.namespace, snapshot.key.name
    newest: dict[str, tuple[float, float]] = {}  # metric -> (finished_at, value), for Flagger's gauge
    for run in sorted(snapshot.analysis_runs.values(), key=lambda r: (r.started_at, r.name)):
        run_name = analysis_run_name(snapshot.key, run.name)
        families.run_info.add((namespace, run_name, run.phase.value), 1)
        for candidate in ANALYSIS_RUN_PHASE_VALUES:
            families.run_phase.add((namespace, run_name, candidate.value), float(candidate == run.phase))
        for candidate in ANALYSIS_PHASES:
            families.argo_run_phase.add(
                (namespace, rollout, run_name, candidate.value), float(candidate == run.phase)
            )
        run_counters = counters.runs.get(run.name)
        if run_counters is not None:
            families.run_reconcile.add_histogram((namespace, run_name), run_counters.reconcile)
            families.run_reconcile_error.add((namespace, run_name), run_counters.errors)
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
        if isinstance(family, _PreRendered):
            lines.extend(family.lines)
            continue
        samples = [_sample_line(s) for s in family.samples if not s.name.endswith("_created")]
        lines.extend(_header(family, samples))
        lines.extend(samples)
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


def process_collectors() -> list[Collector]:
    """prometheus_client's default collectors: `process_*` (Argo's dashboard reads
    process_start_time_seconds), and `python_gc_*` / `python_info` where Go has `go_*`."""
    gc = GCCollector(registry=CollectorRegistry(auto_describe=False))  # it registers itself somewhere
    return [ProcessCollector(registry=None), PlatformCollector(registry=None), gc]


def metrics_registry(registry: RolloutRegistry) -> tuple[CollectorRegistry, RolloutMetrics]:
    """A CollectorRegistry serving a RolloutMetrics over `registry`, with the process collectors."""
    collectors = CollectorRegistry(auto_describe=False)
    metrics = RolloutMetrics(registry)
    collectors.register(metrics)
    for collector in process_collectors():
        collectors.register(collector)
    return collectors, metrics
