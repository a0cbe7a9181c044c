"""Provider options with `{{args.x}}` substituted, each value escaped for where it lands.

A template's author writes the query; whoever supplies the args (a rollout, a secret, a
Deployment annotation) must not be able to change what it means. So every value is
inserted according to the lexical context of its placeholder:

PromQL (`render_promql`)
    inside "..." or '...': escaped per PromQL's (Go's) string rules: backslash, the quote,
    newline, CR, tab and other control characters, so it cannot end the string literal and
    cannot leave its label matcher. Inside `...` (raw strings have no escapes) a value with a
    backtick is rejected. Outside any string literal only one safe token is allowed: a number
    (`0.99`, `-1`, `1e3`), a duration (`5m`, `1h30m`) or a metric/label name that is not a
    PromQL keyword (`or`, `by`, `offset`...); anything else is rejected. A value in a `#`
    comment may not hold a line break. Regex matchers (`=~`) get string escaping only: the
    value stays a regex, as in Flagger's and Argo's templates.
NRQL (`render_nrql`)
    inside '...' or "...": backslash and the quote are backslash-escaped, control characters
    rejected; inside `...` (identifiers) a backtick is rejected; outside: letters, digits,
    `_` and `.` only (no `-` or `/`, which could open a comment).
URLs (`render_url`)
    in the path, query or fragment: percent-encoded (`/`, `&`, `=`, `#` included), so a
    value stays inside its path segment; a path segment a value helps to make may not be
    `.` or `..` (a client and every proxy on the way would resolve it: `/services/../health`
    reaches `/health`). In the host part: a host name (labels of letters, digits and `-`),
    an IPv4 or a bracketed IPv6 address, with an optional port; a placeholder opening the
    URL: an http(s) base URL with such a host.
JSON text (`render_json_text`, the web provider's `body`)
    inside a JSON string: JSON-escaped; outside: a number, true, false or null.
Datadog queries (`render_datadog`)
    Datadog's query language has no string quoting, so a value must be one tag-value
    token: letters, digits and `_ . : / -`.
Header values (`render_header`)
    control characters but tab are rejected (no header injection: CR, LF, NUL, and the
    vertical tab and form feed some parsers also take as line ends).
Header names (`render_header_name`)
    an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``).

A rejected value raises ProviderError naming the field and the arg: the measurement is an
Error and the query is never sent. An arg without a value also raises ProviderError (the
spec already rejects unresolved placeholders when a template is instantiated).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from enum import Enum, auto
from typing import Any, Protocol

from meshshift.ports import ProviderError
from meshshift.spec.templates import PLACEHOLDER


class _Lexer(Protocol):
    """Tracks the lexical context of a template's literal text, char by char."""

    def feed(self, text: str) -> None: ...

    def escape(self, value: str, arg: str, field: str) -> str:
        """`value` as it must be written at the current position."""
        ...

    def after_value(self) -> None:
        """The lexer's state after an inserted value (values never change the context)."""
        ...


def _render(text: str, args: Mapping[str, str], field: str, lexer: _Lexer) -> str:
    out: list[str] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        literal = text[position : match.start()]
        lexer.feed(literal)
        out.append(literal)
        name = match.group(1)
        if name not in args:
            raise ProviderError(f"{field}: arg {name!r} has no value (placeholder {match.group(0)})")
        out.append(lexer.escape(args[name], name, field))
        lexer.after_value()
        position = match.end()
    out.append(text[position:])
    return "".join(out)


