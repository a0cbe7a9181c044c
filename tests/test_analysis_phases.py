"""Every phase rule and limit of DESIGN.md §4's analysis semantics."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from meshshift.analysis.phases import MetricCounts, measurement_phase, metric_phase, run_phase, worst
from meshshift.analysis.run import (
    ERROR_RETRY_INTERVAL,
    Measurement,
    due_metrics,
    next_due_at,
    record_measurement,
    start_run,
    terminate,
)
from meshshift.spec.model import AnalysisPhase, MeasurementRetention, Metric, ProviderSpec

S, F, E, INC = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE
PROVIDER = ProviderSpec("prometheus", {"query": "up"})


def metric(**fields: object) -> Metric:
    return Metric(name=str(fields.pop("name", "m")), provider=PROVIDER, **fields)  # type: ignore[arg-type]


def counts_of(phases: Sequence[AnalysisPhase]) -> MetricCounts:
    counts = MetricCounts()
    for phase in phases:
        counts = counts.after(phase)
    return counts


def phase_of(m: Metric, phases: Sequence[AnalysisPhase], *, terminating: bool = False) -> AnalysisPhase:
    return metric_phase(m, counts_of(phases), terminating=terminating)[0]


# --- measurement phase ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "expected"),
    [
        (None, None, S),  # no condition
        (True, None, S),  # only successCondition
        (False, None, F),
        (None, True, F),  # only failureCondition
        (None, False, S),
        (True, False, S),  # both
        (False, True, F),
        (True, True, F),  # failure wins
        (False, False, INC),  # neither holds
    ],
)
def test_measurement_phase(success: bool | None, failure: bool | None, expected: AnalysisPhase) -> None:
    assert measurement_phase(success, failure) == expected


# --- metric phase -----------------------------------------------------------------------


def test_no_measurement_yet_is_pending() -> None:
    assert phase_of(metric(), []) == AnalysisPhase.PENDING


def test_failure_limit_defaults_to_zero() -> None:
    assert phase_of(metric(count=3), [F]) == F


def test_failures_up_to_the_limit_are_tolerated() -> None:
    m = metric(count=5, failure_limit=2)
    assert phase_of(m, [F, S, F]) == AnalysisPhase.RUNNING
    assert phase_of(m, [F, S, F, F]) == F


def test_failure_limit_minus_one_disables_failures() -> None:
    m = metric(count=3, failure_limit=-1, consecutive_success_limit=2)
    assert phase_of(m, [F, F]) == AnalysisPhase.RUNNING


def test_inconclusive_limit() -> None:
    assert phase_of(metric(count=5), [INC]) == INC
    m = metric(count=5, inconclusive_limit=1)
    assert phase_of(m, [INC, S]) == AnalysisPhase.RUNNING
    assert phase_of(m, [INC, S, INC]) == INC


def test_consecutive_error_limit_defaults_to_four() -> None:
    m = metric(count=3)
    assert phase_of(m, [E] * 4) == AnalysisPhase.RUNNING
    assert phase_of(m, [E] * 5) == E


def test_a_success_resets_consecutive_errors() -> None:
    m = metric(count=10, consecutive_error_limit=1)
    assert phase_of(m, [E, S, E, S, E]) == AnalysisPhase.RUNNING
    assert phase_of(m, [E, S, E, E]) == E


def test_errors_do_not_count_toward_count() -> None:
    m = metric(count=2)
    assert phase_of(m, [S, E]) == AnalysisPhase.RUNNING
    assert phase_of(m, [S, E, S]) == S


def test_count_reached_is_successful() -> None:
    assert phase_of(metric(count=3, failure_limit=1), [S, F, S]) == S


def test_no_count_and_no_interval_means_one_measurement() -> None:
    assert metric().effective_count == 1
    assert phase_of(metric(), [S]) == S


def test_interval_without_count_runs_until_stopped() -> None:
    m = metric(interval=60.0)
    assert m.effective_count is None
    assert phase_of(m, [S] * 50) == AnalysisPhase.RUNNING
    assert phase_of(m, [S] * 50, terminating=True) == S


def test_consecutive_success_limit_alone_waits_for_the_streak() -> None:
    m = metric(interval=10.0, failure_limit=-1, consecutive_success_limit=3)
    assert phase_of(m, [F, S, S, F, S, S]) == AnalysisPhase.RUNNING
    assert phase_of(m, [F, S, S, F, S, S, S]) == S


def test_consecutive_success_limit_alone_fails_when_count_runs_out() -> None:
    m = metric(interval=10.0, count=4, failure_limit=-1, consecutive_success_limit=3)
    assert phase_of(m, [S, S, F, S]) == F


def test_both_limits_the_first_reached_wins_else_inconclusive() -> None:
    m = metric(interval=10.0, count=5, failure_limit=1, consecutive_success_limit=2)
    assert phase_of(m, [F, S, S]) == S
    assert phase_of(m, [F, S, F]) == F
    m = metric(interval=10.0, count=4, failure_limit=2, consecutive_success_limit=3)
    assert phase_of(m, [S, F, S, F]) == INC


def test_every_measurement_errored_is_never_successful() -> None:
    """Argo calls this Successful when the run is stopped; we call it Error."""
    m = metric(interval=10.0, consecutive_error_limit=10)
    assert phase_of(m, [E, E, E], terminating=True) == E
    assert phase_of(metric(count=1, consecutive_error_limit=10), [E] * 3, terminating=True) == E


def test_count_reached_without_a_single_success_is_not_successful() -> None:
    assert phase_of(metric(count=2, failure_limit=5), [F, F]) == F
    assert phase_of(metric(count=2, inconclusive_limit=5), [INC, INC]) == INC


def test_stopped_before_any_measurement_is_inconclusive() -> None:
    assert phase_of(metric(initial_delay=600.0), [], terminating=True) == INC


def test_limits_are_checked_before_count() -> None:
    # The last measurement both reaches count and exceeds the failure limit: Failed.
    assert phase_of(metric(count=2), [S, F]) == F


# --- run phase ---------------------------------------------------------------------------


ORDER = [S, AnalysisPhase.RUNNING, AnalysisPhase.PENDING, INC, E, F]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(ORDER, 2)))
def test_run_phase_is_the_worst_metric_phase(a: AnalysisPhase, b: AnalysisPhase) -> None:
    assert run_phase([(a, False), (b, False)]) == b
    assert run_phase([(b, False), (a, False)]) == b
    assert worst([a, b]) == b


def test_dry_run_metrics_never_decide_the_run() -> None:
    assert run_phase([(S, False), (F, True)]) == S
    assert run_phase([(F, True), (E, True)]) == S
    assert run_phase([(AnalysisPhase.RUNNING, True)]) == AnalysisPhase.RUNNING


# --- run bookkeeping ---------------------------------------------------------------------


def measured(phase: AnalysisPhase, at: float, value: object = 1.0) -> Measurement:
    return Measurement(phase=phase, started_at=at, finished_at=at, value=value, query="up")


def test_initial_delay_then_interval_then_count() -> None:
    m = metric(interval=60.0, initial_delay=30.0, count=2)
    run = start_run("r", [m], args={}, now=0.0)
    assert due_metrics(run, 29.0) == ()
    assert next_due_at(run) == 30.0
    assert due_metrics(run, 30.0) == (m,)
    run = record_measurement(run, "m", measured(S, 31.0))
    assert next_due_at(run) == 91.0
    assert due_metrics(run, 90.0) == ()
    run = record_measurement(run, "m", measured(S, 91.0))
    assert run.phase == S
    assert next_due_at(run) is None


def test_an_errored_measurement_without_interval_is_retried_after_ten_seconds() -> None:
    run = start_run("r", [metric()], args={}, now=0.0)
    run = record_measurement(run, "m", measured(E, 1.0))
    assert run.phase == AnalysisPhase.RUNNING
    assert next_due_at(run) == 1.0 + ERROR_RETRY_INTERVAL


def test_measurement_retention_defaults_to_ten_and_follows_the_rules() -> None:
    metrics = [metric(name="a", interval=1.0), metric(name="b", interval=1.0), metric(name="c", interval=1.0)]
    run = start_run(
        "r",
        metrics,
        args={},
        now=0.0,
        retention=[MeasurementRetention("*", 3), MeasurementRetention("b", 5)],
    )
    plain = start_run("p", [metric(name="a", interval=1.0)], args={}, now=0.0)
    for second in range(12):
        for name in ("a", "b", "c"):
            run = record_measurement(run, name, measured(S, float(second), value=second))
        plain = record_measurement(plain, "a", measured(S, float(second), value=second))
    assert [m.value for m in run.result("a").measurements] == [9, 10, 11]
    assert len(run.result("b").measurements) == 5
    assert len(plain.result("a").measurements) == 10
    assert run.result("a").counts.count == 12  # counts survive trimming


def test_dry_run_metric_failing_leaves_the_run_successful() -> None:
    metrics = [metric(name="real"), metric(name="trial")]
    run = start_run("r", metrics, args={}, now=0.0, dry_run=["trial"])
    run = record_measurement(run, "trial", measured(F, 1.0))
    assert run.phase == AnalysisPhase.PENDING  # "real" has not measured yet
    run = record_measurement(run, "real", measured(S, 1.0))
    assert run.result("trial").phase == F and run.result("trial").dry_run
    assert run.phase == S


def test_a_failed_metric_ends_the_run_and_names_itself() -> None:
    metrics = [metric(name="latency", interval=5.0), metric(name="errors", interval=5.0)]
    run = start_run("r", metrics, args={}, now=0.0)
    run = record_measurement(run, "latency", Measurement(F, 1.0, 1.0, 900.0, "successCondition is false"))
    assert run.phase == F
    assert "latency" in run.message and "successCondition is false" in run.message
    assert due_metrics(run, 1000.0) == ()


def test_terminate_gives_running_metrics_their_final_phase() -> None:
    run = start_run("r", [metric(interval=5.0)], args={}, now=0.0)
    run = record_measurement(run, "m", measured(S, 1.0))
    assert run.phase == AnalysisPhase.RUNNING
    stopped = terminate(run)
    assert stopped.phase == S and stopped.terminated
    assert due_metrics(stopped, 100.0) == ()


def test_terminate_after_only_errors_is_error() -> None:
    run = start_run("r", [metric(interval=5.0)], args={}, now=0.0)
    for at in (1.0, 6.0, 11.0):
        run = record_measurement(run, "m", measured(E, at))
    assert terminate(run).phase == E


def test_terminate_keeps_a_completed_phase() -> None:
    run = start_run("r", [metric()], args={}, now=0.0)
    run = record_measurement(run, "m", measured(F, 1.0))
    assert terminate(run).phase == F


# --- issue 11: termination, error retry, zero values, regex rules ------------------------


def test_a_stopped_run_is_successful_unless_a_limit_was_violated() -> None:
    """Argo's analysis docs: a run stopped before it completes (background analysis at the end of the
    steps, an interval metric without count) ends Successful unless a limit was violated."""
    streak = metric(interval=10.0, failure_limit=3, consecutive_success_limit=5)
    assert phase_of(streak, [S, F, S, S]) == AnalysisPhase.RUNNING
    assert phase_of(streak, [S, F, S, S], terminating=True) == S  # the unfinished streak does not count
    counted = metric(interval=10.0, count=10, failure_limit=-1, consecutive_success_limit=5)
    assert phase_of(counted, [S, S, F], terminating=True) == S
    assert phase_of(metric(interval=10.0, failure_limit=1), [F, F], terminating=True) == F
    # ...and still never Successful without a Successful measurement
    assert phase_of(metric(interval=10.0, failure_limit=3), [F, F], terminating=True) == F
    assert phase_of(metric(interval=10.0, inconclusive_limit=3), [INC], terminating=True) == INC


def test_count_reached_still_applies_the_streak_rules() -> None:
    m = metric(interval=10.0, count=3, failure_limit=2, consecutive_success_limit=3)
    assert phase_of(m, [S, F, S]) == INC
    assert phase_of(m, [S, F, S], terminating=True) == INC


def test_the_last_violated_limit_names_the_phase() -> None:
    # As Argo's assessMetricFailureInconclusiveOrError: errors, then inconclusive, then failures.
    m = metric(interval=10.0, consecutive_error_limit=0)
    counts = MetricCounts(count=1, failed=1, error=1, consecutive_error=1)
    assert metric_phase(m, counts, terminating=False)[0] == E
    counts = MetricCounts(count=2, failed=1, inconclusive=1)
    assert metric_phase(m, counts, terminating=False)[0] == INC


@pytest.mark.parametrize(("interval", "retry"), [(300.0, 10.0), (5.0, 5.0), (None, 10.0), (10.0, 10.0)])
def test_an_errored_measurement_is_retried_after_ten_seconds_or_the_shorter_interval(
    interval: float | None, retry: float
) -> None:
    run = start_run("r", [metric(interval=interval, count=3 if interval else None)], args={}, now=0.0)
    run = record_measurement(run, "m", measured(E, 100.0))
    assert next_due_at(run) == 100.0 + retry
    assert due_metrics(run, 100.0 + retry - 0.5) == ()
    if interval is not None:  # after a good measurement the interval applies again
        run = record_measurement(run, "m", measured(S, 200.0))
        assert next_due_at(run) == 200.0 + interval


def test_the_default_error_limit_ends_a_five_minute_metric_in_about_fifty_seconds() -> None:
    run = start_run("r", [metric(interval=300.0)], args={}, now=0.0)
    at = 0.0
    while run.phase == AnalysisPhase.RUNNING or run.phase == AnalysisPhase.PENDING:
        due = next_due_at(run)
        assert due is not None
        at = due
        run = record_measurement(run, "m", measured(E, at))
    assert run.phase == E
    assert at == 40.0  # five errors: at 0, 10, 20, 30, 40 s


def test_count_zero_means_unset() -> None:
    assert metric(count=0).effective_count == 1
    assert metric(count=0, interval=10.0).effective_count is None
    run = start_run("r", [metric(count=0, interval=10.0)], args={}, now=0.0)
    for second in range(0, 100, 10):
        run = record_measurement(run, "m", measured(S, float(second)))
    assert run.phase == AnalysisPhase.RUNNING
    assert terminate(run).phase == S


def test_retention_limit_zero_means_the_default() -> None:
    run = start_run("r", [metric(interval=1.0)], args={}, now=0.0, retention=[MeasurementRetention("m", 0)])
    for second in range(15):
        run = record_measurement(run, "m", measured(S, float(second)))
    assert len(run.result("m").measurements) == 10


def test_dry_run_and_retention_names_are_regular_expressions() -> None:
    metrics = [metric(name=n, interval=1.0) for n in ("total-5xx", "total-4xx", "latency")]
    run = start_run(
        "r",
        metrics,
        args={},
        now=0.0,
        dry_run=["total-.*"],
        retention=[MeasurementRetention(".*", 2), MeasurementRetention("^lat", 4)],
    )
    assert [r.dry_run for r in run.results] == [True, True, False]
    assert [r.retention for r in run.results] == [2, 2, 4]
    everything = start_run("e", metrics, args={}, now=0.0, dry_run=[".*"])
    assert all(r.dry_run for r in everything.results)
    broken = start_run("b", metrics, args={}, now=0.0, dry_run=["(unclosed"])
    assert not any(r.dry_run for r in broken.results)
