"""The analysis condition language: expr-lang semantics, compile-time safety, errors and limits."""

from __future__ import annotations

import contextlib
import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshshift.analysis.expr import (
    Condition,
    ConditionEvalError,
    ConditionSyntaxError,
    EmptyResultIndexError,
    compile_condition,
)


def evaluate(source: str, result: object = None) -> object:
    return compile_condition(source).evaluate(result)


def syntax_error(source: str) -> ConditionSyntaxError:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    return caught.value


def eval_error(source: str, result: object = None) -> ConditionEvalError:
    with pytest.raises(ConditionEvalError) as caught:
        compile_condition(source).evaluate(result)
    return caught.value


def same_value(actual: object, expected: object) -> bool:
    """Equality that also tells int from float and bool from int, and lets NaN equal NaN."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(map(same_value, actual, expected))
    return type(actual) is type(expected) and actual == expected


# Conditions as they appear in Argo AnalysisTemplates.


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ("result[0] >= 0.95", [0.97], True),
        ("result[0] >= 0.95", [0.9], False),
        ("result[0] <= 500", [499.5], True),
        ("result[0] <= 500", [501], False),
        ('result == "healthy"', "healthy", True),
        ('result == "healthy"', "degraded", False),
        ("isNaN(result[0]) || result[0] > 0.9", [math.nan], True),
        ("isNaN(result[0]) || result[0] > 0.9", [0.5], False),
        ("len(result) == 0 || result[0] < 1", [], True),
        ("len(result) == 0 || result[0] < 1", [2], False),
        ("all(result, {# > 0})", [1, 2, 3], True),
        ("all(result, {# > 0})", [1, -2], False),
        ("any(result, {# < 0.5})", [0.9, 0.4], True),
        ("any(result, {# < 0.5})", [0.9], False),
        ("default(result, 0) >= 1", None, False),
        ("default(result, 0) >= 1", 3, True),
        ("asInt(result) == 1", "1", True),
        ("asInt(result) == 1", 1.9, True),
        ('asFloat("0.5") < 1', None, True),
        ("result[0] >= 0.95 && !isNaN(result[0])", [0.97], True),
        ("result[0] >= 0.95 && !isNaN(result[0])", [math.nan], False),
        ('result["ok"] == true', {"ok": True}, True),
        ("result <= 0.01", 0.001, True),
    ],
)
def test_argo_style_conditions(source: str, result: object, expected: bool) -> None:
    assert compile_condition(source).test(result) is expected


# Literals


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("42", 42),
        ("1_000", 1000),
        ("2.5", 2.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1.5E-3", 0.0015),
        ("-7", -7),
        ('"double"', "double"),
        ("'single'", "single"),
        (r'"tab\there"', "tab\there"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\x41\u00e9\U0001F600"', "A\u00e9\U0001f600"),
        ("'multi\nline'", "multi\nline"),
        ("true", True),
        ("false", False),
        ("nil", None),
        ("[]", []),
        ("[1, 'a', nil, [2.5]]", [1, "a", None, [2.5]]),
        ("[1, 2,]", [1, 2]),
    ],
)
def test_literals(source: str, expected: object) -> None:
    assert same_value(evaluate(source), expected)


def test_list_literals_are_fresh_lists() -> None:
    condition = compile_condition("[1, result]")
    first = condition.evaluate(2)
    assert isinstance(first, list)
    first.append(3)
    assert condition.evaluate(2) == [1, 2]


# Operators


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2", 3),
        ("1 + 2.5", 3.5),
        ("'ab' + 'cd'", "abcd"),
        ("5 - 7", -2),
        ("3 * 4", 12),
        ("3 * 0.5", 1.5),
        ("7 / 2", 3.5),
        ("8 / 2", 4.0),
        ("1 / 0", math.inf),
        ("-1 / 0", -math.inf),
        ("1 / -0.0", -math.inf),
        ("0 / 0", math.nan),
        ("7 % 3", 1),
        ("-7 % 3", -1),  # the sign of the dividend, as in Go
        ("7 % -3", 1),
        ("2 ** 10", 1024.0),
        ("2 ^ 10", 1024.0),
        ("4 ** 0.5", 2.0),
        ("2 ** -1", 0.5),
        ("-3", -3),
        ("+3", 3),
        ("- -3", 3),
        ("!true", False),
        ("not false", True),
        ("!!true", True),
    ],
)
def test_arithmetic_and_unary(source: str, expected: object) -> None:
    assert same_value(evaluate(source), expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("16 / 4 / 2", 2.0),
        ("2 * 3 % 4", 2),
        ("2 ** 3 ** 2", 512.0),  # right-associative
        ("(2 ** 3) ** 2", 64.0),
        ("-2 ** 2", -4.0),  # unary minus binds looser than **
        ("2 * 3 ** 2", 18.0),
        ("1 + 2 == 3", True),
        ("true || false && false", True),  # && binds tighter than ||
        ("(true || false) && false", False),
        ("!true == false", True),  # (!true) == false, as in expr
        ("!false && false", False),
        ("1 + 1 in [2]", True),
        ("true ? 1 : 2 + 10", 1),
        ("false ? 1 : 2 + 10", 12),
        ("1 > 2 ? 'a' : 'b'", "b"),
        ("true ? false ? 1 : 2 : 3", 2),
        ("false ? 1 : true ? 2 : 3", 2),
        ("false ? 1 : false ? 2 : 3", 3),
        ("(nil ?? 1) + 1", 2),
        ("1 + nil ?? 2", 3),  # ?? binds tightest
        ("2 * nil ?? 3", 6),
        ("true and not false", True),
        ("false or true", True),
    ],
)
def test_precedence_and_associativity(source: str, expected: object) -> None:
    assert same_value(evaluate(source), expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1.0", True),
        ("1 != 1.0", False),
        ("'a' == 'a'", True),
        ("result.a == 1", False),  # values of unknown type: unlike ones are not equal
        ("result.b == 'true'", False),
        ("nil == nil", True),
        ("nil == 0", False),
        ("nil != false", True),
        ("result.c == [1.0, 2]", True),
        ("[1, 2] == [1.0, 2]", True),
        ("[1, [2]] == [1, [3]]", False),
        ("[1] == [1, 1]", False),
        ("2 > 1", True),
        ("2 >= 2", True),
        ("1.5 < 2", True),
        ("3 <= 2", False),
        ("'abc' < 'abd'", True),
        ("'b' > 'a'", True),
        ("0 < 1 < 2", True),
        ("0 < 3 < 2", False),
        ("0 < 1 <= 1 < 2", True),
        ("2 > 1 >= 1", True),
    ],
)
def test_comparisons(source: str, expected: bool) -> None:
    result = {"a": "1", "b": True, "c": [1, 2]}
    assert evaluate(source, result) is expected


@pytest.mark.parametrize(
    ("source", "result", "message"),
    [
        # expr type-checks against the measured value (Argo compiles each condition with it), so
        # comparing a known number with a string is an error, not false.
        ('asFloat(result) == "1.1"', "1.1", "invalid operation: == (mismatched types float64 and string)"),
        ("true == 1", None, "invalid operation: == (mismatched types bool and int)"),
        ("'1' == 1", None, "invalid operation: == (mismatched types string and int)"),
        ('result == "up"', 1.0, "invalid operation: == (mismatched types float64 and string)"),
        ('result[0] == "up"', [1.0], "invalid operation: == (mismatched types float64 and string)"),
        ("result == true", {"a": 1}, "mismatched types map[string]interface {} and bool"),
        ("result < 0.05", None, "invalid operation: < (mismatched types <nil> and float64)"),
        ("result > 0.5", "0.7", "invalid operation: > (mismatched types string and float64)"),
        ("true in result", [1.0], "invalid operation: in (mismatched types bool and []float64)"),
        ("'b' in 'abc'", None, "invalid operation: in (mismatched types string and string)"),
        ("1 + true", None, "invalid operation: + (mismatched types int and bool)"),
        ("7.5 % 2", None, "invalid operation: % (mismatched types float64 and int)"),
        ("result % 2", 7.0, "invalid operation: % (mismatched types float64 and int)"),
        ("len(result) && true", [], "invalid operation: && (mismatched types int and bool)"),
        ("!len(result)", [], "invalid operation: ! (mismatched type int)"),
        ("len(result) ? 1 : 2", [], "non-bool expression (type int) used as condition"),
        ("'a' matches '('", None, "invalid regular expression"),
        ("1.5..3", None, "invalid operation: .. (mismatched types float64 and int)"),
    ],
)
def test_mismatched_types_are_errors_as_in_expr(source: str, result: object, message: str) -> None:
    try:
        compile_condition(source)
    except ConditionSyntaxError as error:  # certain whatever the result: refused at once (a lint error)
        assert message in error.reason
        return
    assert "result" in source  # only the type of the measured value can make it fail later
    assert message in str(eval_error(source, result))


def test_comparisons_with_nan_are_false_and_inequality_true() -> None:
    nan = math.nan
    for operator in ("<", "<=", ">", ">=", "=="):
        assert evaluate(f"result {operator} 1", nan) is False
        assert evaluate(f"result[0] {operator} result[0]", [nan]) is False
    assert evaluate("result != result", nan) is True


def test_infinities_compare_as_numbers() -> None:
    assert evaluate("result > 1e308", math.inf) is True
    assert evaluate("result < -1e308", -math.inf) is True


def test_dict_equality_is_deep_and_numeric() -> None:
    assert evaluate("result == result", {"a": [1, {"b": None}]}) is True
    condition = compile_condition("result[0] == result[1]")
    assert condition.evaluate([{"a": 1}, {"a": 1.0}]) is True
    assert condition.evaluate([{"a": 1}, {"b": 1}]) is False
    assert condition.evaluate([{"a": True}, {"a": 1}]) is False


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ("2 in result", [1, 2], True),
        ("2.0 in result", [1, 2], True),
        ("3 in result", [1, 2], False),
        ("3 not in result", [1, 2], True),
        ("2 not in result", [1, 2], False),
        ("true in result", [1, "a"], False),
        ("[1] in result", [[1], [2]], True),
        ("nil in result", [None], True),
        ("result contains 'ell'", "hello", True),
        ("result contains 'xyz'", "hello", False),
        ("result contains ''", "hello", True),
        ("result not contains 'xyz'", "hello", True),
        ("result startsWith 'he'", "hello", True),
        ("result endsWith 'lo'", "hello", True),
        ("result not startsWith 'lo'", "hello", True),
        ("result matches '^h.l+o$'", "hello", True),
        ("result matches 'L'", "hello", False),
        ("result matches '(?i)L'", "hello", True),
        ("result not matches 'z'", "hello", True),
        ("'status' in result", {"status": "ok"}, True),
        ("'ok' in result", {"status": "ok"}, False),
        ("'ok' not in result", {"status": "ok"}, True),
        ("1 in result.missing", {}, False),  # nil holds nothing, as in expr
        ("result in ['healthy', 'ok']", "ok", True),
    ],
)
def test_membership(source: str, result: object, expected: bool) -> None:
    assert evaluate(source, result) is expected


def test_and_or_short_circuit() -> None:
    # The right side would fail on an empty result, so it must not run.
    assert evaluate("false && result[0] > 1", []) is False
    assert evaluate("true || result[0] > 1", []) is True
    assert evaluate("false and result[0] > 1", []) is False
    assert evaluate("true or result[0] > 1", []) is True
    assert evaluate("len(result) > 0 && result[0] > 1", []) is False
    with pytest.raises(EmptyResultIndexError):
        evaluate("true && result[0] > 1", [])


def test_ternary_evaluates_only_the_chosen_branch() -> None:
    assert evaluate("len(result) > 0 ? result[0] : -1", []) == -1
    assert evaluate("len(result) > 0 ? result[0] : -1", [5]) == 5


def test_nil_coalescing() -> None:
    assert evaluate("result ?? 0", None) == 0
    assert evaluate("result ?? 0", 5) == 5
    assert evaluate("result ?? 0", False) is False  # only nil is replaced
    assert evaluate('result["missing"] ?? "none"', {}) == "none"
    assert evaluate("nil ?? nil ?? 3") == 3


# Indexing


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ("result[0]", [0.97, 0.5], 0.97),
        ("result[1]", [0.97, 0.5], 0.5),
        ("result[-1]", [0.97, 0.5], 0.5),
        ("result[-2]", [0.97, 0.5], 0.97),
        ("result[1][0]", [[1], [2, 3]], 2),
        ("result[1][-1]", [[1], [2, 3]], 3),
        ("result[len(result) - 1]", [4, 5, 6], 6),
        ("result[1.0]", [4, 5], 5),  # a whole float is a fine index, as in expr
        ('result["status"]', {"status": "ok"}, "ok"),
        ("result['data'][0]['value']", {"data": [{"value": 3}]}, 3),
        ('result["missing"]', {"status": "ok"}, None),
        ("result[0]", "abc", "a"),
        ("result[-1]", "abc", "c"),
        ("[10, 20, 30][result]", 1, 20),
        ("(result)[0]", [7], 7),
    ],
)
def test_indexing(source: str, result: object, expected: object) -> None:
    assert same_value(evaluate(source, result), expected)


def test_empty_result_index_error_says_how_to_guard() -> None:
    error = eval_error("result[0] >= 0.95", [])
    assert isinstance(error, EmptyResultIndexError)
    assert str(error) == (
        "result[0]: index 0 out of range for an empty result (length 0); guard it with len(result) > 0"
    )


def test_out_of_range_on_a_non_empty_list_is_a_plain_eval_error() -> None:
    error = eval_error("result[2]", [1, 2])
    assert not isinstance(error, EmptyResultIndexError)
    assert str(error) == (
        "result[2]: index 2 out of range for a list of length 2; guard it with len(result) > 2"
    )
    assert "guard it with len(result) >= 3" in str(eval_error("result[-3]", [1, 2]))


def test_an_empty_nested_list_is_not_an_empty_result() -> None:
    error = eval_error("result[0][0]", [[]])
    assert not isinstance(error, EmptyResultIndexError)
    assert "an empty list" in str(error)
    assert "len(result[0]) > 0" in str(error)


@pytest.mark.parametrize(
    ("source", "result", "message"),
    [
        ("result[0]", None, "result[0]: cannot index nil; guard it with result != nil"),
        ("result[0]", 0.5, "cannot index number 0.5"),
        ("result[0]", {"a": 1}, "map keys are strings, got number 0"),
        ("result[0.5]", [1], "a list index must be a whole number, got number 0.5"),
        ("result['a']", [1], 'a list index must be a whole number, got string "a"'),
        ("result[true]", [1], "a list index must be a whole number, got bool true"),
        ("result[5]", "abc", "index 5 out of range for a string of length 3"),
    ],
)
def test_index_errors(source: str, result: object, message: str) -> None:
    assert message in str(eval_error(source, result))


# Functions


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ("len(result)", [1, 2, 3], 3),
        ("len(result)", [], 0),
        ("len(result)", "héllo", 5),
        ("len(result)", {"a": 1, "b": 2}, 2),
        ("isNaN(result)", math.nan, True),
        ("isNaN(result)", 1.5, False),
        ("isNaN(result)", 3, False),
        ("isNaN(result)", math.inf, False),
        ("isInf(result)", math.inf, True),
        ("isInf(result)", -math.inf, True),
        ("isInf(result)", math.nan, False),
        ("isInf(result)", 10, False),
        ("isNil(result)", None, True),
        ("isNil(result)", 0, False),
        ("isNil(result)", [], False),
        ('isNil(result["missing"])', {}, False),  # Argo's isNil looks at result itself
        ("default(result, 0)", None, 0),
        ("default(result, 0)", 5, 5),
        ("default(result, 0)", math.nan, math.nan),  # only nil is replaced, as in Argo
        ('default(result["n"], 1)', {}, {}),  # Argo's default(x, d): result unless result is nil
        ("asInt(result)", 3.9, 3),
        ("asInt(result)", -3.9, -3),
        ("asInt(result)", 7, 7),
        ("asInt(result)", "42", 42),
        ("asInt(result)", "-42", -42),
        ("asFloat(result)", "0.5", 0.5),
        ("asFloat(result)", "1e3", 1000.0),
        ("asFloat(result)", "-.5", -0.5),
        ("asFloat(result)", "NaN", math.nan),
        ("asFloat(result)", "+Inf", math.inf),
        ("asFloat(result)", 2, 2.0),
        ("abs(result)", -3, 3),
        ("abs(result)", -2.5, 2.5),
        ("min(result)", [3, 1, 2], 1),
        ("max(result)", [3, 1, 2], 3),
        ("max(1, 5, 2)", None, 5),
        ("min(4, result, 6)", [2.5, 9], 2.5),
        ("max(result)", [1, [7, 2]], 7),
        ("max(result)", [], None),
        ("sum(result)", [1, 2, 3], 6),
        ("sum(result)", [1, 2.5], 3.5),
        ("sum(result)", [], 0),
        ("sum(result, {# * 2})", [1, 2], 6),
    ],
)
def test_functions(source: str, result: object, expected: object) -> None:
    assert same_value(evaluate(source, result), expected)


@pytest.mark.parametrize(
    ("source", "result", "message"),
    [
        ("len(result)", 5, "len(result): expected a string, list or map, got number 5"),
        ("isNaN(result)", "x", 'isNaN(result): expected a number, got string "x"'),
        ("isNaN(result)", None, "isNaN(result): expected a number, got nil"),
        ("isInf(result)", True, "expected a number, got bool true"),
        ("asInt(result)", "1.5", 'cannot read string "1.5" as an integer'),
        ("asInt(result)", " 1", "cannot read string"),
        ("asInt(result)", "1_000", "cannot read string"),
        ("asInt(result)", math.nan, "cannot convert number NaN to an integer"),
        ("asInt(result)", "99999999999999999999", "does not fit in a 64-bit integer"),
        ("asInt(result)", None, "expected a number, got nil"),
        ("asFloat(result)", "abc", 'cannot read string "abc" as a number'),
        ("asFloat(result)", "1e999", "too large for a float"),
        ("asFloat(result)", True, "expected a number, got bool true"),
        ("abs(result)", "x", "expected a number"),
        ("max(result)", [1, "a"], 'expected a number, got string "a"'),
        ("sum(result)", [1, None], "sum(result): expected a number, got nil"),
    ],
)
def test_function_errors(source: str, result: object, message: str) -> None:
    assert message in str(eval_error(source, result))


# Predicates


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ("all(result, {# > 0})", [], True),
        ("any(result, {# > 0})", [], False),
        ("none(result, {# > 5})", [1, 2], True),
        ("none(result, {# > 1})", [1, 2], False),
        ("one(result, {# > 1})", [1, 2], True),
        ("one(result, {# > 0})", [1, 2], False),
        ("filter(result, {# > 1})", [1, 2, 3], [2, 3]),
        ("map(result, {# * 10})", [1, 2], [10, 20]),
        ("count(result, {# > 1})", [1, 2, 3], 2),
        ("count(result)", [True, False, True], 2),
        ("all(result, # > 0)", [1], True),  # expr also takes a predicate without braces
        ("all(result, {len(#) > 0 && #[0] > 0})", [[1], [2, 0]], True),
        ("any(result, {any(#, {# < 0})})", [[1], [2, -1]], True),  # '#' is the innermost element
        ("all(result, {# > result[0] - 1})", [5, 6], True),  # 'result' stays visible inside
        ("len(filter(result, {# >= 0.5})) >= 2", [0.9, 0.1, 0.6], True),
        ("sum(map(result, {# * 2})) == 6", [1, 2], True),
        ("filter(result, {# > 0})[0]", [-1, 4], 4),
        ('all(result, {#["ok"]})', [{"ok": True}, {"ok": True}], True),
        ("all([1, 2], {# in result})", [1, 2, 3], True),
    ],
)
def test_predicates(source: str, result: object, expected: object) -> None:
    assert same_value(evaluate(source, result), expected)


def test_all_and_any_stop_early() -> None:
    # The second element would fail the predicate's type check; a decided answer never looks at it.
    assert evaluate("all(result, {# > 1})", [0, "x"]) is False
    assert evaluate("any(result, {# > 1})", [2, "x"]) is True


def test_predicate_errors() -> None:
    assert "all() needs a list, got number 5" in str(eval_error("all(result, {# > 0})", 5))
    assert "expected true or false for element 1, got number 1" in str(eval_error("all(result, {#})", [1]))
    assert "expected true or false for element 2" in str(eval_error("count(result)", [True, 2]))
    assert "cannot compare" in str(eval_error("any(result, {# > 0})", ["a"]))


def test_nested_predicates_are_bounded() -> None:
    error = eval_error("any(result, {any(result, {any(result, {# < 0})})})", list(range(100)))
    assert "too much work" in str(error)
    assert evaluate("all(result, {# >= 0})", list(range(50_000))) is True


# Evaluation errors


@pytest.mark.parametrize(
    ("source", "result", "message"),
    [
        # Values of unknown type (inside JSON data, here `result.v`) are checked as they are used.
        ("result.v > 0.5", {"v": "0.7"}, 'cannot compare string "0.7" > number 0.5'),
        ("result.v > 0.5", {}, "cannot compare nil > number 0.5"),
        ("result.v >= 1", {"v": [1]}, "cannot compare list [1] >= number 1"),
        ("result.v * 2", {"v": "ab"}, "'*' needs two numbers, got string \"ab\" and number 2"),
        ("result.v + 1", {"v": True}, "'+' needs two numbers or two strings"),
        ("result.v - 1", {"v": [1]}, "'-' needs two numbers"),
        ("7 % 0", None, "7 % 0: division by zero"),
        ("result.v % 2", {"v": 7.5}, "'%' needs two integers"),
        ("10.0 ** 400", None, "too large to represent (overflow)"),
        ("result ** 2", 1e200, "too large to represent (overflow)"),
        ("(-8) ** 0.5", None, "undefined"),
        ("result.v * result.v * result.v", {"v": 2**40}, "integer overflow"),
        ("1.5 + result", 10**400, "too large to represent"),
        ("result / 1", 10**400, "too large to represent"),
        ("-result.v", {"v": "a"}, "'-' needs a number, got string \"a\""),
        ("+result.v", {}, "'+' needs a number, got nil"),
        ("!result.v", {"v": 1}, "result.v: the operand of '!' must be true or false, got number 1"),
        ("not result.v", {}, "the operand of 'not' must be true or false, got nil"),
        ("result.v && true", {"v": 1}, "result.v: each side of '&&' must be true or false, got number 1"),
        ("false || result.v", {"v": 1}, "result.v: each side of '||' must be true or false, got number 1"),
        ("true and result.v", {"v": "yes"}, "each side of 'and' must be true or false"),
        ("result.v ? 1 : 2", {}, "result.v: the condition before '?' must be true or false, got nil"),
        ("2 in result.v", {"v": 5}, "'in' needs a list or map on its right, got number 5"),
        ("1 in result.v", {"v": {"a": 1}}, "'in' looks for map keys, which are strings, not number 1"),
        ("'b' in result.v", {"v": "abc"}, "for a substring write 'x contains y'"),
        ("result.v contains 'a'", {"v": 1}, "'contains' needs two strings, got number 1"),
        ("'a' matches result.v", {"v": "("}, "invalid regular expression"),
        ("result.a..result.b", {"a": 1, "b": 10**9}, "is too large"),
    ],
)
def test_eval_errors_name_the_failing_part(source: str, result: object, message: str) -> None:
    assert message in str(eval_error(source, result))


def test_test_requires_a_bool() -> None:
    with pytest.raises(ConditionEvalError) as caught:
        compile_condition("result[0]").test([0.5])
    assert str(caught.value) == "condition must be true or false, got 0.5"
    with pytest.raises(ConditionEvalError, match='got "healthy"'):
        compile_condition("result").test("healthy")
    with pytest.raises(ConditionEvalError, match="got nil"):
        compile_condition("result").test(None)
    assert compile_condition("result").test(True) is True


def test_evaluate_returns_any_value() -> None:
    assert evaluate("result[0] * 2", [0.25]) == 0.5
    assert evaluate("result", {"a": 1}) == {"a": 1}


def test_deeply_nested_results_give_an_eval_error() -> None:
    deep: list[object] = []
    innermost = deep
    for _ in range(50_000):
        inner: list[object] = []
        innermost.append(inner)
        innermost = inner
    assert "nested too deeply" in str(eval_error("result == result", deep))
    assert "nested too deeply" in str(eval_error("max(result)", deep))


# Compile-time rejection of anything that is not a condition


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("__import__('os')", "unknown function '__import__'; allowed: abs, all, any,"),
        ("().__class__", "attribute access is not allowed"),
        ("result.__class__", "attribute access is not allowed"),
        ("x.y", "unknown name 'x'"),
        ("result._private", "attribute access is not allowed"),
        ("result. status", "attribute access is not allowed"),
        ('result["__class__"]', "strings may not contain '__'"),
        ('"__"', "strings may not contain '__'"),
        (r'"\x5f\x5f"', "strings may not contain '__'"),  # escapes cannot sneak it in
        ("lambda: 1", "'lambda' is Python syntax"),
        ("(lambda x: x)(1)", "'lambda' is Python syntax"),
        ("import os", "'import' is Python syntax"),
        ("def f(): 1", "'def' is Python syntax"),
        ('open("/etc/passwd")', "unknown function 'open'"),
        ('exec("1")', "unknown function 'exec'"),
        ('eval("1")', "unknown function 'eval'"),
        ("getattr(result, 'x')", "unknown function 'getattr'"),
        ("10 ** 100000", "exponent too large"),
        ("2 ^ 99999", "exponent too large"),
        ("2 ** -5000", "exponent too large"),
        ("2 ** (99999)", "exponent too large"),
        ("os", "unknown name 'os'; the only variable is 'result'"),
        ("None", "did you mean 'nil'?"),
        ("True", "did you mean 'true'?"),
        ("f'{result}'", "unknown name 'f'"),
        ("(result := 1)", "'=' is assignment"),
        ("[x for x in result]", "unknown name 'x'"),
        ("**kwargs", "expected an expression, found '**'"),
        ("*result", "expected an expression, found '*'"),
        ("result; 1", "';' is only allowed after 'let x = value'"),
        ("result == 1 & true", "use '&&'"),
        ("result | 1", "use '||'"),
        ("result = 1", "compare with '=='"),
        ("result @ 1", "unexpected character '@'"),
        ("#", "'#' (the current element) can only be used inside a predicate"),
        ("all(result, {#.__x})", "attribute access is not allowed"),
        ("all(result, {#index > 0})", "'#index' is not supported"),
        ("{'a': 1}", "map literals are not supported"),
        ("result[1:2]", "slices like x[1:3] are not supported"),
        ("result contains", "expected an expression after 'contains'"),
        ("len", "'len' is a function: call it"),
        ("result(1)", "'result' is not a function"),
        ("len(result, 1)", "len() takes 1 argument, got 2"),
        ("default(result)", "default() takes 2 arguments, got 1"),
        ("max()", "max() takes at least 1 argument, got 0"),
        ("all(result)", "all() needs a predicate as its second argument"),
        ("all()", "all() needs a list to go through"),
        ("result ?? 0 >= 1", "'??' and '>=' cannot be mixed without parentheses"),
        ("1 not 2", "expected 'in', 'contains', 'startsWith', 'endsWith' or 'matches' after 'not'"),
        ("0x1G", "invalid number '0x1G'"),
        ("1__0", "'_' may only separate digits"),
        ("1e999", "number '1e999' is too large"),
        ("99999999999999999999", "is too large"),
        (r"'\q'", "unknown escape '\\q'"),
        (r"'\x4'", "invalid escape"),
    ],
)
def test_rejected_at_compile_time(source: str, reason: str) -> None:
    assert reason in syntax_error(source).reason


@pytest.mark.parametrize(
    ("source", "position", "reason"),
    [
        ("", 0, "the condition is empty"),
        ("   ", 0, "the condition is empty"),
        ("result[0] >= ", 13, "expected an expression after '>='"),
        ("result[0] >= 0.95 &&", 20, "expected an expression after '&&'"),
        ("result[0] >= && 1", 13, "expected an expression after '>=', found '&&'"),
        ("result[0] >= 0.9)", 16, "unexpected ')' with no matching '('"),
        ("(1 + 2", 6, "expected ')' to close the '(' at col 0, found the end of the condition"),
        ("result[0", 8, "expected ']' to close the '[' at col 6"),
        (
            "len(result",
            10,
            "expected ',' or ')', found the end of the condition; the '(' at col 3 is not closed",
        ),
        ("[1 2]", 3, "expected ',' or ']', found '2'"),
        ("1 2", 2, "unexpected '2'; expected an operator or the end of the condition"),
        ("result == 'abc", 10, "unterminated string"),
        ("true ? 1", 8, "expected ':' for the '?' at col 5"),
        ("result.__class__", 6, "attribute access is not allowed"),
        ("len(result) > 0 && __import__('os')", 19, "unknown function '__import__'"),
        ("result >= foo", 10, "unknown name 'foo'"),
        ("'ok' == result['__x']", 15, "strings may not contain '__'"),
        ("2 ** 99999", 5, "exponent too large"),
        ("result\n  && nope", 12, "unknown name 'nope'"),
    ],
)
def test_syntax_error_positions(source: str, position: int, reason: str) -> None:
    error = syntax_error(source)
    assert error.position == position
    assert error.reason == reason or error.reason.startswith(reason)
    assert error.source == source


def test_syntax_error_shows_a_caret_under_the_source() -> None:
    assert str(syntax_error("result[0] >= ")) == (
        "col 13: expected an expression after '>='\n  result[0] >= \n               ^"
    )
    assert str(syntax_error("result\n  && nope")) == (
        "line 2, col 5: unknown name 'nope'; the only variable is 'result'\n    && nope\n       ^"
    )


def test_syntax_error_excerpt_of_a_long_line_keeps_the_caret_aligned() -> None:
    source = "len(result) > 0 && " * 10 + "nope"
    message = str(syntax_error(source))
    _, excerpt, caret = message.split("\n")
    assert len(excerpt) < 100
    assert excerpt[caret.index("^") : caret.index("^") + 4] == "nope"


def test_syntax_errors_are_value_errors_and_pickle() -> None:
    error = syntax_error("1 +")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.source, copy.position) == (error.reason, error.source, error.position)


# Limits


def test_deep_parentheses_are_a_syntax_error_not_a_recursion_error() -> None:
    assert "too long" in syntax_error("(" * 10_000 + "1" + ")" * 10_000).reason
    error = syntax_error("(" * 100 + "1" + ")" * 100)
    assert error.reason == "the condition is nested too deeply (more than 64 levels)"
    assert error.position == 64


@pytest.mark.parametrize(
    "source",
    [
        "-" * 100 + "1",
        "!" * 100 + "true",
        "2 ** " * 100 + "2",
        "1 + " * 100 + "1",  # left-associative: shallow to parse, deep as a tree
        "len(" * 100 + "result" + ")" * 100,
        "[" * 100 + "]" * 100,
        "result" + "[0]" * 100,
    ],
)
def test_deep_nesting_is_rejected(source: str) -> None:
    assert "nested too deeply" in syntax_error(source).reason


def test_size_limits() -> None:
    error = syntax_error("1" * 100_000)
    assert error.reason == "the condition is too long (100000 characters; the limit is 2000)"
    assert error.position == 2000
    assert "too many items" in syntax_error("[" + ", ".join(["1"] * 300) + "]").reason
    assert "too large" in syntax_error("[" + ",".join(["[1,1]"] * 250) + "]").reason
    assert evaluate("2 ** 1000 > 0") is True  # the limit itself is fine


# Caching and API


def test_compile_condition_caches_by_source() -> None:
    first = compile_condition("result[0] >= 0.95")
    assert compile_condition("result[0] >= 0.95") is first
    assert isinstance(first, Condition)
    assert first.source == "result[0] >= 0.95"
    assert repr(first) == "Condition('result[0] >= 0.95')"


def test_whitespace_and_newlines_are_insignificant() -> None:
    assert evaluate("\n  result[0] >= 0.95\n  && !isNaN(result[0])\n", [0.97]) is True


# Properties

_finite_or_special_floats = st.floats(allow_nan=True, allow_infinity=True)


@given(_finite_or_special_floats, _finite_or_special_floats)
def test_arithmetic_matches_python_floats(left: float, right: float) -> None:
    values = [left, right]
    for operator, expected in (
        ("+", left + right),
        ("-", left - right),
        ("*", left * right),
    ):
        assert same_value(evaluate(f"result[0] {operator} result[1]", values), expected)
    if right != 0:
        assert same_value(evaluate("result[0] / result[1]", values), left / right)
    for operator, compared in (
        ("<", left < right),
        ("<=", left <= right),
        (">", left > right),
        (">=", left >= right),
        ("==", left == right),
        ("!=", left != right),
    ):
        assert evaluate(f"result[0] {operator} result[1]", values) is compared


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=-(10**6), max_value=10**6))
def test_integer_arithmetic_stays_integer(left: int, right: int) -> None:
    # Literals: a measured number is a float64 in Argo, so `%` on result is a type error there.
    assert same_value(evaluate(f"{left} + ({right})"), left + right)
    assert same_value(evaluate(f"{left} * ({right})"), left * right)
    if right != 0:
        remainder = evaluate(f"{left} % ({right})")
        assert same_value(remainder, int(math.fmod(left, right)))


_condition_alphabet = st.sampled_from(
    [*"result[]()0123456789.,'\"#{}+-*/%^!<>=&|?:_ \\\n", "all", "len", "nil", "true", " in ", "__"]
)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=30), st.lists(_condition_alphabet, max_size=20).map("".join)))
def test_garbage_never_raises_anything_but_a_syntax_error(source: str) -> None:
    try:
        compile_condition(source)
    except ConditionSyntaxError as error:
        assert 0 <= error.position <= len(source)
        str(error)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
_assorted_conditions = [
    compile_condition(source)
    for source in (
        "result[0] >= 0.95 && !isNaN(result[0])",
        "len(result) == 0 || result[0] < 1",
        "result == 'healthy' || result in [1, 'a', nil]",
        "-result + result * 2 / result - 3 ** result",
        "let x = result; (x?.a ?? 1)..3 | map(# * 2)",
        "result contains 'a' || result matches '^b' || result startsWith 'c' || result endsWith 'd'",
        "all(result, .ok) || any(result, .a.b > 1) || find(result, # == 1) != nil",
        "round(result) + floor(result) + ceil(result) > mean(result) + median(result)",
        "result[-1][0] ?? result['a']",
        "all(result, {# > 0}) || any(result, {len(#) > 1})",
        "sum(result) > max(result) ? min(result) : abs(result)",
        "asInt(result) + asFloat(result) == default(result, 1)",
        "filter(map(result, {# * 2}), {isInf(#) || isNil(#)})",
        "(count(result, {'a' in #}) > 0) == one(result, {# == 1})",
    )
]


@settings(max_examples=150)
@given(_json)
def test_evaluation_never_raises_anything_but_an_eval_error(result: object) -> None:
    for condition in _assorted_conditions:
        with contextlib.suppress(ConditionEvalError):
            condition.test(result)


# --- `.name` reads a map key (expr's member access on maps, as Argo templates use it) ------


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        ('result.status == "healthy"', {"status": "healthy"}, True),
        ("result.data.successRate >= 0.95", {"data": {"successRate": 0.97}}, True),
        ("all(result, {#.ok})", [{"ok": True}, {"ok": True}], True),
        ("result.missing == nil", {"present": 1}, True),
        ('result["status"] == result.status', {"status": "x"}, True),
    ],
)
def test_dot_reads_map_keys(source: str, result: object, expected: object) -> None:
    assert compile_condition(source).evaluate(result) == expected


def test_dot_on_a_non_map_is_an_evaluation_error_never_an_attribute() -> None:
    condition = compile_condition("result[0].real == 1")
    with pytest.raises(ConditionEvalError, match="cannot index"):
        condition.evaluate([1.0])
    with pytest.raises(ConditionEvalError):
        compile_condition("result.upper == 1").evaluate("text")


# --- the rest of expr-lang as Argo evaluates it --------------------------------------------


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        # `.field` in a predicate is `#.field`
        ("all(result, .ok)", [{"ok": True}, {"ok": True}], True),
        ("all(result, {.ok})", [{"ok": True}, {"ok": False}], False),
        ("any(result, .latency.p99 > 0.5)", [{"latency": {"p99": 0.7}}], True),
        ("map(result, .v)", [{"v": 1}, {"v": 2}], [1, 2]),
        ("count(result, .code >= 500) < 2", [{"code": 500}, {"code": 200}], True),
        # string operators
        ('result.version startsWith "v2."', {"version": "v2.3.1"}, True),
        ('result.status not in ["down", "degraded"]', {"status": "up"}, True),
        ('result.message contains "timeout" == false', {"message": "ok"}, True),
        # rounding and statistics (round is half away from zero, as Go's math.Round)
        ("round(result)", 2.5, 3.0),
        ("round(result)", -2.5, -3.0),
        ("round(result)", 0.49999999999999994, 0.0),
        ("floor(result)", -1.5, -2.0),
        ("ceil(result)", 1.2, 2.0),
        ("round(2)", None, 2.0),
        ("mean(result)", [1, 2, 3, 4], 2.5),
        ("median(result)", [5, 1, 3], 3.0),
        ("median(result)", [4, 1, 3, 2], 2.5),
        ("mean(result)", [], 0.0),
        ("mean(1, [2, 3])", None, 2.0),
        # ranges, pipes, let
        ("1..3", None, [1, 2, 3]),
        ("3..1", None, []),
        ("all(0..len(result) - 1, {result[#] >= 0})", [0.5, 1.5], True),
        ("result | len()", [1, 2, 3], 3),
        ("result | filter(# > 1) | len()", [1, 2, 3], 2),
        ("result | all({# > 0})", [1, 2], True),
        ("result | max() < 1", [0.1, 0.9], True),
        ("let rate = result[0]; rate >= 0.95 && rate <= 1", [0.97], True),
        ("let a = 1; let b = a + 1; a + b", None, 3),
        ("map(result, {let double = # * 2; double + 1})", [1, 2], [3, 5]),
        ("all(result, {let outer = #; any(result, {# == outer})})", [1, 2], True),
        # the rest of the syntax expr has
        ("result?.data?.rate ?? 0", None, 0),
        ("result?.data.rate ?? 0", {}, 0),
        ("0x10 + 0o10 + 0b10", None, 26),
        ("`C:\\path` == 'C:\\\\path'", None, True),
        ("result > 1 // a comment", 2, True),
        ("/* before */ result", 3, 3),
        ("find(result, # > 1)", [1, 2, 3], 2),
        ("findIndex(result, # > 1)", [1, 2, 3], 1),
        ("findLast(result, # > 1)", [1, 2, 3], 3),
        ("findLastIndex(result, # > 5)", [1, 2, 3], -1),
        ("first(result) + last(result)", [1, 2, 3], 4),
        ("int('42') + int(2.9)", None, 44),
        ("float('0.5')", None, 0.5),
        ("lower(result) == 'ok' && upper('a') == 'A' && trim('  x ') == 'x'", "OK", True),
        ("hasPrefix(result, 'v1') && hasSuffix(result, '-rc')", "v1.2-rc", True),
        # Argo's default() and isNil() look at result, whatever their first argument
        ("default(result, 0) < 0.05", None, True),
        ("default(result, 0) < 0.05", 0.01, True),
        ("default(result, 0) < 0.05", 0.5, False),
        ("default(result.missing, 7)", {}, {}),
        ("isNil(result)", None, True),
        ("isNil(0)", None, True),
        ("isNil(result.missing)", {}, False),
    ],
)
def test_expr_language_features(source: str, result: object, expected: object) -> None:
    assert same_value(evaluate(source, result), expected)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (".ok", "'.name' without a value before it only works inside a predicate"),
        ("result | 1", "expected a function call after '|'"),
        ("result | nope()", "unknown function 'nope'"),
        ("let result = 1; result", "'result' is already defined"),
        ("let len = 1; len", "'len' is already defined"),
        ("let x = 1 x", "expected ';' after the value of 'x'"),
        ("let = 1; 2", "expected a variable name after 'let', found '='"),
        ("let 1 = 1; 2", "expected a variable name after 'let'"),
        ("let x = 1; y", "unknown name 'y'; the only variable is 'result', and the variables x"),
        ("(let x = 1; x) + x", "unknown name 'x'"),
        ("result matches '(?<'", "invalid regular expression"),
        ("result matches 'a{2,1}'", "invalid regular expression"),
        ("result matches '(a)\\\\1'", "invalid regular expression"),  # backreferences: not RE2
        ("/* open", "unterminated comment"),
        ("`open", "unterminated string"),
        ("`__class__`", "strings may not contain '__'"),
        ("result?.__x", "attribute access is not allowed"),
    ],
)
def test_expr_language_mistakes(source: str, reason: str) -> None:
    assert reason in syntax_error(source).reason


def test_matches_is_re2_and_linear() -> None:
    # A pattern that backtracks exponentially in Python's re is linear in RE2.
    text = "a" * 5000 + "!"
    assert evaluate("result matches '^(a+)+$'", text) is False
    assert evaluate("result matches '\\\\d+'", "build 42") is True
    assert "too long" in str(eval_error("'a' matches result.p", {"p": "a" * 5000}))


def test_ranges_are_bounded() -> None:
    assert "too large" in str(eval_error("len(0..result.n)", {"n": 10**9}))
    assert evaluate("len(1..result.n)", {"n": 1000}) == 1000


def test_let_and_predicates_do_not_leak_between_evaluations() -> None:
    condition = compile_condition("let x = result[0]; map(result, {# + x})")
    assert condition.evaluate([1, 2]) == [2, 3]
    assert condition.evaluate([10, 20]) == [20, 30]
