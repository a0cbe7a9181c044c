"""Analysis phases and the rules that combine them (DESIGN.md §4, after Argo Rollouts).

Measurement phase: from the conditions. Metric phase: from the counts and limits, in Argo's order:
the failure, inconclusive and consecutive-error limits (the last one violated names the phase),
then consecutiveSuccessLimit, then count. A run stopped before its metrics complete ends them
Successful unless a limit was violated, whatever consecutiveSuccessLimit says (as Argo's docs and
assessMetricStatus do). Run phase: the worst metric phase.

One deliberate difference from Argo: a metric is never Successful without at least one
Successful measurement (Argo calls a metric whose every measurement errored, or a run stopped
before its first measurement, Successful).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshshift.spec.model import AnalysisPhase, Metric

# Successful < Running < Pending < Inconclusive < Error < Failed
_SEVERITY = {
    AnalysisPhase.SUCCESSFUL: 0,
    AnalysisPhase.RUNNING: 1,
    AnalysisPhase.PENDING: 2,
    AnalysisPhase.INCONCLUSIVE: 3,
    AnalysisPhase.ERROR: 4,
    AnalysisPhase.FAILED: 5,
}


def worst(phases: Iterable[AnalysisPhase]) -> AnalysisPhase | None:
    """The most severe phase, or None for no phases."""
    return max(phases, key=_SEVERITY.__getitem__, default=None)


def measurement_phase(success: bool | None, failure: bool | None) -> AnalysisPhase:
    """The phase of one measurement, given each condition's outcome (None: no condition).

    A true failureCondition wins over a true successCondition, as in Argo.
    """
    if failure:
        return AnalysisPhase.FAILED
    if success is None and failure is None:
        return AnalysisPhase.SUCCESSFUL
    if failure is None:
        return AnalysisPhase.SUCCESSFUL if success else AnalysisPhase.FAILED
    if success is None:
        return AnalysisPhase.SUCCESSFUL  # failureCondition was false
    return AnalysisPhase.SUCCESSFUL if success else AnalysisPhase.INCONCLUSIVE


@dataclass(frozen=True, slots=True)
class MetricCounts:
    """The bookkeeping of one metric; errors do not count toward `count` (as in Argo)."""

    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0

    @property
    def measured(self) -> int:
        return self.count + self.error

    def after(self, phase: AnalysisPhase) -> MetricCounts:
        """The counts once a measurement of `phase` has completed."""
        if phase == AnalysisPhase.ERROR:
            return MetricCounts(
                self.count,
                self.successful,
                self.failed,
                self.inconclusive,
                self.error + 1,
                self.consecutive_error + 1,
                0,
            )
        return MetricCounts(
            count=self.count + 1,
            successful=self.successful + (phase == AnalysisPhase.SUCCESSFUL),
            failed=self.failed + (phase == AnalysisPhase.FAILED),
            inconclusive=self.inconclusive + (phase == AnalysisPhase.INCONCLUSIVE),
            error=self.error,
            consecutive_error=0,
            consecutive_success=(self.consecutive_success + 1 if phase == AnalysisPhase.SUCCESSFUL else 0),
        )


def metric_phase(metric: Metric, counts: MetricCounts, *, terminating: bool) -> tuple[AnalysisPhase, str]:
    """The phase of a metric and why, from its counts and limits."""
    if counts.measured == 0:
        if terminating:
            return AnalysisPhase.INCONCLUSIVE, "stopped before any measurement was taken"
        return AnalysisPhase.PENDING, ""
    violated = limit_violation(metric, counts)
    if violated is not None:
        return violated
    csl = metric.consecutive_success_limit
    if csl > 0 and counts.consecutive_success >= csl:
        return AnalysisPhase.SUCCESSFUL, f"{counts.consecutive_success} consecutive successes"
    effective_count = metric.effective_count
    if effective_count is not None and counts.count >= effective_count:
        return _final_phase(metric, counts, why=f"count ({counts.count}) reached", apply_streak=True)
    if terminating:
        # Stopped early (the step ended, or an interval metric without count): no limit was
        # violated, so the measurements so far decide; an unfinished streak does not count against it.
        return _final_phase(metric, counts, why="stopped", apply_streak=False)
    return AnalysisPhase.RUNNING, ""


def limit_violation(metric: Metric, counts: MetricCounts) -> tuple[AnalysisPhase, str] | None:
    """The failure, inconclusive or consecutive-error limit the counts exceed, if any.

    As in Argo, all three are checked and the last one exceeded names the phase (an error streak
    outranks too many inconclusive measurements, which outrank too many failures).
    """
    violated: tuple[AnalysisPhase, str] | None = None
    if metric.failure_limit >= 0 and counts.failed > metric.failure_limit:
        violated = AnalysisPhase.FAILED, f"failed ({counts.failed}) > failureLimit ({metric.failure_limit})"
    if counts.inconclusive > metric.inconclusive_limit:
        violated = (
            AnalysisPhase.INCONCLUSIVE,
            f"inconclusive ({counts.inconclusive}) > inconclusiveLimit ({metric.inconclusive_limit})",
        )
    if counts.consecutive_error > metric.consecutive_error_limit:
        violated = (
            AnalysisPhase.ERROR,
            f"consecutive errors ({counts.consecutive_error}) > consecutiveErrorLimit "
            f"({metric.consecutive_error_limit})",
        )
    return violated


def _final_phase(
    metric: Metric, counts: MetricCounts, *, why: str, apply_streak: bool
) -> tuple[AnalysisPhase, str]:
    """The phase once no more measurements will be taken (count reached, or stopped)."""
    if counts.successful == 0:
        # Never Successful without a single successful measurement.
        if counts.failed:
            return AnalysisPhase.FAILED, f"{why} without a successful measurement"
        if counts.inconclusive:
            return AnalysisPhase.INCONCLUSIVE, f"{why} without a successful measurement"
        return AnalysisPhase.ERROR, f"{why}: every measurement errored"
    csl = metric.consecutive_success_limit
    if csl > 0 and apply_streak:
        # Count reached, consecutiveSuccessLimit not (checked before we got here), as Argo rules:
        # Failed when it is the only limit that applies, else Inconclusive.
        if metric.failure_limit < 0:
            return AnalysisPhase.FAILED, f"{why} before {csl} consecutive successes"
        return AnalysisPhase.INCONCLUSIVE, f"{why} before {csl} consecutive successes"
    return AnalysisPhase.SUCCESSFUL, why


def run_phase(metric_phases: Iterable[tuple[AnalysisPhase, bool]]) -> AnalysisPhase:
    """The run phase from (metric phase, dry_run) pairs: the worst non-dry-run phase.

    Dry-run metrics never decide the run; a run of only dry-run metrics is Running until
    they complete, then Successful.
    """
    pairs = list(metric_phases)
    decisive = [phase for phase, dry_run in pairs if not dry_run]
    if decisive:
        result = worst(decisive)
        assert result is not None
        return result
    if all(phase.completed for phase, _ in pairs):
        return AnalysisPhase.SUCCESSFUL
    return AnalysisPhase.RUNNING
