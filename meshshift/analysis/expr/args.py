"""Put arg values into a condition without changing what the condition means.

Argo substitutes `{{args.x}}` as raw text, so `result[0] >= {{args.threshold}}` with threshold
`0 || true` passes whatever the result. Here an arg is a value, never code:

- a placeholder standing alone (`>= {{args.threshold}}`) takes a literal: a number (`0.95`, `-1`,
  `1e3`), a quoted string (`"up"`), `true`, `false` or `nil`;
- a placeholder inside a string (`result == "{{args.expected}}"`) takes any text, escaped so it
  stays inside the quotes;
- a placeholder after `.` (`result.{{args.field}}`) takes a map key (letters, digits, `_`).

Anything else is refused with ConditionArgError naming the arg.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from meshshift.analysis.expr.errors import ConditionSyntaxError
from meshshift.analysis.expr.lexer import TokenKind, tokenize

_MAP_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LITERAL_NAMES = frozenset({"true", "false", "nil"})


class ConditionArgError(ValueError):
    """An arg value that cannot stand where its placeholder is."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One `{{args.name}}` in a condition: where it is, and the value to put there."""

    start: int
    end: int
    name: str
    value: str


def substitute(text: str, placeholders: Sequence[Placeholder]) -> str:
    """`text` with every placeholder replaced by its value, as a value (see the module docstring)."""
    ordered = sorted(placeholders, key=lambda p: p.start)
    pieces: list[str] = []
    cursor = 0
    for placeholder, place in zip(ordered, _places(text, ordered), strict=True):
        pieces.append(text[cursor : placeholder.start])
        pieces.append(_replacement(placeholder, place))
        cursor = placeholder.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def checkable(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """`text` with its placeholders (start, end, arg name) replaced by stand-ins of the right kind, so
    the condition can be compiled before args have values: `result` (a value of unknown type) for a
    standalone one, `0` inside a string, `k` for a map key. ConditionArgError for a placeholder
    that is none of those."""
    ordered = sorted(spans)
    placeholders = [Placeholder(start, end, name, "") for start, end, name in ordered]
    pieces: list[str] = []
    cursor = 0
    for placeholder, place in zip(placeholders, _places(text, placeholders), strict=True):
        pieces.append(text[cursor : placeholder.start])
        pieces.append({"value": "result", "key": "k"}.get(place, "0"))
        cursor = placeholder.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _places(text: str, ordered: Sequence[Placeholder]) -> list[str]:
    """Where each placeholder stands: "value", "key", or the quote of the string it is in."""
    if not ordered:
        return []
    sentinel = _sentinel(text)
    marked: list[str] = []
    positions: list[int] = []
    cursor = 0
    length = 0
    for index, placeholder in enumerate(ordered):
        marked.append(text[cursor : placeholder.start])
        length += placeholder.start - cursor
        positions.append(length)
        name = f"{sentinel}{index}Z"
        marked.append(name)
        length += len(name)
        cursor = placeholder.end
    marked.append(text[cursor:])
    try:
        tokens = tokenize("".join(marked))
    except ConditionSyntaxError as error:
        raise ConditionArgError(f"the condition is not valid around its args: {error.reason}") from None
    places = []
    for index, placeholder in enumerate(ordered):
        position = positions[index]
        found, token = next(
            (i, t) for i, t in enumerate(tokens) if t.start <= position < max(t.end, t.start + 1)
        )
        previous = tokens[found - 1] if found > 0 else None
        if token.kind is TokenKind.STRING:
            places.append(token.text[0])
            continue
        if token.kind is TokenKind.NAME and token.text == f"{sentinel}{index}Z":
            after_dot = (
                previous is not None and previous.kind is TokenKind.OPERATOR and previous.text in (".", "?.")
            )
            before_dot = tokens[found - 2] if found > 1 else None
            if not (after_dot and before_dot is not None and before_dot.kind is TokenKind.NUMBER):
                places.append("key" if after_dot else "value")
                continue
        # inside a name or a number (`0.{{args.x}}`, `{{args.a}}{{args.b}}`)
        raise ConditionArgError(
            f'arg "{placeholder.name}": a placeholder in a condition must stand alone as a value '
            '(>= {{args.x}}) or sit inside a quoted string ("{{args.x}}")'
        )
    return places


def _sentinel(text: str) -> str:
    sentinel = "MeshshiftArg"
    while sentinel in text:
        sentinel += "X"
    return sentinel


def _replacement(placeholder: Placeholder, place: str) -> str:
    value = placeholder.value
    if place == "key":
        if _MAP_KEY.fullmatch(value):
            return value
        raise ConditionArgError(
            f'arg "{placeholder.name}" = {_show(value)} is not a map key (letters, digits and _ only)'
        )
    if place == "value":
        return _literal(placeholder)
    return _inside_string(placeholder, place)


def _literal(placeholder: Placeholder) -> str:
    value = placeholder.value.strip()
    try:
        tokens = tokenize(value)[:-1]  # without END
    except ConditionSyntaxError:
        tokens = []
    kinds = [token.kind for token in tokens]
    is_number = kinds == [TokenKind.NUMBER] or (
        kinds == [TokenKind.OPERATOR, TokenKind.NUMBER] and tokens[0].text in ("-", "+")
    )
    is_string = kinds == [TokenKind.STRING]
    is_name = kinds == [TokenKind.NAME] and tokens[0].text in _LITERAL_NAMES
    if is_number or is_string or is_name:
        return value
    raise ConditionArgError(
        f'arg "{placeholder.name}" = {_show(placeholder.value)} is not a literal: an arg in a condition '
        "must be a number or a quoted string (to compare with text, write the placeholder in quotes: "
        'result == "{{args.' + placeholder.name + '}}")'
    )


def _inside_string(placeholder: Placeholder, quote: str) -> str:
    value = placeholder.value
    if quote == "`":
        if "`" in value:
            raise ConditionArgError(
                f'arg "{placeholder.name}" contains a backtick, which a `...` string cannot hold'
            )
        return value
    escaped = "".join(_ESCAPES.get(char, char) for char in value)
    return escaped.replace(quote, "\\" + quote)


def _show(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return '"' + shown.replace('"', '\\"') + '"'