def _reject(field: str, arg: str, value: str, why: str) -> ProviderError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return ProviderError(f"{field}: the value of arg {arg!r} ({shown!r}) {why}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _after_backslash(field: str, arg: str) -> ProviderError:
    return ProviderError(f"{field}: the placeholder of arg {arg!r} follows a backslash in a string literal")


def _go_string_escape(value: str, quote: str) -> str:
    """`value` as the inside of a Go/PromQL string literal delimited by `quote`."""
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == quote:
            out.append("\\" + quote)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif _CONTROL.match(char):
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


# --- PromQL ----------------------------------------------------------------------------


class _PromState(Enum):
    CODE = auto()
    DOUBLE = auto()
    SINGLE = auto()
    RAW = auto()
    COMMENT = auto()


_PROM_STRINGS = {'"': _PromState.DOUBLE, "'": _PromState.SINGLE, "`": _PromState.RAW}
_PROM_TOKEN = re.compile(
    r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"  # number
    r"|([0-9]+(ms|s|m|h|d|w|y))+"  # duration
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # metric or label name
)
_PROM_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
)


class _PromQLLexer:
    def __init__(self) -> None:
        self.state = _PromState.CODE
        self.escaped = False  # the previous char was a backslash inside a string

    def feed(self, text: str) -> None:
        for char in text:
            state = self.state
            if state is _PromState.CODE:
                if char in _PROM_STRINGS:
                    self.state = _PROM_STRINGS[char]
                elif char == "#":
                    self.state = _PromState.COMMENT
            elif state is _PromState.COMMENT:
                if char == "\n":
                    self.state = _PromState.CODE
            elif state is _PromState.RAW:
                if char == "`":
                    self.state = _PromState.CODE
            elif self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == ('"' if state is _PromState.DOUBLE else "'"):
                self.state = _PromState.CODE

    def escape(self, value: str, arg: str, field: str) -> str:
        state = self.state
        if self.escaped:
            raise _after_backslash(field, arg)
        if state is _PromState.DOUBLE:
            return _go_string_escape(value, '"')
        if state is _PromState.SINGLE:
            return _go_string_escape(value, "'")
        if state is _PromState.RAW:
            if "`" in value:
                raise _reject(field, arg, value, "contains a backtick, which cannot appear in a `...` string")
            return value
        if state is _PromState.COMMENT:
            if "\n" in value or "\r" in value:
                raise _reject(field, arg, value, "contains a line break, which would end the # comment")
            return value
        if not _PROM_TOKEN.fullmatch(value) or value.lower() in _PROM_KEYWORDS:
            raise _reject(
                field,
                arg,
                value,
                "is not allowed outside a string literal: only a number, a duration (5m) or a "
                'metric/label name may go there; quote the placeholder ("{{args.x}}") to pass text',
            )
        return value

    def after_value(self) -> None:
        pass


def render_promql(text: str, args: Mapping[str, str], *, field: str = "query") -> str:
    """A PromQL query with its args escaped (see the module docstring)."""
    return _render(text, args, field, _PromQLLexer())


# --- NRQL ------------------------------------------------------------------------------


class _NrqlState(Enum):
    CODE = auto()
    SINGLE = auto()
    DOUBLE = auto()
    IDENTIFIER = auto()
    LINE_COMMENT = auto()
    BLOCK_COMMENT = auto()


_NRQL_TOKEN = re.compile(r"[A-Za-z0-9_.]+")


