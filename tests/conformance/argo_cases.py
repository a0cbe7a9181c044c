"""meshshift's outcome of each case of expressions.yaml and phases.yaml (Argo's evaluator and analysis
tests, as data), and the comparison with Argo's.

`python -m tests.conformance.argo_cases` prints the counts and every differing case; it uses only
the analysis core's long-standing entry points, so it also runs against an older checkout (that is
how the counts before a change are measured: PYTHONPATH=OLD_TREE python -m ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshshift.analysis.assess import assess_value
from meshshift.analysis.expr import ConditionEvalError, ConditionSyntaxError, compile_condition
from meshshift.analysis.phases import MetricCounts, metric_phase, run_phase
from meshshift.analysis.run import (
    Measurement,
    due_metrics,
    next_due_at,
    record_measurement,
    start_run,
    terminate,
)
from meshshift.spec.durations import parse_duration
from meshshift.spec.model import AnalysisPhase, Metric, ProviderSpec

HERE = Path(__file__).parent
README = HERE / "README.md"
PROVIDER = ProviderSpec("web", {"url": "http://127.0.0.1/"})
NOW = 10_000.0


@dataclass(frozen=True)
class Outcome:
    case_id: str
    source: str
    expected: str
    actual: str

    @property
    def agrees(self) -> bool:
        return self.expected == self.actual


def load(name: str) -> list[dict[str, Any]]:
    cases = yaml.safe_load((HERE / name).read_text())["cases"]
    assert isinstance(cases, list)
    return cases


# --- conditions -----------------------------------------------------------------------------


def condition_outcome(case: Mapping[str, Any]) -> Outcome:
    result = case.get("result")
    if "condition" in case:
        expected = "error" if case.get("error") else f"value {str(case['value']).lower()}"
        try:
            actual = f"value {str(compile_condition(case['condition']).test(result)).lower()}"
        except (ConditionSyntaxError, ConditionEvalError) as error:
            contains = case.get("error_contains")
            actual = "error" if contains is None or contains in str(error) else f"error without {contains!r}"
        except Exception as error:  # an older checkout may fail differently: a difference, counted
            actual = f"exception {type(error).__name__}"
    else:
        expected = f"phase {case['phase']}"
        metric = Metric(
            name="m",
            provider=PROVIDER,
            success_condition=case.get("successCondition"),
            failure_condition=case.get("failureCondition"),
        )
        try:
            actual = f"phase {assess_value(metric, result)[0].value}"
        except Exception as error:
            actual = f"exception {type(error).__name__}"
    return Outcome(case["id"], case["from"], expected, actual)


# --- phases ---------------------------------------------------------------------------------


def _metric(fields: Mapping[str, Any], name: str = "m") -> Metric:
    def duration(key: str) -> float | None:
        return None if key not in fields else parse_duration(fields[key])

    return Metric(
        name=name,
        provider=PROVIDER,
        interval=duration("interval"),
        initial_delay=duration("initialDelay"),
        count=fields.get("count"),
        failure_limit=fields.get("failureLimit", 0),
        inconclusive_limit=fields.get("inconclusiveLimit", 0),
        consecutive_error_limit=fields.get("consecutiveErrorLimit", 4),
        consecutive_success_limit=fields.get("consecutiveSuccessLimit", 0),
    )


def _counts(fields: Mapping[str, Any]) -> MetricCounts:
    return MetricCounts(
        count=fields.get("count", 0),
        successful=fields.get("successful", 0),
        failed=fields.get("failed", 0),
        inconclusive=fields.get("inconclusive", 0),
        error=fields.get("error", 0),
        consecutive_error=fields.get("consecutiveError", 0),
        consecutive_success=fields.get("consecutiveSuccess", 0),
    )


def _measured(phase: AnalysisPhase, ago: float, resume_in: float | None = None) -> Measurement:
    at = NOW - ago
    if phase == AnalysisPhase.RUNNING:
        resume_at = None if resume_in is None else NOW + resume_in
        return Measurement(phase, at, at, resume_at=resume_at)
    return Measurement(phase, at, at)


def _metric_case(case: Mapping[str, Any]) -> str:
    metric = _metric(case["metric"])
    counts = _counts(case["counts"])
    if not case.get("inFlight"):
        return metric_phase(metric, counts, terminating=case["terminating"])[0].value
    # a measurement in flight after the completed ones: through the run's bookkeeping
    run = start_run("r", [metric], args={}, now=NOW - 100)
    for _ in range(counts.successful):
        run = record_measurement(run, "m", _measured(AnalysisPhase.SUCCESSFUL, 60))
    run = record_measurement(run, "m", _measured(AnalysisPhase.RUNNING, 0))
    if case["terminating"]:
        run = terminate(run)
    return run.result("m").phase.value


def _schedule_case(case: Mapping[str, Any]) -> str:
    metrics = [_metric(fields, fields["name"]) for fields in case["metrics"]]
    run = start_run("r", metrics, args={}, now=NOW - case.get("started", 1000))
    for fields in case["metrics"]:
        last = fields.get("last")
        if last is not None:
            phase = AnalysisPhase(last["phase"])
            run = record_measurement(run, fields["name"], _measured(phase, last["ago"], last.get("resumeIn")))
    if "due" in case:
        return f"due {[metric.name for metric in due_metrics(run, NOW)]}"
    at = next_due_at(run)
    return f"next {None if at is None else round(at - NOW, 6)}"


def _run_case(case: Mapping[str, Any]) -> str:
    pairs = []
    for fields in case["metrics"]:
        phase = fields.get("phase")
        if phase is None:  # never measured
            measured = metric_phase(_metric({}), MetricCounts(), terminating=case["terminating"])[0]
        else:
            measured = AnalysisPhase(phase)
        pairs.append((measured, bool(fields.get("dryRun"))))
    return run_phase(pairs).value


def phase_outcome(case: Mapping[str, Any]) -> Outcome:
    kind = case["kind"]
    if kind == "schedule":
        expected = f"due {case['due']}" if "due" in case else f"next {case['next']}"
        if "next" in case and case["next"] is not None:
            expected = f"next {round(float(case['next']), 6)}"
    else:
        expected = case["phase"]
    try:
        actual = {"metric": _metric_case, "schedule": _schedule_case, "run": _run_case}[kind](case)
    except Exception as error:  # an older checkout may lack a field: a difference, counted
        actual = f"exception {type(error).__name__}: {error}"
    return Outcome(case["id"], case["from"], expected, actual)


# --- the README's documented differences ----------------------------------------------------

_ROW = re.compile(r"^\| (`[^|]+`) \| (.+) \|$")


def documented_differences(readme: str, marker: str) -> dict[str, str]:
    """Case id -> reason, from the README table between <!-- MARKER --> and <!-- /MARKER -->."""
    start = readme.index(f"<!-- {marker} -->")
    end = readme.index(f"<!-- /{marker} -->")
    found = {}
    for line in readme[start:end].splitlines():
        if match := _ROW.match(line.strip()):
            for case_id in re.findall(r"`([^`]+)`", match.group(1)):
                found[case_id] = match.group(2)
    return found


def outcomes() -> Iterator[tuple[str, Outcome]]:
    for case in load("expressions.yaml"):
        yield "conditions", condition_outcome(case)
    for case in load("phases.yaml"):
        yield "phases", phase_outcome(case)


def main() -> None:
    totals: dict[str, list[int]] = {}
    for suite, outcome in outcomes():
        counts = totals.setdefault(suite, [0, 0])
        counts[0 if outcome.agrees else 1] += 1
        if not outcome.agrees:
            print(f"{suite}: {outcome.case_id}: Argo {outcome.expected}, meshshift {outcome.actual}")
    for suite, (agree, differ) in totals.items():
        print(f"{suite}: {agree} of {agree + differ} agree, {differ} differ")


if __name__ == "__main__":
    main()
