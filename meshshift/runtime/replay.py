"""Replays of an analysis run over the metrics store's history (`meshshift analyze --from`).

A replay is the real AnalysisExecutor (the same templating, providers and phase rules as a
rollout) on a clock the replay moves: the run starts at `start`, each metric is measured at
the moment it is due, its provider evaluating the query as of that moment
(MeasureContext.evaluation_time), and the clock then jumps to the next due moment without
waiting. A run still going at `until` is stopped there, as the end of a rollout step stops it.
Metrics whose provider cannot read history are refused before anything is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshshift.analysis.run import AnalysisRun, Measurement, next_due_at
from meshshift.engine.actions import StartAnalysis
from meshshift.ports import HistoricalProvider, MetricProvider, TemplateSource
from meshshift.runtime.analysis import DEFAULT_MEASUREMENT_TIMEOUT, AnalysisExecutor, ArgContext


class ReplayRefusedError(Exception):
    """A metric of the run cannot be measured at a past time; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TimedMeasurement:
    """One measurement of a replay's timeline (its time is `measurement.finished_at`)."""

    metric: str
    measurement: Measurement


@dataclass(frozen=True, slots=True)
class Replay:
    started_at: float
    until: float
    run: AnalysisRun  # as it ended
    timeline: tuple[TimedMeasurement, ...]  # every measurement, in the order taken
    # When the run reached its phase by itself (its verdict); None: it was stopped at `until`.
    completed_at: float | None


class ReplayClock:
    """The time a replay is at; only the replay moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def history_refusals(run: AnalysisRun, providers: Mapping[str, MetricProvider]) -> list[str]:
    """Why each metric of `run` that cannot be replayed cannot (empty: all can)."""
    refusals = []
    for metric in run.metrics:
        kind = metric.provider.kind if metric.provider else None
        provider = providers.get(kind) if kind else None
        if provider is None:
            continue  # measuring says the provider is missing, as in a rollout
        if not isinstance(provider, HistoricalProvider):
            refusals.append(f"metric {metric.name!r}: the {kind} provider keeps no history to replay")
            continue
        reason = provider.history_refusal(metric)
        if reason:
            refusals.append(reason)
    return refusals


async def replay(
    action: StartAnalysis,
    *,
    templates: TemplateSource,
    providers: Mapping[str, MetricProvider],
    arg_context: ArgContext,
    start: float,
    until: float,
    measurement_timeout: float = DEFAULT_MEASUREMENT_TIMEOUT,
    on_measurement: Callable[[TimedMeasurement], None] | None = None,
) -> Replay:
    """The run of `action` replayed from `start` to `until` (see the module docstring).

    Raises ReplayRefusedError when a metric cannot be replayed. A run that cannot even start
    (a missing template or arg) is returned as it is: in Error, with the reason.
    """
    if until < start:
        raise ValueError("a replay cannot end before it starts")
    clock = ReplayClock(start)
    timeline: list[TimedMeasurement] = []
    last_seen: dict[str, Measurement] = {}

    def collect(run: AnalysisRun) -> None:
        for result in run.results:
            if not result.measurements:
                continue
            newest = result.measurements[-1]
            if last_seen.get(result.name) == newest:
                continue
            last_seen[result.name] = newest
            entry = TimedMeasurement(result.name, newest)
            timeline.append(entry)
            if on_measurement is not None:
                on_measurement(entry)

    executor = AnalysisExecutor(
        templates=templates,
        providers=providers,
        clock=clock,
        on_change=collect,
        arg_context=lambda _action: arg_context,
        measurement_timeout=measurement_timeout,
        evaluate_at_clock=True,
    )
    name = action.run_name
    await executor.start(action, drive=False)
    run = executor.runs[name]
    if run.phase.completed:  # it could not start
        return Replay(start, until, run, (), start)
    refusals = history_refusals(run, providers)
    if refusals:
        raise ReplayRefusedError("; ".join(refusals))
    completed_at: float | None = None
    while True:
        run = executor.runs[name]
        if run.phase.completed:
            completed_at = clock.now
            break
        due = next_due_at(run)
        if due is None or due > until:
            break
        clock.now = max(clock.now, due)
        await executor.measure_due(name)
    if completed_at is None:
        clock.now = until
        await executor.stop(name)
    run = executor.runs[name]
    return Replay(start, until, run, tuple(timeline), completed_at)