class _NrqlLexer:
    def __init__(self) -> None:
        self.state = _NrqlState.CODE
        self.escaped = False
        self.previous = ""  # the previous literal char, for the two-char comment openers

    def feed(self, text: str) -> None:
        for char in text:
            self._step(char)
            self.previous = char

    def _step(self, char: str) -> None:
        state, previous = self.state, self.previous
        if state is _NrqlState.CODE:
            if char == "'":
                self.state = _NrqlState.SINGLE
            elif char == '"':
                self.state = _NrqlState.DOUBLE
            elif char == "`":
                self.state = _NrqlState.IDENTIFIER
            elif previous + char in ("--", "//"):
                self.state = _NrqlState.LINE_COMMENT
            elif previous + char == "/*":
                self.state = _NrqlState.BLOCK_COMMENT
                char = ""  # "/*/" does not close the comment
        elif state is _NrqlState.LINE_COMMENT:
            if char == "\n":
                self.state = _NrqlState.CODE
        elif state is _NrqlState.BLOCK_COMMENT:
            if previous + char == "*/":
                self.state = _NrqlState.CODE
        elif state is _NrqlState.IDENTIFIER:
            if char == "`":
                self.state = _NrqlState.CODE
        elif self.escaped:
            self.escaped = False
        elif char == "\\":
            self.escaped = True
        elif char == ("'" if state is _NrqlState.SINGLE else '"'):
            self.state = _NrqlState.CODE

    def escape(self, value: str, arg: str, field: str) -> str:
        state = self.state
        if self.escaped:
            raise _after_backslash(field, arg)
        if state in (_NrqlState.SINGLE, _NrqlState.DOUBLE):
            if _CONTROL.search(value):
                raise _reject(field, arg, value, "contains a control character")
            quote = "'" if state is _NrqlState.SINGLE else '"'
            return value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        if state is _NrqlState.IDENTIFIER:
            if "`" in value or _CONTROL.search(value):
                raise _reject(field, arg, value, "contains a backtick or a control character")
            return value
        if state in (_NrqlState.LINE_COMMENT, _NrqlState.BLOCK_COMMENT):
            if _CONTROL.search(value) or "*/" in value:
                raise _reject(field, arg, value, "would end the comment it is in")
            return value
        if not _NRQL_TOKEN.fullmatch(value):
            raise _reject(
                field,
                arg,
                value,
                "is not allowed outside a string literal: only letters, digits, _ and . may go there; "
                "quote the placeholder ('{{args.x}}') to pass text",
            )
        return value

    def after_value(self) -> None:
        self.previous = ""


def render_nrql(text: str, args: Mapping[str, str], *, field: str = "query") -> str:
    """An NRQL query with its args escaped (see the module docstring)."""
    return _render(text, args, field, _NrqlLexer())


# NRQL's relative time clauses: `SINCE 30 minutes ago`, `UNTIL 5 minutes ago`.
_NRQL_RELATIVE = re.compile(
    r"\b(SINCE|UNTIL)\s+([0-9]+(?:\.[0-9]+)?)\s+"
    r"(SECONDS?|MINUTES?|HOURS?|DAYS?|WEEKS?)\s+AGO\b",
    re.IGNORECASE,
)
_NRQL_TIME_KEYWORD = re.compile(r"\b(SINCE|UNTIL)\b", re.IGNORECASE)
_NRQL_UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400, "WEEK": 604800}
NRQL_DEFAULT_WINDOW = 3600.0  # NRQL's window without SINCE: the last hour


def _nrql_code(text: str) -> str:
    """`text` with everything that is not NRQL code (strings, identifiers, comments) blanked,
    so clauses are found where NRQL reads them, never inside a literal."""
    lexer = _NrqlLexer()
    out = []
    for char in text:
        before = lexer.state
        lexer.feed(char)
        out.append(char if before is _NrqlState.CODE and lexer.state is _NrqlState.CODE else " ")
    return "".join(out)


def nrql_at(nrql: str, at: float) -> str:
    """`nrql` evaluated as of Unix time `at` (a backtest): its relative `SINCE n unit ago` and
    `UNTIL n unit ago` become epoch milliseconds counted back from `at`, and it ends at `at`
    (`UNTIL`); without SINCE, its window is NRQL's default, the hour before `at`.

    ValueError for a time clause that cannot be moved (an absolute time, `SINCE today`...).
    """
    code = _nrql_code(nrql)
    lexer = _NrqlLexer()
    lexer.feed(nrql)
    if lexer.state is not _NrqlState.CODE:
        raise ValueError("it ends inside a comment or a literal, so no time clause can be added")
    relative = list(_NRQL_RELATIVE.finditer(code))
    keywords = list(_NRQL_TIME_KEYWORD.finditer(code))
    if len(keywords) != len(relative):
        covered = {match.start() for match in relative}
        odd = next(k for k in keywords if k.start() not in covered)
        clause = " ".join(code[odd.start() :].split()[:4])
        raise ValueError(
            f"its time clause {clause!r} cannot be replayed at another time; write it relative "
            "to now (SINCE 30 minutes ago, UNTIL 5 minutes ago)"
        )
    found = {match.group(1).upper() for match in relative}
    result, last = [], 0
    for match in relative:
        keyword, number, unit = match.group(1).upper(), float(match.group(2)), match.group(3).upper()
        seconds = number * _NRQL_UNIT_SECONDS[unit.rstrip("S")]
        result.append(nrql[last : match.start()])
        result.append(f"{keyword} {round((at - seconds) * 1000)}")
        last = match.end()
    result.append(nrql[last:])
    rewritten = "".join(result).rstrip()
    if "SINCE" not in found:
        rewritten += f" SINCE {round((at - NRQL_DEFAULT_WINDOW) * 1000)}"
    if "UNTIL" not in found:
        rewritten += f" UNTIL {round(at * 1000)}"
    return rewritten


