"""The functions a condition may call: expr-lang builtins plus Argo's asInt, asFloat, isNaN, isInf,
isNil and default. Nothing else is callable.

Argo replaces expr's `default` and gives `isNil` with closures over the measured value: both look at
`result`, whatever their first argument is (`default(x, d)` is d when result is nil, else result).
The compiler implements those two, since they need `result`; they are listed here for their arity.
"""

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


# The functions that read `result` instead of their first argument (see the module docstring).
RESULT_FUNCTIONS = frozenset({"default", "isNil"})


def absolute(value: object) -> float | int:
    return abs(_number_argument(value))


# A 64-bit integer has at most 19 digits and a sign; longer text is out of range before int() reads it
# (and int() refuses more than 4300 digits with a ValueError of its own).
_MAX_INT_TEXT = 20


def as_int(value: object) -> int:
    """Argo's asInt: a number truncated toward zero, or a decimal integer string."""
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise OperandError(f"cannot read {describe(value)} as an integer")
        if len(value.lstrip("+-").lstrip("0")) > _MAX_INT_TEXT - 1:
            raise OperandError(f"{describe(value)} does not fit in a 64-bit integer")
        number = int(value)
    else:
        real = _number_argument(value)
        if isinstance(real, float) and not math.isfinite(real):
            raise OperandError(f"cannot convert {describe(value)} to an integer")
        number = int(real)
    if not INT64_MIN <= number <= INT64_MAX:
        raise OperandError(f"{describe(value)} does not fit in a 64-bit integer")
    return number


# Go's ParseFloat reads any length, but a condition has no use for a 10 kB number: beyond this the
# text is refused rather than parsed (float() of a huge string is slow).
_MAX_FLOAT_TEXT = 1000


def as_float(value: object) -> float:
    """Argo's asFloat: a number, or a string in Go's float syntax (including 'NaN' and 'Inf')."""
    if isinstance(value, str):
        if len(value) > _MAX_FLOAT_TEXT or not _FLOAT_TEXT.fullmatch(value):
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


def _numbers_flat(values: tuple[object, ...]) -> list[float]:
    numbers: list[int | float] = []
    _numbers_of(values, numbers)
    return [float(number) for number in numbers]


def mean(*values: object) -> float:
    """expr's mean: of the numbers among the arguments and in list arguments; 0.0 when there are none."""
    numbers = _numbers_flat(values)
    return math.fsum(numbers) / len(numbers) if numbers else 0.0


def median(*values: object) -> float:
    """expr's median: the middle number (the mean of the two middle ones for an even count); 0.0 for none."""
    numbers = sorted(_numbers_flat(values))
    count = len(numbers)
    if count == 0:
        return 0.0
    middle = count // 2
    return numbers[middle] if count % 2 else (numbers[middle - 1] + numbers[middle]) / 2


def _go_round(number: float) -> float:
    """Go's math.Round: half away from zero (Python's round() rounds half to even)."""
    if not math.isfinite(number):
        return number
    truncated = float(math.trunc(number))
    if abs(number - truncated) >= 0.5:
        truncated += math.copysign(1.0, number)
    return truncated


def _rounding(operation: Callable[[float], float], name: str) -> Callable[[object], float]:
    def rounded(value: object) -> float:
        number = _number_argument(value)
        if isinstance(number, int):
            return float(number)  # expr: round/floor/ceil of an int is the same number as a float
        return operation(number)

    rounded.__name__ = name
    return rounded


def _finite_or_same(operation: Callable[[float], int]) -> Callable[[float], float]:
    def applied(number: float) -> float:
        return number if not math.isfinite(number) else float(operation(number))

    return applied


def to_int(value: object) -> int:
    """expr's int(): a number truncated toward zero, or a decimal integer string."""
    return as_int(value)


def to_float(value: object) -> float:
    """expr's float(): a number, or a string in Go's float syntax."""
    return as_float(value)


def first(value: object) -> object:
    if isinstance(value, list):
        return value[0] if value else None
    raise OperandError(f"expected a list, got {describe(value)}")


def last(value: object) -> object:
    if isinstance(value, list):
        return value[-1] if value else None
    raise OperandError(f"expected a list, got {describe(value)}")


def _string_argument(value: object) -> str:
    if isinstance(value, str):
        return value
    raise OperandError(f"expected a string, got {describe(value)}")


def lower(value: object) -> str:
    return _string_argument(value).lower()


def upper(value: object) -> str:
    return _string_argument(value).upper()


def trim(value: object) -> str:
    return _string_argument(value).strip(" \t\n\r\v\f")


def has_prefix(value: object, prefix: object) -> bool:
    return _string_argument(value).startswith(_string_argument(prefix))


def has_suffix(value: object, suffix: object) -> bool:
    return _string_argument(value).endswith(_string_argument(suffix))


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
    "mean": Function(mean, 1, None),
    "median": Function(median, 1, None),
    "round": Function(_rounding(_go_round, "round"), 1, 1),
    "floor": Function(_rounding(_finite_or_same(math.floor), "floor"), 1, 1),
    "ceil": Function(_rounding(_finite_or_same(math.ceil), "ceil"), 1, 1),
    "int": Function(to_int, 1, 1),
    "float": Function(to_float, 1, 1),
    "first": Function(first, 1, 1),
    "last": Function(last, 1, 1),
    "lower": Function(lower, 1, 1),
    "upper": Function(upper, 1, 1),
    "trim": Function(trim, 1, 1),
    "hasPrefix": Function(has_prefix, 2, 2),
    "hasSuffix": Function(has_suffix, 2, 2),
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
    "find": False,
    "findIndex": False,
    "findLast": False,
    "findLastIndex": False,
}

ALL_FUNCTION_NAMES = tuple(sorted([*FUNCTIONS, *PREDICATE_FUNCTIONS], key=str.lower))
