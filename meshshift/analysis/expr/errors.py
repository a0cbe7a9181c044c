"""The two ways a condition fails: it does not compile, or it cannot be evaluated on a result."""

from __future__ import annotations

# Lines longer than this are shown as a window around the error position.
_EXCERPT_WIDTH = 76


class ConditionSyntaxError(ValueError):
    """The condition is not valid: a syntax error, or something the language forbids.

    `position` is the 0-based offset into `source` where the problem is.
    """

    def __init__(self, reason: str, source: str, position: int) -> None:
        super().__init__(reason, source, position)  # these args let the error pickle
        self.reason = reason
        self.source = source
        self.position = position

    def __str__(self) -> str:
        line_start = self.source.rfind("\n", 0, self.position) + 1
        line_end = self.source.find("\n", self.position)
        if line_end == -1:
            line_end = len(self.source)
        line = self.source[line_start:line_end]
        column = self.position - line_start
        if "\n" in self.source:
            line_number = self.source.count("\n", 0, line_start) + 1
            where = f"line {line_number}, col {column}"
        else:
            where = f"col {column}"
        shown, caret = _excerpt(line, column)
        return f"{where}: {self.reason}\n  {shown}\n  {' ' * caret}^"


class ConditionEvalError(ValueError):
    """The condition could not be evaluated on this result; the message says why and how to fix it."""


class EmptyResultIndexError(ConditionEvalError):
    """`result[i]` was evaluated while `result` is an empty list (typically: the query returned no data)."""


def _excerpt(line: str, column: int) -> tuple[str, int]:
    """The part of `line` to show around `column` (one char per char, so the caret lines up), and the
    caret's offset in it."""
    printable = "".join(char if char.isprintable() else " " for char in line)
    if len(printable) <= _EXCERPT_WIDTH:
        return printable, column
    half = _EXCERPT_WIDTH // 2
    start = max(0, min(column - half, len(printable) - _EXCERPT_WIDTH))
    end = start + _EXCERPT_WIDTH
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(printable) else ""
    return prefix + printable[start:end] + suffix, len(prefix) + column - start
