"""The fixed thresholds a condition compares the result with, for drawing them (`analyze --plot`).

Only the comparisons a plot can show are found: `result OP number` and `result[0] OP number` (either
side, `-` allowed on the number), wherever they sit in the condition (`len(result) > 0 && result[0]
>= 0.95` gives `>= 0.95`). Anything else (a function of the result, a list predicate) has no line to
draw and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshshift.analysis.expr.errors import ConditionSyntaxError
from meshshift.analysis.expr.nodes import Binary, Index, Literal, Node, ResultRef, Unary, walk
from meshshift.analysis.expr.parser import parse

_ORDERING = ("<", "<=", ">", ">=", "==")
_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "=="}


@dataclass(frozen=True, slots=True)
class Threshold:
    operator: str  # how the result compares with the value: result[0] `operator` value
    value: float


def thresholds(condition: str) -> list[Threshold]:
    """The thresholds of `condition` (see the module docstring); none for one that does not parse."""
    try:
        tree, _ = parse(condition)
    except ConditionSyntaxError:
        return []
    found = []
    for node in walk(tree):
        if not isinstance(node, Binary) or node.operator not in _ORDERING:
            continue
        if _is_result(node.left) and (value := _number(node.right)) is not None:
            found.append(Threshold(node.operator, value))
        elif _is_result(node.right) and (value := _number(node.left)) is not None:
            found.append(Threshold(_MIRRORED[node.operator], value))
    return found


def _is_result(node: Node) -> bool:
    if isinstance(node, ResultRef):
        return True
    return (
        isinstance(node, Index)
        and isinstance(node.target, ResultRef)
        and isinstance(node.key, Literal)
        and node.key.value == 0
    )


def _number(node: Node) -> float | None:
    if isinstance(node, Unary) and node.operator in ("-", "+"):
        inner = _number(node.operand)
        return None if inner is None else (-inner if node.operator == "-" else inner)
    if isinstance(node, Literal) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    return None
