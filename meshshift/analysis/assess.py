"""Turn one provider value into a measurement phase, through the metric's conditions.

Two rules beyond Argo's: missing data (nil, an empty result, NaN) is an Error measurement unless the
metric's conditions handle it explicitly (expr/nodata.py), and whatever goes wrong while assessing
is an Error measurement, never an exception out of the analysis.
"""

from __future__ import annotations

import json
import math
from typing import Any

from meshshift.analysis.expr import (
    Condition,
    ConditionEvalError,
    ConditionSyntaxError,
    EmptyResultIndexError,
    compile_condition,
)
from meshshift.analysis.expr.nodata import handles, hint, missing_data
from meshshift.analysis.phases import measurement_phase
from meshshift.spec.model import AnalysisPhase, Metric

# Messages quote at most this many characters of the provider's value, and a measurement keeps the
# value itself only while its JSON form fits in STORED_VALUE_LIMIT characters (else an excerpt):
# four measurements of a 300 kB answer must not make a 1.2 MB state file (a ConfigMap holds 1 MiB).
VALUE_EXCERPT_LIMIT = 200
STORED_VALUE_LIMIT = 1024


def value_excerpt(value: Any, limit: int = VALUE_EXCERPT_LIMIT) -> str:
    """The value as JSON (NaN and Inf as Prometheus writes them), cut to `limit` characters."""
    text = _json(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def stored_value(value: Any) -> Any:
    """What a measurement keeps of the value: the value while it is small, else an excerpt."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = _json(value)
    return value if len(text) <= STORED_VALUE_LIMIT else value_excerpt(value)


def _json(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    try:
        return json.dumps(value, ensure_ascii=False, default=repr, allow_nan=True)
    except (ValueError, RecursionError):  # absurdly nested data
        return f"<{type(value).__name__}>"


def _conditions(metric: Metric) -> tuple[Condition | None, Condition | None]:
    success = None if metric.success_condition is None else compile_condition(metric.success_condition)
    failure = None if metric.failure_condition is None else compile_condition(metric.failure_condition)
    return success, failure


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
        return _assess(metric, value, query)
    except Exception as error:  # a bug must cost one Error measurement, not the analysis task
        return AnalysisPhase.ERROR, f"could not assess the result {value_excerpt(value)}: {error!r}"


def _assess(metric: Metric, value: Any, query: str) -> tuple[AnalysisPhase, str]:
    where = f" of query {query.strip()!r}" if query else ""
    try:
        success, failure = _conditions(metric)
    except ConditionSyntaxError as error:
        return AnalysisPhase.ERROR, f"condition could not be compiled: {error}"
    conditions = [condition for condition in (success, failure) if condition is not None]
    kind = missing_data(value)
    if kind is not None and conditions and not handles(conditions, kind):
        return AnalysisPhase.ERROR, (
            f"no data: the result{where} is {kind}, and the conditions do not say what that means "
            f"(meshshift never passes a measurement on missing data); {hint(kind)}"
        )
    try:
        succeeded = None if success is None else success.test(value)
        failed = None if failure is None else failure.test(value)
    except EmptyResultIndexError as error:
        return (
            AnalysisPhase.ERROR,
            f"the result{where} is empty: {error}. "
            "If an empty result is expected, write the condition as `len(result) > 0 && ...` "
            "or `len(result) == 0 || ...`",
        )
    except ConditionEvalError as error:
        return AnalysisPhase.ERROR, f"condition could not be evaluated on {value_excerpt(value)}: {error}"
    phase = measurement_phase(succeeded, failed)
    if phase == AnalysisPhase.SUCCESSFUL:
        return phase, ""
    parts = []
    if succeeded is False:
        parts.append(f"successCondition `{metric.success_condition}` is false")
    if failed:
        parts.append(f"failureCondition `{metric.failure_condition}` is true")
    return phase, f"{' and '.join(parts)} for result {value_excerpt(value)}"
