"""Split a condition into tokens, rejecting what can never be valid (attribute access, '__')."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from meshshift.analysis.expr.errors import ConditionSyntaxError


class TokenKind(Enum):
    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    OPERATOR = "operator"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # as written in the source
    value: object  # the number, the decoded string, or the name / operator text
    start: int
    end: int

    def describe(self) -> str:
        if self.kind is TokenKind.END:
            return "the end of the condition"
        text = self.text if len(self.text) <= 20 else self.text[:17] + "..."
        return f"'{text}'"


# Longest first, so that '**' is not read as two '*' and '||' not as two pipes.
_OPERATORS = (
    "**", "==", "!=", "<=", ">=", "&&", "||", "??", "..",
    "+", "-", "*", "/", "%", "^", "<", ">", "!", "?", ":", "(", ")", "[", "]", "{", "}", ",", "#", "|",
)  # fmt: skip
# Word operators of expr; `let` declares a variable. `contains` & co. are binary operators in expr,
# not functions.
WORD_OPERATORS = frozenset({"and", "or", "not", "in", "contains", "startsWith", "endsWith", "matches", "let"})
# Characters that are never valid, with the reason to give.
_FORBIDDEN = {
    ".": "attribute access is not allowed; '.name' only reads a map key, as in result.status",
    "=": "'=' is assignment, which conditions do not have; compare with '=='",
    "&": "use '&&' (or 'and') for a logical and",
    ";": "a condition is a single expression; ';' is only allowed after 'let x = value'",
}
_DIGITS = "0123456789"
_DIGITS_NONEMPTY = tuple(_DIGITS)  # `"" in "0123456789"` is true, `"" in` this is not
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAP_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Digits may be grouped with '_' (1_000), as in expr; int() / float() reject misplaced ones.
_NUMBER = re.compile(r"(?:[0-9][0-9_]*(?:\.[0-9][0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?")
_PREFIXED_INT = re.compile(r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_]+")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]+")
_SIMPLE_ESCAPES = {
    "\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r",
    "a": "\a", "b": "\b", "f": "\f", "v": "\v",
}  # fmt: skip
_HEX_ESCAPE_WIDTHS = {"x": 2, "u": 4, "U": 8}
_INT64_MAX = 2**63 - 1


def tokenize(source: str) -> list[Token]:
    """The tokens of `source`, ending with an END token."""
    return _Lexer(source).run()


class _Lexer:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[Token] = []
        self.open_lets = 0  # `let` keywords whose ';' has not been seen yet

    def run(self) -> list[Token]:
        source = self.source
        position = 0
        length = len(source)
        while position < length:
            char = source[position]
            if char in " \t\r\n":
                position += 1
            elif source.startswith("//", position):
                end = source.find("\n", position)
                position = length if end == -1 else end
            elif source.startswith("/*", position):
                end = source.find("*/", position + 2)
                if end == -1:
                    raise ConditionSyntaxError("unterminated comment", source, position)
                position = end + 2
            elif char in _DIGITS or (char == "." and source[position + 1 : position + 2] in _DIGITS_NONEMPTY):
                token = _number(source, position)
                self.tokens.append(token)
                position = token.end
            elif source.startswith("..", position):
                self._operator("..", position)
                position += 2
            elif char == "." and _MAP_KEY.match(source, position + 1):
                # `.name` reads a map key (expr's member access on maps), nothing else: names
                # starting with '_' never pass, so `__class__` and friends stay out of reach.
                self._operator(".", position)
                position += 1
            elif source.startswith("?.", position) and (
                _MAP_KEY.match(source, position + 2) or source.startswith("[", position + 2)
            ):
                self._operator("?.", position)
                position += 2
            elif char in "\"'":
                token = _string(source, position)
                self.tokens.append(token)
                position = token.end
            elif char == "`":
                token = _raw_string(source, position)
                self.tokens.append(token)
                position = token.end
            elif match := _NAME.match(source, position):
                name = match.group()
                if name in WORD_OPERATORS:
                    self._operator(name, position)
                    if name == "let":
                        self.open_lets += 1
                else:
                    self.tokens.append(Token(TokenKind.NAME, name, name, position, match.end()))
                position = match.end()
            elif char == ";" and self.open_lets:
                self.open_lets -= 1
                self._operator(";", position)
                position += 1
            elif char == "=" and not source.startswith("==", position) and self._after_let_name():
                self._operator("=", position)
                position += 1
            else:
                operator = next((op for op in _OPERATORS if source.startswith(op, position)), None)
                if operator is None:
                    reason = _FORBIDDEN.get(char, f"unexpected character {char!r}")
                    raise ConditionSyntaxError(reason, source, position)
                self._operator(operator, position)
                position += len(operator)
        self.tokens.append(Token(TokenKind.END, "", None, length, length))
        return self.tokens

    def _operator(self, text: str, position: int) -> None:
        self.tokens.append(Token(TokenKind.OPERATOR, text, text, position, position + len(text)))

    def _after_let_name(self) -> bool:
        """Right after `let x` (or a malformed `let 1`, which the parser then explains)."""
        return any(token.kind is TokenKind.OPERATOR and token.text == "let" for token in self.tokens[-2:])


def _number(source: str, start: int) -> Token:
    if prefixed := _PREFIXED_INT.match(source, start):  # 0x2A, 0o52, 0b101010, as in expr
        end = prefixed.end()
        text = prefixed.group()
        if _NUMBER_TAIL.match(source, end):
            tail = _NUMBER_TAIL.match(source, end)
            assert tail is not None
            raise ConditionSyntaxError(f"invalid number '{source[start : tail.end()]}'", source, start)
        try:
            prefixed_value = int(text, 0)
        except ValueError:
            raise ConditionSyntaxError(
                f"invalid number '{text}': '_' may only separate digits", source, start
            ) from None
        if prefixed_value > _INT64_MAX:
            raise ConditionSyntaxError(
                f"integer '{text}' is too large (the limit is 2**63 - 1)", source, start
            )
        return Token(TokenKind.NUMBER, text, prefixed_value, start, end)
    match = _NUMBER.match(source, start)
    assert match is not None  # the caller saw a digit, or '.' and a digit
    end = match.end()
    if tail := _NUMBER_TAIL.match(source, end):  # 12abc, 1e: not a number we read
        text = source[start : tail.end()]
        raise ConditionSyntaxError(f"invalid number '{text}'", source, start)
    text = match.group()
    value: int | float
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ConditionSyntaxError(
            f"invalid number '{text}': '_' may only separate digits", source, start
        ) from None
    if isinstance(value, float) and value == float("inf"):
        raise ConditionSyntaxError(f"number '{text}' is too large", source, start)
    if isinstance(value, int) and value > _INT64_MAX:
        raise ConditionSyntaxError(f"integer '{text}' is too large (the limit is 2**63 - 1)", source, start)
    return Token(TokenKind.NUMBER, text, value, start, end)


def _checked_string(source: str, start: int, end: int, value: str) -> Token:
    if "__" in value:  # the classic first step of a sandbox escape: no use in a condition
        raise ConditionSyntaxError("strings may not contain '__' (double underscore)", source, start)
    return Token(TokenKind.STRING, source[start:end], value, start, end)


def _raw_string(source: str, start: int) -> Token:
    """A backtick string: raw, no escapes, may span lines (as in expr)."""
    end = source.find("`", start + 1)
    if end == -1:
        raise ConditionSyntaxError("unterminated string", source, start)
    return _checked_string(source, start, end + 1, source[start + 1 : end])


def _string(source: str, start: int) -> Token:
    quote = source[start]
    parts: list[str] = []
    position = start + 1
    while position < len(source):
        char = source[position]
        if char == quote:
            return _checked_string(source, start, position + 1, "".join(parts))
        if char != "\\":
            parts.append(char)
            position += 1
            continue
        escape = source[position + 1 : position + 2]
        if escape in _SIMPLE_ESCAPES:
            parts.append(_SIMPLE_ESCAPES[escape])
            position += 2
        elif escape in _HEX_ESCAPE_WIDTHS:
            width = _HEX_ESCAPE_WIDTHS[escape]
            digits = source[position + 2 : position + 2 + width]
            code = int(digits, 16) if len(digits) == width and _HEX_DIGITS.fullmatch(digits) else -1
            if not (0 <= code <= 0x10FFFF) or 0xD800 <= code <= 0xDFFF:
                raise ConditionSyntaxError(
                    f"invalid escape '\\{escape}{digits}': expected {width} hex digits of a character",
                    source,
                    position,
                )
            parts.append(chr(code))
            position += 2 + width
        elif escape == "":
            break
        else:
            raise ConditionSyntaxError(f"unknown escape '\\{escape}' in string", source, position)
    raise ConditionSyntaxError("unterminated string", source, start)
