"""expr's type check, which Argo runs on every evaluation.

Argo compiles each condition with an environment holding the measured value, so expr knows the
Go type of `result` (float64 for a Prometheus scalar, []float64 for a vector, a map for a web JSON
object, ...) and refuses, before evaluating anything, an operation whose operand types are known
and do not fit: `asFloat(result) == "1.1"`, or `result == "up"` when result is a number, is an error
("mismatched types"), not false. Values of unknown type (elements of JSON data, `default(...)`) are
compared at run time, where unlike values are simply not equal.

`check` runs the same rules on our syntax tree: at compile time with `result` of unknown type (so
only the statically certain mistakes are reported, as lint errors), and at evaluation with the type
of the measured value (cached per condition and type).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from meshshift.analysis.expr.nodes import (
    Binary,
    Call,
    ElementRef,
    Index,
    Let,
    ListLiteral,
    Literal,
    Node,
    ResultRef,
    Ternary,
    Unary,
    Variable,
)
from meshshift.analysis.expr.values import PatternError, compile_pattern


class Kind(Enum):
    UNKNOWN = "interface {}"
    NIL = "<nil>"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float64"
    STRING = "string"
    LIST = "list"
    MAP = "map[string]interface {}"


@dataclass(frozen=True, slots=True)
class Nature:
    kind: Kind
    element: Nature | None = None  # for lists

    def __str__(self) -> str:
        if self.kind is Kind.LIST:
            return f"[]{self.element or UNKNOWN}"
        return str(self.kind.value)

    @property
    def unknown(self) -> bool:
        return self.kind is Kind.UNKNOWN

    @property
    def number(self) -> bool:
        return self.kind in (Kind.INT, Kind.FLOAT)

    def item(self) -> Nature:
        """The nature of an element (or of a map value, a string's character)."""
        if self.kind is Kind.LIST:
            return self.element or UNKNOWN
        if self.kind is Kind.STRING:
            return STRING
        return UNKNOWN


UNKNOWN = Nature(Kind.UNKNOWN)
NIL = Nature(Kind.NIL)
BOOL = Nature(Kind.BOOL)
INT = Nature(Kind.INT)
FLOAT = Nature(Kind.FLOAT)
STRING = Nature(Kind.STRING)
MAP = Nature(Kind.MAP)
FLOAT_LIST = Nature(Kind.LIST, FLOAT)
ANY_LIST = Nature(Kind.LIST, UNKNOWN)
INT_LIST = Nature(Kind.LIST, INT)


def nature_of(value: object) -> Nature:
    """The Go type Argo's providers give such a value: numbers are float64, a list of numbers is
    Prometheus' []float64, JSON arrays and objects hold values of unknown type."""
    kind = type(value)
    if value is None:
        return NIL
    if kind is bool:
        return BOOL
    if kind is int or kind is float:
        return FLOAT
    if kind is str:
        return STRING
    if kind is list:
        assert isinstance(value, list)
        if all(type(item) is float or type(item) is int for item in value):
            return FLOAT_LIST
        return ANY_LIST
    if kind is dict:
        return MAP
    return UNKNOWN


class CheckError(Exception):
    def __init__(self, message: str, node: Node) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


_FUNCTION_NATURES: dict[str, Nature] = {
    "len": INT,
    "isNaN": BOOL,
    "isInf": BOOL,
    "isNil": BOOL,
    "asInt": INT,
    "asFloat": FLOAT,
    "int": INT,
    "float": FLOAT,
    "round": FLOAT,
    "floor": FLOAT,
    "ceil": FLOAT,
    "mean": FLOAT,
    "median": FLOAT,
    "lower": STRING,
    "upper": STRING,
    "trim": STRING,
    "hasPrefix": BOOL,
    "hasSuffix": BOOL,
    "all": BOOL,
    "any": BOOL,
    "none": BOOL,
    "one": BOOL,
    "count": INT,
    "findIndex": INT,
    "findLastIndex": INT,
}
_CANONICAL = {"and": "&&", "or": "||", "^": "**"}


def check(tree: Node, result: Nature, slot_count: int) -> None:
    """Raise CheckError for the first operation expr's checker would refuse."""
    _Checker(result, slot_count).visit(tree)


class _Checker:
    def __init__(self, result: Nature, slot_count: int) -> None:
        self.result = result
        self.slots: list[Nature] = [UNKNOWN] * slot_count

    def visit(self, node: Node) -> Nature:
        match node:
            case Literal():
                return _literal_nature(node.value)
            case ResultRef():
                return self.result
            case ElementRef():
                return self.slots[node.slot]
            case Variable():
                return self.slots[node.slot]
            case Let():
                self.slots[node.slot] = self.visit(node.value)
                return self.visit(node.body)
            case ListLiteral():
                items = [self.visit(item) for item in node.items]
                if items and all(item.kind is items[0].kind for item in items):
                    return Nature(Kind.LIST, items[0])
                return ANY_LIST
            case Unary():
                return self._unary(node)
            case Binary():
                return self._binary(node)
            case Ternary():
                condition = self.visit(node.condition)
                if not (condition.unknown or condition.kind is Kind.BOOL):
                    raise CheckError(f"non-bool expression (type {condition}) used as condition", node)
                if_true = self.visit(node.if_true)
                if_false = self.visit(node.if_false)
                return if_true if if_true == if_false else UNKNOWN
            case Index():
                target = self.visit(node.target)
                self.visit(node.key)
                return target.item()
            case Call():
                return self._call(node)

    def _call(self, node: Call) -> Nature:
        arguments = [self.visit(argument) for argument in node.arguments]
        if node.predicate is not None:
            collection = arguments[0]
            self.slots[node.slot] = collection.item()
            body = self.visit(node.predicate)
            if node.name == "filter":
                return collection if collection.kind is Kind.LIST else ANY_LIST
            if node.name == "map":
                return Nature(Kind.LIST, body)
            if node.name in ("find", "findLast"):
                return collection.item()
        if node.name == "abs" and arguments and arguments[0].number:
            return arguments[0]
        return _FUNCTION_NATURES.get(node.name, UNKNOWN)

    def _unary(self, node: Unary) -> Nature:
        operand = self.visit(node.operand)
        if node.operator in ("!", "not"):
            if operand.unknown or operand.kind is Kind.BOOL:
                return BOOL
        elif operand.unknown or operand.number:
            return operand
        raise CheckError(f"invalid operation: {node.operator} (mismatched type {operand})", node)

    def _binary(self, node: Binary) -> Nature:
        left = self.visit(node.left)
        right = self.visit(node.right)
        operator = _CANONICAL.get(node.operator, node.operator)
        base = operator.removeprefix("not ")
        either_unknown = left.unknown or right.unknown
        uniform = _UNIFORM_OPERATIONS.get(base)
        if uniform is not None:
            fits, nature = uniform
            if _maybe(left, right, fits):
                return nature
        elif base in ("==", "!="):
            if _comparable(left, right):
                return BOOL
        elif base in ("<", "<=", ">", ">="):
            if _maybe(left, right, _is_number) or _maybe(left, right, _is_string):
                return BOOL
        elif base in ("-", "*"):
            if _maybe(left, right, _is_number):
                return _promote(left, right)
        elif base == "+":
            if _maybe(left, right, _is_number):
                return _promote(left, right)
            if _maybe(left, right, _is_string):
                return STRING if not either_unknown else UNKNOWN
        elif base == "in":
            if _membership_fits(left, right):
                return BOOL
        elif base == "matches":
            if isinstance(node.right, Literal) and isinstance(node.right.value, str):
                try:
                    compile_pattern(node.right.value)
                except PatternError as error:
                    raise CheckError(str(error), node) from None
            if _maybe(left, right, _is_string):
                return BOOL
        elif base == "??":
            if left.kind is Kind.NIL:
                return right
            return left if right.kind is Kind.NIL or right == left else UNKNOWN
        raise CheckError(f"invalid operation: {base} (mismatched types {left} and {right})", node)


def _literal_nature(value: object) -> Nature:
    if value is None:
        return NIL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STRING
    return UNKNOWN


def _is_bool(nature: Nature) -> bool:
    return nature.kind is Kind.BOOL


def _is_number(nature: Nature) -> bool:
    return nature.number


def _is_int(nature: Nature) -> bool:
    return nature.kind is Kind.INT


def _is_string(nature: Nature) -> bool:
    return nature.kind is Kind.STRING


# The operators whose two operands must both pass one test, and the nature of their result.
_UNIFORM_OPERATIONS: dict[str, tuple[Callable[[Nature], bool], Nature]] = {
    "&&": (_is_bool, BOOL),
    "||": (_is_bool, BOOL),
    "/": (_is_number, FLOAT),
    "**": (_is_number, FLOAT),
    "%": (_is_int, INT),
    "contains": (_is_string, BOOL),
    "startsWith": (_is_string, BOOL),
    "endsWith": (_is_string, BOOL),
    "..": (_is_int, INT_LIST),
}


def _maybe(left: Nature, right: Nature, fits: Callable[[Nature], bool]) -> bool:
    """Both fit, or one is unknown and the other fits, or both are unknown (expr's MaybeCompatible)."""
    if left.unknown and right.unknown:
        return True
    if left.unknown:
        return fits(right)
    if right.unknown:
        return fits(left)
    return fits(left) and fits(right)


def _comparable(left: Nature, right: Nature) -> bool:
    return (
        left.unknown
        or right.unknown
        or left.kind is Kind.NIL
        or right.kind is Kind.NIL
        or (left.number and right.number)
        or (left.kind is Kind.LIST and right.kind is Kind.LIST)
        or left == right
    )


def _promote(left: Nature, right: Nature) -> Nature:
    if left.unknown or right.unknown:
        return UNKNOWN
    return INT if left.kind is Kind.INT and right.kind is Kind.INT else FLOAT


def _membership_fits(needle: Nature, container: Nature) -> bool:
    """expr's rules for `in`: a map key (strings), an element of a list, or anything unknown."""
    if container.kind is Kind.MAP:
        return needle.unknown or needle.kind is Kind.STRING
    if container.kind is Kind.LIST:
        return _comparable(needle, container.item())
    if needle.unknown and container.kind in (Kind.STRING, Kind.LIST, Kind.MAP):
        return True
    return container.unknown
