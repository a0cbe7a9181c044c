"""Missing data: results that carry no measurement, and conditions that say what they mean.

A query over a window with no traffic answers an empty vector, NaN (0/0) or nil. Argo evaluates the
conditions on it anyway, and `result[0] < 0.9` as a failureCondition is false on NaN, so the
canary is promoted on no data at all (argoproj/argo-rollouts#1466, #4479). meshshift measures such
a result as Error ("no data") unless the metric's conditions handle it explicitly:

- nil or an empty list, with `len`, `isNil`, `default`, `??` or a comparison with `nil`;
- NaN (the value, or an element of the list), with `isNaN`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from meshshift.analysis.expr.compiler import Condition
from meshshift.analysis.expr.errors import ConditionEvalError
from meshshift.analysis.expr.nodes import Binary, Call, Literal, ResultRef, walk

EMPTY_HANDLERS = frozenset({"len", "isNil", "default"})
NAN_HANDLERS = frozenset({"isNaN"})
# What no data looks like, for lint: the values a provider answers when there is none.
NO_DATA_SAMPLES: tuple[tuple[str, object], ...] = (
    ("an empty result", []),
    ("NaN", math.nan),
    ("[NaN]", [math.nan]),
    ("nil", None),
)


def missing_data(value: object) -> str | None:
    """What kind of missing data `value` is ("nil", "an empty result", "NaN"), or None for data."""
    if value is None:
        return "nil"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        if not value:
            return "an empty result"
        if any(isinstance(item, float) and math.isnan(item) for item in value):
            return "NaN"
    return None


def handles(conditions: Sequence[Condition], kind: str) -> bool:
    """Whether any of the conditions deals with this kind of missing data explicitly."""
    if kind == "NaN":
        return any(condition.functions & NAN_HANDLERS for condition in conditions)
    return any(_handles_empty(condition) for condition in conditions)


def _handles_empty(condition: Condition) -> bool:
    if condition.functions & EMPTY_HANDLERS:
        return True
    for node in walk(condition.tree):
        if isinstance(node, Binary) and node.operator == "??":
            return True
        if (
            isinstance(node, Binary)
            and node.operator in ("==", "!=")
            and any(isinstance(side, Literal) and side.value is None for side in (node.left, node.right))
        ):
            return True
    return False


def hint(kind: str) -> str:
    if kind == "NaN":
        return "write `isNaN(result[0]) || ...` (or `!isNaN(result[0]) && ...`) to say what NaN means"
    return "write `len(result) == 0 || ...` (or `len(result) > 0 && ...`) to say what no data means"


def passes_on_no_data(success: Condition | None, failure: Condition | None) -> list[str]:
    """The kinds of missing data on which Argo would call a measurement of these conditions
    Successful without the conditions handling it; meshshift measures those as Error."""
    conditions = [condition for condition in (success, failure) if condition is not None]
    if not conditions:
        return []
    found: list[str] = []
    for description, sample in NO_DATA_SAMPLES:
        kind = missing_data(sample)
        assert kind is not None
        if handles(conditions, kind) or description in found:
            continue
        try:
            succeeded = None if success is None else success.test(sample)
            failed = None if failure is None else failure.test(sample)
        except ConditionEvalError:
            continue  # an Error in Argo too
        if not failed and succeeded is not False:
            found.append(description)
    return found


def argo_ignores_first_argument(condition: Condition) -> list[str]:
    """Calls of `default` and `isNil` whose first argument is not `result`: Argo ignores it and looks
    at `result` (so `default(result.rate, 0)` is result itself unless result is nil)."""
    found = []
    for node in walk(condition.tree):
        if (
            isinstance(node, Call)
            and node.name in ("default", "isNil")
            and not isinstance(node.arguments[0], ResultRef)
        ):
            found.append(condition.source[node.start : node.end])
    return found
