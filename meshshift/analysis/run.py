"""The bookkeeping of one analysis run: which metric is due when, and what it adds up to.

Pure, like the engine: it is handed `now`, keeps its own state as a frozen value, and
never calls a provider. The runtime asks `due_metrics(run, now)`, measures those, and
feeds each result back through `record_measurement`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshshift.analysis.expr.values import PatternError, compile_pattern
from meshshift.analysis.phases import MetricCounts, metric_phase, run_phase
from meshshift.spec.model import AnalysisPhase, MeasurementRetention, Metric

# Argo's DefaultErrorRetryInterval: an errored measurement is retried after this long (or after
# the metric's interval when that is shorter), so the default consecutiveErrorLimit of 4 ends a
# metric whose provider is down within about 50 s, whatever its interval.
ERROR_RETRY_INTERVAL = 10.0
# Argo's DefaultMeasurementHistoryLimit.
DEFAULT_MEASUREMENT_RETENTION = 10


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement. A Running one is in progress (Argo's in-flight measurement, as a Job's
    or the sequential judge's): it is resumed at `resume_at` and replaced by each update, until
    its provider completes it; `finished_at` is then its last update. If the run stops first,
    it completes as `stop_phase` (what its provider said it would be at that moment)."""

    phase: AnalysisPhase
    started_at: float
    finished_at: float
    value: Any = None
    message: str = ""
    query: str = ""  # the resolved query, as sent to the provider
    resume_at: float | None = None  # Running only: when to take it up again
    stop_phase: AnalysisPhase | None = None  # Running only: its phase if the run stops now
    metadata: Mapping[str, str] = field(default_factory=dict)  # the provider's, for resuming


@dataclass(frozen=True, slots=True)
class MetricResult:
    name: str
    dry_run: bool = False
    retention: int = DEFAULT_MEASUREMENT_RETENTION
    phase: AnalysisPhase = AnalysisPhase.PENDING
    message: str = ""
    counts: MetricCounts = field(default_factory=MetricCounts)
    measurements: tuple[Measurement, ...] = ()  # the newest `retention` ones
    last_finished_at: float | None = None
    last_phase: AnalysisPhase | None = None


@dataclass(frozen=True, slots=True)
class AnalysisRun:
    name: str
    metrics: tuple[Metric, ...]
    args: Mapping[str, str]
    results: tuple[MetricResult, ...]
    started_at: float
    phase: AnalysisPhase = AnalysisPhase.PENDING
    message: str = ""
    terminated: bool = False

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def result(self, name: str) -> MetricResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)


def _matches(pattern: str, name: str) -> bool:
    """Argo's rule for dryRun and measurementRetention: `metricName` is a regular expression found in
    the metric name (`.*`, `total-.*`). `*`, which is no regular expression, is kept meaning every
    metric (lint reports it); another invalid pattern matches nothing, as in Argo."""
    if pattern in ("*", name):
        return True
    try:
        return compile_pattern(pattern).search(name) is not None
    except PatternError:
        return False


def start_run(
    name: str,
    metrics: Sequence[Metric],
    *,
    args: Mapping[str, str],
    now: float,
    dry_run: Collection[str] = (),
    retention: Sequence[MeasurementRetention] = (),
) -> AnalysisRun:
    results = []
    for metric in metrics:
        limit = DEFAULT_MEASUREMENT_RETENTION
        for rule in retention:
            if _matches(rule.metric_name, metric.name):
                # `limit: 0` (or no limit) means the default, as Argo's zero value does.
                limit = rule.limit if rule.limit > 0 else DEFAULT_MEASUREMENT_RETENTION
        is_dry = any(_matches(pattern, metric.name) for pattern in dry_run)
        results.append(MetricResult(name=metric.name, dry_run=is_dry, retention=limit))
    run = AnalysisRun(
        name=name, metrics=tuple(metrics), args=dict(args), results=tuple(results), started_at=now
    )
    return _reassess(run)


def in_progress(result: MetricResult) -> Measurement | None:
    """The metric's Running measurement, if it has one."""
    last = result.measurements[-1] if result.measurements else None
    return last if last is not None and last.phase == AnalysisPhase.RUNNING else None


def _due_at(run: AnalysisRun, metric: Metric, result: MetricResult) -> float | None:
    """When this metric's next measurement is due; None when it takes no more."""
    if run.terminated or run.phase.completed or result.phase.completed:
        return None
    running = in_progress(result)
    if running is not None:
        return running.resume_at if running.resume_at is not None else running.finished_at
    if result.last_finished_at is None:
        return run.started_at + (metric.initial_delay or 0.0)
    effective_count = metric.effective_count
    if effective_count is not None and result.counts.count >= effective_count:
        return None
    if result.last_phase == AnalysisPhase.ERROR:
        retry = (
            ERROR_RETRY_INTERVAL if metric.interval is None else min(ERROR_RETRY_INTERVAL, metric.interval)
        )
        return result.last_finished_at + retry
    if metric.interval is not None:
        return result.last_finished_at + metric.interval
    return None


