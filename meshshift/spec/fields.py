"""Small readers shared by every spec parser: type checks, unknown keys, did-you-mean.

Each reader takes the raw YAML value, the user-facing path of that value and the
`Findings` to add to. It returns the checked value, or None after reporting why it could
not. None therefore always means "absent or already reported", so callers never report
the same mistake twice.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from meshshift.spec.durations import parse_duration
from meshshift.spec.errors import Findings, join_path

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
INT64_DIGITS = 19  # the most an int64 has; int() itself refuses 4,300 digits and more
# A Kubernetes object name (DNS-1123 subdomain).
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def at(base: str, part: str | int) -> str:
    """The path of `part` under `base`: `spec.steps`, `steps[3]`, `annotations["a.io/b"]`."""
    if isinstance(part, int) or _PLAIN_KEY.fullmatch(part):
        return join_path(base, part)
    return f"{base}[{json.dumps(part)}]"


def type_name(value: object) -> str:
    """How a YAML user would call the type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def closest(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean "setWeight"?)`, or "" when nothing is close."""
    match = closest(word, candidates)
    return f' (did you mean "{match}"?)' if match else ""


def check_keys(
    data: Mapping[Any, Any],
    allowed: Collection[str],
    path: str,
    findings: Findings,
    *,
    what: str = "field",
) -> None:
    """Report every key of `data` outside `allowed`, suggesting the closest allowed one."""
    for key in data:
        if not isinstance(key, str):
            findings.error(path, f"{what} names must be strings, got {type_name(key)} {key!r}")
        elif key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            findings.error(
                at(path, key),
                f'unknown {what} "{key}"{did_you_mean(key, allowed)}; known: {known}',
            )


def require(data: Mapping[str, Any], key: str, path: str, findings: Findings) -> Any:
    """`data[key]`, or None after reporting that it is missing (a YAML null counts as missing)."""
    value = data.get(key)
    if value is None:
        findings.error(at(path, key), "is required")
    return value


def expect_mapping(value: object, path: str, findings: Findings) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    findings.error(path, f"must be a mapping, got {type_name(value)}")
    return None


def expect_list(value: object, path: str, findings: Findings) -> list[Any] | None:
    if isinstance(value, list):
        return value
    findings.error(path, f"must be a list, got {type_name(value)}")
    return None


def expect_str(value: object, path: str, findings: Findings, *, allow_empty: bool = False) -> str | None:
    if not isinstance(value, str):
        hint = f'; quote it: "{str(value).lower()}"' if isinstance(value, bool | int | float) else ""
        findings.error(path, f"must be a string, got {type_name(value)}{hint}")
        return None
    if not allow_empty and not value.strip():
        findings.error(path, "must not be empty")
        return None
    return value


def expect_bool(value: object, path: str, findings: Findings) -> bool | None:
    if isinstance(value, bool):
        return value
    findings.error(path, f"must be true or false, got {type_name(value)} {value!r}")
    return None


def expect_int(
    value: object,
    path: str,
    findings: Findings,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    what: str = "an integer",
) -> int | None:
    """An int within bounds; bools and floats are refused (YAML `true` is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        findings.error(path, f"must be {what}, got {type_name(value)} {value!r}")
        return None
    return check_range(value, path, findings, minimum=minimum, maximum=maximum)


def decimal_int(text: str) -> int:
    """The integer `text` spells in decimal (a sign, and spaces around, allowed).

    ValueError, its message the reason, for a text that spells none or one of more digits than
    any int64 has: int() would refuse thousands of them with a ValueError of its own.
    """
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError("not a whole number")
    digits = len(text.lstrip("+-"))
    if digits > INT64_DIGITS:
        raise ValueError(f"a number of {digits} digits")
    return int(text)


def check_range(
    value: int, path: str, findings: Findings, *, minimum: int | None, maximum: int | None
) -> int | None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        findings.error(path, f"must be between {minimum} and {maximum}, got {value}")
        return None
    if minimum is not None and value < minimum:
        findings.error(path, f"must be at least {minimum}, got {value}")
        return None
    if maximum is not None and value > maximum:
        findings.error(path, f"must be at most {maximum}, got {value}")
        return None
    return value


def expect_weight(value: object, path: str, findings: Findings) -> int | None:
    return expect_int(value, path, findings, minimum=0, maximum=100, what="an integer percentage 0..100")


def expect_number(value: object, path: str, findings: Findings) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        findings.error(path, f"must be a number, got {type_name(value)} {value!r}")
        return None
    return float(value)


def expect_duration(value: object, path: str, findings: Findings, *, positive: bool = False) -> float | None:
    """Seconds, from an int or a `1h30m`-style string (see durations.parse_duration)."""
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        findings.error(path, str(error))
        return None
    if positive and seconds <= 0:
        findings.error(path, "must be longer than zero")
        return None
    return seconds


def expect_choice(value: object, choices: Collection[str], path: str, findings: Findings) -> str | None:
    text = expect_str(value, path, findings)
    if text is None:
        return None
    if text not in choices:
        options = ", ".join(choices)
        findings.error(path, f'"{text}" is not one of {options}{did_you_mean(text, choices)}')
        return None
    return text


def expect_k8s_name(value: object, path: str, findings: Findings) -> str | None:
    text = expect_str(value, path, findings)
    if text is None:
        return None
    if len(text) > 253 or not _K8S_NAME.fullmatch(text):
        findings.error(
            path,
            f'"{text}" is not a valid Kubernetes name (lower-case letters, digits, "-" and ".", '
            "starting and ending with a letter or digit)",
        )
        return None
    return text


def exactly_one_key(
    data: Mapping[str, Any], kinds: Collection[str], path: str, findings: Findings, *, what: str
) -> str | None:
    """The single key of `data` that is one of `kinds`; report none or several.

    Other keys are left to `check_keys`: when there are some and no known one, the
    unknown key's finding (with its did-you-mean) says it all.
    """
    present = [key for key in data if key in kinds]
    if len(present) == 1:
        return present[0]
    options = ", ".join(kinds)
    if not present and data:
        return None
    if not present:
        findings.error(path, f"needs exactly one {what} among {options}")
    else:
        found = ", ".join(present)
        findings.error(path, f"needs exactly one {what} among {options}; found {len(present)}: {found}")
    return None


def report_duplicate(name: str, seen: dict[str, str], path: str, findings: Findings, *, what: str) -> None:
    """Report `name` when it was already seen (at `seen[name]`), else remember it."""
    if name in seen:
        findings.error(path, f'duplicate {what} "{name}" (first at {seen[name]})')
    else:
        seen[name] = path
