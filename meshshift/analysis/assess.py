"""Turn one provider value into a measurement phase, through the metric's conditions."""

from __future__ import annotations

from typing import Any

from meshshift.analysis.expr import (
    ConditionEvalError,
    ConditionSyntaxError,
    EmptyResultIndexError,
    compile_condition,
)
from meshshift.analysis.phases import measurement_phase
from meshshift.spec.model import AnalysisPhase, Metric


def _check(condition: str | None, value: Any) -> bool | None:
    if condition is None:
        return None
    return compile_condition(condition).test(value)


def assess_value(
    metric: Metric,
    value: Any,
    *,
    query: str = "",
    provider_phase: AnalysisPhase | None = None,
    provider_message: str = "",
) -> tuple[AnalysisPhase, str]:
    """The phase of a measurement that returned `value`, and a message explaining it.

    A provider that decided a completed phase itself (`provider_phase`) keeps it, unless the
    metric has conditions: then they decide, as for any other value.
    """
    if provider_phase is not None and metric.success_condition is None and metric.failure_condition is None:
        return provider_phase, provider_message
    try:
        success = _check(metric.success_condition, value)
        failure = _check(metric.failure_condition, value)
    except EmptyResultIndexError as error:
        where = f" of query {query.strip()!r}" if query else ""
        return (
            AnalysisPhase.ERROR,
            f"the result{where} is empty: {error}. "
            "If an empty result is expected, write the condition as `len(result) > 0 && ...` "
            "or `len(result) == 0 || ...`",
        )
    except (ConditionEvalError, ConditionSyntaxError) as error:
        return AnalysisPhase.ERROR, f"condition could not be evaluated on {value!r}: {error}"
    phase = measurement_phase(success, failure)
    if phase == AnalysisPhase.SUCCESSFUL:
        return phase, ""
    parts = []
    if success is False:
        parts.append(f"successCondition `{metric.success_condition}` is false")
    if failure:
        parts.append(f"failureCondition `{metric.failure_condition}` is true")
    return phase, f"{' and '.join(parts)} for result {value!r}"
