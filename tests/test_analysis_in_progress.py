"""In-progress (Running) measurements, as Argo keeps them for Job, Kayenta and web providers and
as the sequential judge uses them: resumed at `resume_at`, replaced by each update, counted
once when completed, terminated with the run."""

from __future__ import annotations

from meshshift.analysis.assess import assess_value
from meshshift.analysis.run import (
    AnalysisRun,
    Measurement,
    due_metrics,
    in_progress,
    next_due_at,
    record_measurement,
    start_run,
    terminate,
)
from meshshift.codec import decode, encode
from meshshift.spec.model import AnalysisPhase, Metric, ProviderSpec

RUNNING, S, F, INC = (
    AnalysisPhase.RUNNING,
    AnalysisPhase.SUCCESSFUL,
    AnalysisPhase.FAILED,
    AnalysisPhase.INCONCLUSIVE,
)
JUDGE = Metric(name="judge", provider=ProviderSpec("meshshift", {"builtin": "sequential-error-rate"}))
PLAIN = Metric(name="plain", provider=ProviderSpec("prometheus", {"query": "up"}), interval=60.0)


def running(at: float, *, started: float = 0.0, stop: AnalysisPhase = S, note: str = "") -> Measurement:
    return Measurement(
        RUNNING, started, at, value={"look": at}, message=note, resume_at=at + 1, stop_phase=stop
    )


def run_of(*metrics: Metric) -> AnalysisRun:
    return start_run("r", metrics, args={}, now=0.0)


def test_an_update_replaces_the_running_measurement_and_counts_nothing() -> None:
    run = run_of(JUDGE)
    assert [m.name for m in due_metrics(run, 0.0)] == ["judge"]
    run = record_measurement(run, "judge", running(0.0))
    run = record_measurement(run, "judge", running(1.0, note="undecided"))
    result = run.result("judge")
    assert len(result.measurements) == 1 and result.measurements[0].value == {"look": 1.0}
    assert result.counts.count == 0 and result.phase == RUNNING and run.phase == RUNNING
    assert in_progress(result) == result.measurements[0]
    assert next_due_at(run) == 2.0  # its resume_at
    assert due_metrics(run, 1.9) == () and due_metrics(run, 2.0) == (JUDGE,)


def test_completing_it_counts_once_and_ends_the_metric() -> None:
    run = record_measurement(run_of(JUDGE), "judge", running(0.0))
    run = record_measurement(run, "judge", running(1.0))
    run = record_measurement(run, "judge", Measurement(F, 0.0, 2.0, value={"verdict": "worse"}))
    result = run.result("judge")
    assert [m.phase for m in result.measurements] == [F]
    assert result.measurements[0].started_at == 0.0
    assert result.counts.count == 1 and result.counts.failed == 1
    assert result.phase == F and run.phase == F
    assert next_due_at(run) is None


def test_stopping_the_run_completes_it_as_its_stop_phase() -> None:
    run = record_measurement(run_of(JUDGE), "judge", running(3.0, note="undecided: 0 errors"))
    stopped = terminate(run)
    measurement = stopped.result("judge").measurements[-1]
    assert measurement.phase == S and measurement.message == "Metric Terminated: undecided: 0 errors"
    assert measurement.resume_at is None and measurement.stop_phase is None
    assert stopped.result("judge").phase == S and stopped.phase == S
    strict = terminate(record_measurement(run_of(JUDGE), "judge", running(3.0, stop=INC)))
    assert strict.phase == INC


def test_a_run_that_fails_elsewhere_terminates_its_running_measurements() -> None:
    run = start_run("r", (JUDGE, PLAIN), args={}, now=0.0)
    run = record_measurement(run, "judge", running(1.0))
    run = record_measurement(run, "plain", Measurement(F, 0.0, 1.0, value=[0.5]))
    assert run.phase == F
    judge = run.result("judge")
    assert in_progress(judge) is None and judge.measurements[-1].message == "Metric Terminated"
    # Its update taken at the same time as the failing measurement comes too late to count.
    late = record_measurement(run, "judge", running(1.5))
    assert late.result("judge").measurements == judge.measurements


def test_a_running_measurement_survives_persistence() -> None:
    measurement = Measurement(
        RUNNING,
        0.0,
        1.0,
        value={"verdict": "undecided"},
        resume_at=2.0,
        stop_phase=S,
        metadata={"judge": '{"looks": 1}'},
    )
    run = record_measurement(run_of(JUDGE), "judge", measurement)
    assert decode(AnalysisRun, encode(run)) == run


def test_a_provider_phase_stands_unless_the_metric_has_conditions() -> None:
    assert assess_value(JUDGE, {"verdict": "worse"}, provider_phase=F, provider_message="worse") == (
        F,
        "worse",
    )
    with_condition = Metric(
        name="judge", provider=JUDGE.provider, success_condition='result.verdict != "worse"'
    )
    phase, message = assess_value(with_condition, {"verdict": "not-worse"}, provider_phase=F)
    assert phase == S and message == ""
