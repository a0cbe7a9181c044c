"""Work a condition does per element of a predicate is bounded too (found by bench/chaos.py).

The predicates' budget counted the elements they visit, not the work done for each: a range
built, or a list walked, once per element made a condition run for minutes on one
measurement. Each case here must end, with its value or with ConditionEvalError.
"""

from __future__ import annotations

import pytest

from meshshift.analysis.expr import ConditionEvalError, compile_condition
from tests.reliability.test_fuzz_specs import hang_guard

BIG = list(range(20_000))


@pytest.mark.parametrize(
    "source",
    [
        "1..100000 | map(1..100000)",  # the case the fuzzer found
        "all(1..100000, {result == result})",
        "all(1..100000, {# in result})",
        "all(1..100000, {max(result) > 0})",
        "all(1..50000, {mean(result) > 0})",
        "all(result, {# in result})",
        "all(result, {len(filter(result, {# > 0})) > 0})",
    ],
)
def test_per_element_work_counts_against_the_budget(source: str) -> None:
    condition = compile_condition(source)
    with hang_guard(), pytest.raises(ConditionEvalError, match="too much work"):
        condition.evaluate(BIG)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("all(result, {# >= 0})", True),
        ("all(result, {# in [1, 2, 3] || # >= 0})", True),
        ("all(1..100000, {len(result) > 0})", True),
        ("max(result) == 19999 && 19999 in result", True),
        ("len(map(1..10, 1..10)) == 10", True),
        ("sum(map(1..300, len(1..300))) == 90000", True),
    ],
)
def test_ordinary_conditions_keep_their_value(source: str, expected: object) -> None:
    with hang_guard():
        assert compile_condition(source).evaluate(BIG) == expected
