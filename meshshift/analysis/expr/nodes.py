"""The syntax tree of a condition. Every node knows its span in the source, for error messages, and
its depth, so that limits are checked while parsing.

Predicates and `let` variables read and write numbered slots of a per-evaluation frame: each
predicate has its own slot for `#`, each variable its own, assigned by the parser.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Literal:
    value: object  # int, float, str, bool or None
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class ResultRef:
    """The variable `result`."""

    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class ElementRef:
    """`#` (or the implicit element of `.field`): the current element of the predicate using `slot`."""

    slot: int
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Variable:
    """A name declared by `let`."""

    name: str
    slot: int
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Let:
    """`let name = value; body`."""

    name: str
    slot: int
    value: Node
    body: Node
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Node, ...]
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Unary:
    operator: str  # as written: '-', '+', '!' or 'not'
    operand: Node
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    operator: str  # as written, e.g. 'and' or '&&'; 'not in', 'not contains'... for the negated forms
    left: Node
    right: Node
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Ternary:
    condition: Node
    if_true: Node
    if_false: Node
    start: int
    end: int
    depth: int


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    key: Node
    start: int
    end: int
    depth: int
    optional: bool = False  # `?.`: nil when the target is nil


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    arguments: tuple[Node, ...]
    predicate: Node | None  # the {...} argument of all, any, filter, ...
    start: int
    end: int
    depth: int
    slot: int = -1  # the predicate's slot for `#`


Node = (
    Literal | ResultRef | ElementRef | Variable | Let | ListLiteral | Unary | Binary | Ternary | Index | Call
)


def walk(node: Node) -> list[Node]:
    """Every node of the tree, `node` first (iteratively: trees are shallow, but never trust that)."""
    found: list[Node] = []
    pending = [node]
    while pending:
        current = pending.pop()
        found.append(current)
        match current:
            case Let():
                pending.extend((current.value, current.body))
            case ListLiteral():
                pending.extend(current.items)
            case Unary():
                pending.append(current.operand)
            case Binary():
                pending.extend((current.left, current.right))
            case Ternary():
                pending.extend((current.condition, current.if_true, current.if_false))
            case Index():
                pending.extend((current.target, current.key))
            case Call():
                pending.extend(current.arguments)
                if current.predicate is not None:
                    pending.append(current.predicate)
    return found
