"""The syntax tree of a condition. Every node knows its span in the source, for error messages, and
its depth, so that limits are checked while parsing."""

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
    """`#`: the current element inside a predicate."""

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
    operator: str  # as written, e.g. 'and' or '&&'; 'not in' for the negated membership test
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


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    arguments: tuple[Node, ...]
    predicate: Node | None  # the {...} argument of all, any, filter, ...
    start: int
    end: int
    depth: int


Node = Literal | ResultRef | ElementRef | ListLiteral | Unary | Binary | Ternary | Index | Call
