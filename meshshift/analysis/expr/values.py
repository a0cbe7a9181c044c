"""Values at evaluation time and the operators on them, with expr-lang's semantics.

Values are JSON data: nil (None), bool, number (int or float; a bool is never a number), string,
list and map (dict with string keys). An operation that cannot handle its operands raises
OperandError with the problem in plain words; the compiler prefixes the sub-expression that failed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

NUMBER_TYPES: tuple[type, ...] = (int, float)
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_RENDER_WIDTH = 60
_RENDER_ITEMS = 5


class OperandError(Exception):
    """An operation got operands it cannot handle."""


def type_name(value: object) -> str:
    kind = type(value)
    if value is None:
        return "nil"
    if kind is bool:
        return "bool"
    if kind in NUMBER_TYPES:
        return "number"
    if kind is str:
        return "string"
    if kind is list:
        return "list"
    if kind is dict:
        return "map"
    return kind.__name__


def render(value: object) -> str:
    """`value` written as in a condition, shortened to fit in a message."""
    text = _render(value, nesting=0)
    return text if len(text) <= _RENDER_WIDTH else text[: _RENDER_WIDTH - 3] + "..."


def describe(value: object) -> str:
    """Type and value, e.g. 'string "a"'; just 'nil' for nil."""
    return "nil" if value is None else f"{type_name(value)} {render(value)}"


def _render(value: object, nesting: int) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    if isinstance(value, int):
        # str() of a huge int is slow (and refused beyond 4300 digits)
        return str(value) if value.bit_length() <= 128 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, str):
        return json.dumps(value[:_RENDER_WIDTH], ensure_ascii=False)
    if isinstance(value, (list, dict)):
        if nesting >= 2:
            return "[...]" if isinstance(value, list) else "{...}"
        if isinstance(value, list):
            parts = [_render(item, nesting + 1) for item in value[:_RENDER_ITEMS]]
        else:
            pairs = list(value.items())[:_RENDER_ITEMS]
            parts = [f"{_render(key, nesting + 1)}: {_render(item, nesting + 1)}" for key, item in pairs]
        if len(value) > _RENDER_ITEMS:
            parts.append("...")
        opening, closing = ("[", "]") if isinstance(value, list) else ("{", "}")
        return opening + ", ".join(parts) + closing
    return f"<{type(value).__name__}>"


def values_equal(left: object, right: object) -> bool:
    """expr's `==`: numbers compare by value across int and float, other values only equal values of
    the same type, lists and maps compare element by element."""
    left_type = type(left)
    right_type = type(right)
    if left_type in NUMBER_TYPES and right_type in NUMBER_TYPES:
        return left == right
    if left_type is not right_type:
        return False
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(values_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            values_equal(item, right[key]) for key, item in left.items()
        )
    return left == right


def _cannot(symbol: str, needs: str, left: object, right: object) -> OperandError:
    return OperandError(f"'{symbol}' needs {needs}, got {describe(left)} and {describe(right)}")


_OVERFLOW = "the result is too large to represent (overflow)"

# The operations take `Any`: operands are dynamically typed, and each operation checks their types
# itself (with `type(x) in NUMBER_TYPES`, which also keeps bools out) before using them.


def add(left: Any, right: Any) -> object:
    if type(left) in NUMBER_TYPES and type(right) in NUMBER_TYPES:
        try:
            return left + right
        except OverflowError:  # a huge int meeting a float
            raise OperandError(_OVERFLOW) from None
    if type(left) is str and type(right) is str:
        return left + right
    raise _cannot("+", "two numbers or two strings", left, right)


def subtract(left: Any, right: Any) -> object:
    if type(left) in NUMBER_TYPES and type(right) in NUMBER_TYPES:
        try:
            return left - right
        except OverflowError:
            raise OperandError(_OVERFLOW) from None
    raise _cannot("-", "two numbers", left, right)


def multiply(left: Any, right: Any) -> object:
    if type(left) is int and type(right) is int:
        product = left * right
        # Unbounded ints would let a chain of products run for minutes; expr's ints are 64-bit.
        if not INT64_MIN <= product <= INT64_MAX:
            raise OperandError("integer overflow: the product does not fit in 64 bits")
        return product
    if type(left) in NUMBER_TYPES and type(right) in NUMBER_TYPES:
        try:
            return left * right
        except OverflowError:
            raise OperandError(_OVERFLOW) from None
    raise _cannot("*", "two numbers", left, right)


def divide(left: Any, right: Any) -> object:
    """Float division, as in expr (and Go): x / 0 is +Inf or -Inf, 0 / 0 is NaN."""
    if type(left) in NUMBER_TYPES and type(right) in NUMBER_TYPES:
        try:
            return left / right
        except ZeroDivisionError:
            if left == 0 or left != left:  # 0 / 0 and NaN / 0
                return math.nan
            same_sign = (left > 0) == (math.copysign(1.0, right) > 0)  # right is 0, 0.0 or -0.0
            return math.inf if same_sign else -math.inf
        except OverflowError:
            raise OperandError(_OVERFLOW) from None
    raise _cannot("/", "two numbers", left, right)


def modulo(left: Any, right: Any) -> object:
    """Integer remainder with the sign of the dividend, as in expr (Go): -7 % 3 == -1."""
    if type(left) is int and type(right) is int:
        if right == 0:
            raise OperandError("division by zero")
        remainder: int = abs(left) % abs(right)
        return -remainder if left < 0 else remainder
    raise _cannot("%", "two integers", left, right)


def power(left: Any, right: Any) -> object:
    """Always a float, as in expr; float math keeps it O(1) whatever the operands."""
    if type(left) in NUMBER_TYPES and type(right) in NUMBER_TYPES:
        try:
            return math.pow(left, right)
        except OverflowError:
            raise OperandError(_OVERFLOW) from None
        except ValueError:
            raise OperandError(
                "the result is undefined (a negative number to a fractional power, or 0 to a negative one)"
            ) from None
    raise _cannot("**", "two numbers", left, right)


def _cannot_compare(left: object, symbol: str, right: object) -> OperandError:
    return OperandError(
        f"cannot compare {describe(left)} {symbol} {describe(right)}; "
        "'<', '<=', '>' and '>=' need two numbers or two strings"
    )


def less(left: Any, right: Any) -> object:
    left_type, right_type = type(left), type(right)
    if (left_type in NUMBER_TYPES and right_type in NUMBER_TYPES) or (left_type is str and right_type is str):
        return left < right
    raise _cannot_compare(left, "<", right)


def less_equal(left: Any, right: Any) -> object:
    left_type, right_type = type(left), type(right)
    if (left_type in NUMBER_TYPES and right_type in NUMBER_TYPES) or (left_type is str and right_type is str):
        return left <= right
    raise _cannot_compare(left, "<=", right)


def greater(left: Any, right: Any) -> object:
    left_type, right_type = type(left), type(right)
    if (left_type in NUMBER_TYPES and right_type in NUMBER_TYPES) or (left_type is str and right_type is str):
        return left > right
    raise _cannot_compare(left, ">", right)


def greater_equal(left: Any, right: Any) -> object:
    left_type, right_type = type(left), type(right)
    if (left_type in NUMBER_TYPES and right_type in NUMBER_TYPES) or (left_type is str and right_type is str):
        return left >= right
    raise _cannot_compare(left, ">=", right)


def equal(left: object, right: object) -> object:
    return values_equal(left, right)


def not_equal(left: object, right: object) -> object:
    return not values_equal(left, right)


def contains(needle: object, container: object) -> object:
    """`needle in container`: an equal element of a list, a key of a map, a substring of a string."""
    if isinstance(container, list):
        return any(values_equal(item, needle) for item in container)
    if isinstance(container, (dict, str)):
        if not isinstance(needle, str):
            kind = "map keys" if isinstance(container, dict) else "substrings"
            raise OperandError(f"'in' looks for {kind}, which are strings, not {describe(needle)}")
        return needle in container
    if container is None:
        return False  # as in expr
    raise OperandError(f"'in' needs a list, map or string on its right, got {describe(container)}")


def not_contains(needle: object, container: object) -> object:
    return not contains(needle, container)


def negate(operand: Any) -> object:
    if type(operand) in NUMBER_TYPES:
        return -operand
    raise OperandError(f"'-' needs a number, got {describe(operand)}")


def identity(operand: object) -> object:
    if type(operand) in NUMBER_TYPES:
        return operand
    raise OperandError(f"'+' needs a number, got {describe(operand)}")


# By canonical operator ('^' is spelled '**' here). The compiler handles '&&', '||', '??' and '!'
# itself: they short-circuit or are hot enough to inline.
BINARY_OPERATIONS: dict[str, Callable[[object, object], object]] = {
    "+": add,
    "-": subtract,
    "*": multiply,
    "/": divide,
    "%": modulo,
    "**": power,
    "<": less,
    "<=": less_equal,
    ">": greater,
    ">=": greater_equal,
    "==": equal,
    "!=": not_equal,
    "in": contains,
    "not in": not_contains,
}
UNARY_OPERATIONS: dict[str, Callable[[object], object]] = {
    "-": negate,
    "+": identity,
}