def due_metrics(run: AnalysisRun, now: float) -> tuple[Metric, ...]:
    """The metrics to measure now."""
    due = []
    for metric, result in zip(run.metrics, run.results, strict=True):
        at = _due_at(run, metric, result)
        if at is not None and at <= now:
            due.append(metric)
    return tuple(due)


def next_due_at(run: AnalysisRun) -> float | None:
    """The earliest time any metric of the run is due, or None when nothing is left."""
    times = [
        at
        for metric, result in zip(run.metrics, run.results, strict=True)
        if (at := _due_at(run, metric, result)) is not None
    ]
    return min(times, default=None)


def record_measurement(run: AnalysisRun, metric_name: str, measurement: Measurement) -> AnalysisRun:
    """The run after one completed measurement of `metric_name`."""
    results = list(run.results)
    for index, result in enumerate(results):
        if result.name != metric_name:
            continue
        if result.phase.completed:
            # Taken while its run completed (measurements run concurrently): too late to count.
            return run
        # An update or the completion of an in-progress measurement replaces it.
        earlier = result.measurements[:-1] if in_progress(result) is not None else result.measurements
        if measurement.phase == AnalysisPhase.RUNNING:
            # In progress: counts nothing yet, and is kept whatever the retention.
            results[index] = dataclasses.replace(
                result, measurements=(*earlier, measurement), last_phase=measurement.phase
            )
        else:
            limit = result.retention if result.retention > 0 else DEFAULT_MEASUREMENT_RETENTION
            kept = (*earlier, measurement)[-limit:]
            results[index] = dataclasses.replace(
                result,
                counts=result.counts.after(measurement.phase),
                measurements=kept,
                last_finished_at=measurement.finished_at,
                last_phase=measurement.phase,
            )
        return _settle(_reassess(dataclasses.replace(run, results=tuple(results))))
    raise KeyError(metric_name)


def _settle(run: AnalysisRun) -> AnalysisRun:
    """A run that has completed terminates its in-progress measurements, keeping its phase."""
    if not run.phase.completed or not any(in_progress(result) for result in run.results):
        return run
    settled = _complete_in_progress(run)
    return dataclasses.replace(settled, phase=run.phase, message=run.message)


def _complete_in_progress(run: AnalysisRun) -> AnalysisRun:
    """Every Running measurement completed as its `stop_phase` (Argo terminates them)."""
    for result in run.results:
        running = in_progress(result)
        if running is not None:
            phase = running.stop_phase or AnalysisPhase.INCONCLUSIVE
            message = f"Metric Terminated: {running.message}" if running.message else "Metric Terminated"
            final = dataclasses.replace(
                running, phase=phase, message=message, resume_at=None, stop_phase=None
            )
            run = record_measurement(run, result.name, final)
    return run


def fail_run(run: AnalysisRun, message: str) -> AnalysisRun:
    """The run ended in Error because it could not go on (its task died): no more measurements."""
    return dataclasses.replace(run, phase=AnalysisPhase.ERROR, message=message, terminated=True)


def terminate(run: AnalysisRun, message: str = "run stopped") -> AnalysisRun:
    """Stop taking measurements; metrics still running get their final phase now."""
    if run.terminated or run.phase.completed:
        return dataclasses.replace(run, terminated=True)
    return _reassess(dataclasses.replace(_complete_in_progress(run), terminated=True, message=message))


def _reassess(run: AnalysisRun) -> AnalysisRun:
    results = []
    for metric, result in zip(run.metrics, run.results, strict=True):
        if result.phase.completed:
            results.append(result)
            continue
        phase, why = metric_phase(metric, result.counts, terminating=run.terminated)
        if phase == AnalysisPhase.PENDING and in_progress(result) is not None:
            phase = AnalysisPhase.RUNNING  # its first measurement is under way
        message = why
        if result.measurements and result.measurements[-1].message:
            message = (
                f"{why}; last measurement: {result.measurements[-1].message}"
                if why
                else (result.measurements[-1].message)
            )
        results.append(dataclasses.replace(result, phase=phase, message=message))
    phase = run_phase((r.phase, r.dry_run) for r in results)
    message = run.message
    if phase.completed and phase != AnalysisPhase.SUCCESSFUL:
        culprits = [f"{r.name}: {r.message}" for r in results if r.phase == phase and not r.dry_run]
        message = "; ".join(culprits) or message
    return dataclasses.replace(run, results=tuple(results), phase=phase, message=message)
