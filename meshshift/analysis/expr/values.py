"""Values at evaluation time and the operators on them, with expr-lang's semantics.

Values are JSON data: nil (None), bool, number (int or float; a bool is never a number), string,
list and map (dict with string keys). An operation that cannot handle its operands raises
OperandError with the problem in plain words; the compiler prefixes the sub-expression that failed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import re2

from meshshift.analysis.expr.limits import MAX_PATTERN_LENGTH, MAX_RANGE_ITEMS

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


def member(needle: object, container: object) -> object:
    """`needle in container`: an equal element of a list, or a key of a map (expr's `in`; a substring
    is `contains`)."""
    if isinstance(container, list):
        return any(values_equal(item, needle) for item in container)
    if isinstance(container, dict):
        if not isinstance(needle, str):
            raise OperandError(f"'in' looks for map keys, which are strings, not {describe(needle)}")
        return needle in container
    if container is None:
        return False  # as in expr
    if isinstance(container, str):
        raise OperandError(
            f"'in' needs a list or map on its right, got {describe(container)}; "
            "for a substring write 'x contains y'"
        )
    raise OperandError(f"'in' needs a list or map on its right, got {describe(container)}")


def not_member(needle: object, container: object) -> object:
    return not member(needle, container)


def _two_strings(symbol: str, left: object, right: object) -> tuple[str, str]:
    if type(left) is str and type(right) is str:
        return left, right
    raise _cannot(symbol, "two strings", left, right)


def contains(left: object, right: object) -> object:
    text, part = _two_strings("contains", left, right)
    return part in text


def starts_with(left: object, right: object) -> object:
    text, prefix = _two_strings("startsWith", left, right)
    return text.startswith(prefix)


def ends_with(left: object, right: object) -> object:
    text, suffix = _two_strings("endsWith", left, right)
    return text.endswith(suffix)


class PatternError(ValueError):
    """A regular expression RE2 does not accept."""


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return options


_RE2_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled with RE2, the engine of Go's regexp (linear time: no catastrophic
    backtracking); PatternError when RE2 refuses it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(
            f"the pattern is too long ({len(pattern)} characters; the limit is {MAX_PATTERN_LENGTH})"
        )
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"invalid regular expression {json.dumps(pattern[:60])}: {reason}") from None


def matches(left: object, right: object) -> object:
    """expr's `matches`: the RE2 pattern on the right is found anywhere in the string on the left."""
    text, pattern = _two_strings("matches", left, right)
    try:
        compiled = compile_pattern(pattern)
    except PatternError as error:
        raise OperandError(str(error)) from None
    return compiled.search(text) is not None


def not_(operation: Callable[[object, object], object]) -> Callable[[object, object], object]:
    def negated(left: object, right: object) -> object:
        return not operation(left, right)

    return negated


def integer_range(left: Any, right: Any) -> object:
    """`a..b`: the integers from a to b, both included (empty when b < a), as in expr."""
    if type(left) is not int or type(right) is not int:
        raise _cannot("..", "two integers", left, right)
    if right - left + 1 > MAX_RANGE_ITEMS:
        raise OperandError(f"the range {left}..{right} is too large (at most {MAX_RANGE_ITEMS} numbers)")
    return list(range(left, right + 1))


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
    "in": member,
    "not in": not_member,
    "contains": contains,
    "not contains": not_(contains),
    "startsWith": starts_with,
    "not startsWith": not_(starts_with),
    "endsWith": ends_with,
    "not endsWith": not_(ends_with),
    "matches": matches,
    "not matches": not_(matches),
    "..": integer_range,
}
UNARY_OPERATIONS: dict[str, Callable[[object], object]] = {
    "-": negate,
    "+": identity,
}
