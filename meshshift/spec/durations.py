"""Durations as Argo Rollouts writes them: seconds, or Go-style `1h30m`, `500ms`, `1.5s`.

Accepted:
- an int or a finite float: seconds (`30`);
- a string of digits: seconds (`"30"`), as Argo's `DurationString` does;
- a string of one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`
  (`"2m"`, `"1h30m"`, `"1.5s"`), as Go's `time.ParseDuration` does.

Refused, with a reason: booleans, negative values, empty strings, NaN and infinities,
other units (`1d`, `5 minutes`, `10us`) and anything above 30 days, which is a typo
rather than a pause anyone waits for.
"""

from __future__ import annotations

import datetime
import math
import re

MAX_DURATION = 30 * 24 * 3600.0

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# `ms` is tried before `m` so that `500ms` is not read as 500 minutes and a stray "s".
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h))+")
_HINT = 'write seconds (30) or a Go duration with units ms, s, m, h ("500ms", "2m", "1h30m")'


def parse_duration(value: object) -> float:
    """The duration in seconds; ValueError says why `value` is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"a duration cannot be a boolean; {_HINT}")
    if isinstance(value, int) and value < -MAX_DURATION:
        raise ValueError("negative durations are not allowed")
    if isinstance(value, int) and value > MAX_DURATION:
        # float() of a huge int overflows, and repr() of one past 4300 digits raises: say it plainly.
        raise ValueError(
            "the duration is a number of seconds longer than 30 days (720h); that is almost certainly a typo"
        )
    if isinstance(value, int | float):
        return _check_seconds(float(value), repr(value))
    if not isinstance(value, str):
        raise ValueError(f"a duration must be a number or a string, not {type(value).__name__}; {_HINT}")
    return _check_seconds(_parse_text(value), f'"{value}"')


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling of `seconds`: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    fraction = seconds - whole
    if secs or fraction or not (hours or minutes):
        parts.append(f"{secs + fraction:g}s")
    return "".join(parts)


def _parse_text(text: str) -> float:
    if not text.strip():
        raise ValueError(f"a duration cannot be empty; {_HINT}")
    if text.startswith("-"):
        raise ValueError(f'negative durations are not allowed: "{text}"')
    if text.isdigit() and text.isascii():
        return float(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f'"{text}" is not a duration{_unit_hint(text)}; {_HINT}')
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def _unit_hint(text: str) -> str:
    """Point at the most common mistakes: days, spelled-out units, spaces, missing unit."""
    if re.fullmatch(rf"{_NUMBER}d", text):
        return ' (there is no "d" unit: use hours, e.g. "24h")'
    if " " in text.strip():
        return " (no spaces, and units are ms, s, m, h)"
    if re.fullmatch(_NUMBER, text):
        return " (a number without a unit must be whole seconds)"
    return ""


def _check_seconds(seconds: float, shown: str) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"a duration must be a finite number, got {shown}")
    if seconds < 0:
        raise ValueError(f"negative durations are not allowed: {shown}")
    if seconds > MAX_DURATION:
        raise ValueError(f"{shown} is longer than 30 days (720h); that is almost certainly a typo")
    return seconds


# A range query's start and end, in the expr forms Argo's docs write: `now()`, and
# `now() - duration("5m")` or `+` (the duration a Go duration).
_TIME_EXPRESSION = re.compile(r"""\s*now\(\)\s*(?:([-+])\s*duration\(\s*(["'])([^"']*)\2\s*\)\s*)?""")
TIME_EXPRESSION_HINT = 'write now(), or now() - duration("5m") (or + a duration)'


def parse_time_offset(text: str) -> float:
    """The seconds from now that a time expression names (negative in the past); ValueError
    when it is not one of the forms of TIME_EXPRESSION_HINT."""
    match = _TIME_EXPRESSION.fullmatch(text)
    if match is None:
        raise ValueError(f'"{text}" is not a time meshshift can evaluate; {TIME_EXPRESSION_HINT}')
    sign, _, duration = match.groups()
    if sign is None:
        return 0.0
    seconds = parse_duration(duration)
    return -seconds if sign == "-" else seconds


# A moment on the command line (`meshshift analyze --from`): RFC 3339, Unix seconds, or an offset
# from now. Offsets take d (24h) and w (7d) too, as Prometheus writes them: "-7d" is last week.
_OFFSET = re.compile(rf"([-+])((?:{_NUMBER}(?:ms|s|m|h|d|w))+)")
_OFFSET_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)")
_OFFSET_UNITS = {**_UNIT_SECONDS, "d": 86400.0, "w": 604800.0}
INSTANT_HINT = (
    'write RFC 3339 ("2026-12-01T10:00:00Z"), Unix seconds (1796119200) or an offset from now ("-2h", "-7d")'
)


def parse_instant(text: str, *, now: float) -> float:
    """The Unix time `text` names; ValueError says why it names none (see INSTANT_HINT)."""
    value = text.strip()
    if not value:
        raise ValueError(f"a time cannot be empty; {INSTANT_HINT}")
    if value == "now":
        return now
    offset = _OFFSET.fullmatch(value)
    if offset is not None:
        sign, parts = offset.groups()
        seconds = sum(float(n) * _OFFSET_UNITS[unit] for n, unit in _OFFSET_PART.findall(parts))
        return now - seconds if sign == "-" else now + seconds
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
        return float(value)
    try:
        moment = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(f'"{text}" is not a time; {INSTANT_HINT}') from None
    if moment.tzinfo is None:
        raise ValueError(f'"{text}" has no time zone; add Z for UTC or an offset like +02:00')
    return moment.timestamp()


def format_instant(seconds: float) -> str:
    """RFC 3339 in UTC, to the second (to the millisecond when there is a fraction)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