# --- URLs ------------------------------------------------------------------------------


class _UrlState(Enum):
    START = auto()  # the scheme, before "://"
    AUTHORITY = auto()
    PATH = auto()
    QUERY = auto()
    FRAGMENT = auto()


# A DNS name: dot-separated labels of 1-63 letters, digits and inner hyphens (no empty
# label, so ".evil.com" or "a..b" cannot reach the IDNA encoder), an optional final dot.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_HOST_PORT = re.compile(rf"(?:{_HOST}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
_BASE_URL = re.compile(
    rf"https?://(?:{_HOST}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/\-]*)?"
)
_DOT_SEGMENTS = frozenset({".", ".."})


class _UrlLexer:
    def __init__(self) -> None:
        self.state = _UrlState.START
        self.seen = ""  # the literal text of the scheme part so far
        self.segment = ""  # the current path segment so far, as written
        self.segment_arg: tuple[str, str] | None = None  # (arg, value) of a value in it
        self.field = "url"

    def feed(self, text: str) -> None:
        for char in text:
            if self.state is _UrlState.START:
                self.seen += char
                if self.seen.endswith("://"):
                    self.state = _UrlState.AUTHORITY
            elif self.state is _UrlState.AUTHORITY:
                if char == "/":
                    self.state = _UrlState.PATH
                elif char == "?":
                    self.state = _UrlState.QUERY
                elif char == "#":
                    self.state = _UrlState.FRAGMENT
            elif self.state is _UrlState.PATH:
                if char in "/?#":
                    self.end_segment()
                else:
                    self.segment += char
                if char == "?":
                    self.state = _UrlState.QUERY
                elif char == "#":
                    self.state = _UrlState.FRAGMENT
            elif self.state is _UrlState.QUERY and char == "#":
                self.state = _UrlState.FRAGMENT

    def end_segment(self) -> None:
        """A path segment ends: one an arg helped to write may not be a dot segment."""
        segment, written_by = self.segment, self.segment_arg
        self.segment, self.segment_arg = "", None
        if written_by is None:
            return
        if urllib.parse.unquote(segment) in _DOT_SEGMENTS:
            arg, value = written_by
            raise _reject(self.field, arg, value, f"makes the path segment {segment!r}, which would leave it")

    def escape(self, value: str, arg: str, field: str) -> str:
        self.field = field
        if self.state is _UrlState.START:
            if self.seen or not _BASE_URL.fullmatch(value):
                raise _reject(field, arg, value, "is not an http(s) base URL (https://host[:port][/path])")
            return value
        if self.state is _UrlState.AUTHORITY:
            if not _HOST_PORT.fullmatch(value):
                raise _reject(field, arg, value, "is not a host or host:port")
            return value
        quoted = urllib.parse.quote(value, safe="")
        if self.state is _UrlState.PATH:
            self.segment += quoted
            self.segment_arg = (arg, value)
        return quoted

    def after_value(self) -> None:
        if self.state is _UrlState.START:
            self.state = _UrlState.AUTHORITY  # a whole base URL went in

    def finish(self) -> None:
        if self.state is _UrlState.PATH:
            self.end_segment()


