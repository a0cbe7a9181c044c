"""The functions a condition may call: expr-lang builtins plus Argo's asInt, asFloat, isNaN, isInf,
isNil and default. Nothing else is callable."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshshift.analysis.expr.values import INT64_MAX, INT64_MIN, OperandError, describe

# What Go's strconv.ParseInt(s, 10, 64) and strconv.ParseFloat(s, 64) accept (Argo parses with them);
# Python's int() and float() also take spaces and '_', which Argo would reject.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)


def length(value: object) -> int:
    if isinstance(value, (str, list, dict)):
        return len(value)
    raise OperandError(f"expected a string, list or map, got {describe(value)}")


def _number_argument(value: object) -> float | int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise OperandError(f"expected a number, got {describe(value)}")


def is_nan(value: object) -> bool:
    if type(value) is float:
        return value != value
    _number_argument(value)  # an int is never NaN; anything else is an error
    return False


def is_inf(value: object) -> bool:
    if type(value) is float:
        return math.isinf(value)
    _number_argument(value)
    return False


def is_nil(value: object) -> bool:
    return value is None


def default(value: object, fallback: object) -> object:
    return fallback if value is None else value


def absolute(value: object) -> float | int:
    return abs(_number_argument(value))


def as_int(value: object) -> int:
    """Argo's asInt: a number truncated toward zero, or a decimal integer string."""
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise OperandError(f"cannot read {describe(value)} as an integer")
        number = int(value)
    else:
        real = _number_argument(value)
        if isinstance(real, float) and not math.isfinite(real):
            raise OperandError(f"cannot convert {describe(value)} to an integer")
        number = int(real)
    if not INT64_MIN <= number <= INT64_MAX:
        raise OperandError(f"{describe(value)} does not fit in a 64-bit integer")
    return number


def as_float(value: object) -> float:
    """Argo's asFloat: a number, or a string in Go's float syntax (including 'NaN' and 'Inf')."""
    if isinstance(value, str):
        if not _FLOAT_TEXT.fullmatch(value):
            raise OperandError(f"cannot read {describe(value)} as a number")
        number = float(value)
        if math.isinf(number) and "inf" not in value.lower():
            raise OperandError(f"{describe(value)} is too large for a float")
        return number
    try:
        return float(_number_argument(value))
    except OverflowError:  # an int beyond 1e308
        raise OperandError(f"{describe(value)} is too large for a float") from None


def _numbers_of(values: tuple[object, ...], found: list[int | float]) -> None:
    """Collect the numbers of `values` into `found`, looking into lists, as expr's min and max do."""
    for value in values:
        if isinstance(value, list):
            _numbers_of(tuple(value), found)
        else:
            found.append(_number_argument(value))


def maximum(*values: object) -> object:
    """The largest number among the arguments and the elements of list arguments; nil if there are none."""
    numbers: list[int | float] = []
    _numbers_of(values, numbers)
    best: int | float | None = None
    for number in numbers:
        if best is None or number > best:  # NaN never replaces, as with Go's comparisons
            best = number
    return best


def minimum(*values: object) -> object:
    """The smallest number among the arguments and the elements of list arguments; nil if there are none."""
    numbers: list[int | float] = []
    _numbers_of(values, numbers)
    best: int | float | None = None
    for number in numbers:
        if best is None or number < best:
            best = number
    return best


def total(values: list[object]) -> object:
    """sum(): ints add up to an int, any float makes the sum a float."""
    result: Any = 0
    for value in values:
        try:
            result += _number_argument(value)
        except OverflowError:
            raise OperandError("the sum is too large to represent (overflow)") from None
    return result


@dataclass(frozen=True, slots=True)
class Function:
    implementation: Callable[..., object]
    min_arguments: int
    max_arguments: int | None  # None: any number


FUNCTIONS: dict[str, Function] = {
    "len": Function(length, 1, 1),
    "isNaN": Function(is_nan, 1, 1),
    "isInf": Function(is_inf, 1, 1),
    "isNil": Function(is_nil, 1, 1),
    "default": Function(default, 2, 2),
    "asInt": Function(as_int, 1, 1),
    "asFloat": Function(as_float, 1, 1),
    "abs": Function(absolute, 1, 1),
    "min": Function(minimum, 1, None),
    "max": Function(maximum, 1, None),
}

# Functions whose second argument is a predicate {...} evaluated once per element, with `#` bound to
# the element; the value says whether the predicate may be left out.
PREDICATE_FUNCTIONS: dict[str, bool] = {
    "all": False,
    "any": False,
    "none": False,
    "one": False,
    "filter": False,
    "map": False,
    "count": True,  # count(list) counts the true elements
    "sum": True,  # sum(list, {...}) sums what the predicate returns
}

ALL_FUNCTION_NAMES = tuple(sorted([*FUNCTIONS, *PREDICATE_FUNCTIONS], key=str.lower))