def render_url(text: str, args: Mapping[str, str], *, field: str = "url") -> str:
    """A URL with its args percent-encoded (path, query, fragment) or checked (host)."""
    lexer = _UrlLexer()
    rendered = _render(text, args, field, lexer)
    lexer.feed(text[_last_placeholder_end(text) :])  # the literal tail ends the last segment
    lexer.finish()
    return rendered


def _last_placeholder_end(text: str) -> int:
    ends = [match.end() for match in PLACEHOLDER.finditer(text)]
    return ends[-1] if ends else len(text)


# --- JSON text -------------------------------------------------------------------------


_JSON_TOKEN = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null")


class _JsonLexer:
    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> None:
        for char in text:
            if not self.in_string:
                self.in_string = char == '"'
            elif self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False

    def escape(self, value: str, arg: str, field: str) -> str:
        if self.escaped:
            raise _after_backslash(field, arg)
        if self.in_string:
            return json.dumps(value, ensure_ascii=False)[1:-1]
        if not _JSON_TOKEN.fullmatch(value):
            raise _reject(
                field,
                arg,
                value,
                "is not a JSON number, true, false or null; "
                'quote the placeholder ("{{args.x}}") to pass text',
            )
        return value

    def after_value(self) -> None:
        pass


def render_json_text(text: str, args: Mapping[str, str], *, field: str = "body") -> str:
    """JSON text with its args JSON-escaped inside strings (numbers and literals outside)."""
    return _render(text, args, field, _JsonLexer())


def render_json_value(value: Any, args: Mapping[str, str], *, field: str = "jsonBody") -> Any:
    """A JSON value (mapping, list, scalar) with args substituted in its strings and keys.

    The result is serialised by `json.dumps`, which escapes whatever the values hold.
    """
    if isinstance(value, str):
        return render_plain(value, args, field=field)
    if isinstance(value, Mapping):
        return {
            render_plain(str(key), args, field=f"{field}.{key}"): render_json_value(
                item, args, field=f"{field}.{key}"
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [render_json_value(item, args, field=f"{field}[{index}]") for index, item in enumerate(value)]
    return value


# --- single tokens and plain text ------------------------------------------------------


class _TokenLexer:
    def __init__(self, pattern: re.Pattern[str], what: str) -> None:
        self.pattern = pattern
        self.what = what

    def feed(self, text: str) -> None:
        pass

    def escape(self, value: str, arg: str, field: str) -> str:
        if not self.pattern.fullmatch(value):
            raise _reject(field, arg, value, self.what)
        return value

    def after_value(self) -> None:
        pass


_DATADOG_TOKEN = re.compile(r"[A-Za-z0-9_.:/\-]+")


def render_datadog(text: str, args: Mapping[str, str], *, field: str = "query") -> str:
    """A Datadog query or formula: each value must be one tag-value token."""
    lexer = _TokenLexer(
        _DATADOG_TOKEN,
        "is not a Datadog tag value (letters, digits and _ . : / - only; no spaces, braces or commas)",
    )
    return _render(text, args, field, lexer)


_HEADER_SAFE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def render_header(text: str, args: Mapping[str, str], *, field: str = "headers") -> str:
    """A header value: no line break, NUL or other control character may come in through an arg."""
    lexer = _TokenLexer(
        _HEADER_SAFE, "contains a line break or another control character, which is not allowed in a header"
    )
    return _render(text, args, field, lexer)


def render_header_name(text: str, args: Mapping[str, str], *, field: str = "headers") -> str:
    """A header name: the whole name, args substituted, must be an HTTP token."""
    name = render_plain(text, args, field=field)
    if not _HEADER_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise ProviderError(f"{field}: {shown!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
    return name


class _PlainLexer:
    def feed(self, text: str) -> None:
        pass

    def escape(self, value: str, arg: str, field: str) -> str:
        return value

    def after_value(self) -> None:
        pass


def render_plain(text: str, args: Mapping[str, str], *, field: str) -> str:
    """Plain substitution, for text that is not sent to an interpreter (jsonPath, numbers)."""
    return _render(text, args, field, _PlainLexer())
