"""ingress-nginx's own rules for a canary Ingress: what it accepts, and what it makes of it.

Everything here is read from kubernetes/ingress-nginx's source (commit
dbb11b92ddb77bee9c35e462479129354c84f939); both `meshshift lint` and the NGINX router use it.

- `internal/ingress/annotations/canary/main.go`: `canary` is validated as a bool
  (`strconv.ParseBool`), `canary-weight` and `canary-weight-total` as ints (`strconv.Atoi`),
  `canary-by-header` and `canary-by-header-value` against `BasicCharsRegex` with spaces removed
  first, `canary-by-header-pattern` against `IsValidRegex` (spaces kept). An annotation that
  fails is dropped (a warning in the controller's log): the value falls back to
  `false`, 0, 100 or "".
- `internal/ingress/annotations/parser/validators.go`: `BasicCharsRegex` is
  `^[/\\-\\.\\_\\~a-zA-Z0-9\\/:]*$`, `IsValidRegex` adds ``^$[](){}*+?|&=\\``; a value with a line
  break is refused either way.
- `internal/ingress/annotations/parser/main.go`: string values are trimmed (each line), and an
  empty one is dropped.
- `rootfs/etc/nginx/lua/balancer.lua` (`route_to_alternative_balancer`): a request goes to the
  canary when its header equals `canary-by-header-value`; else, when that is empty, when
  `ngx.re.match(header, canary-by-header-pattern)` finds the pattern anywhere in the value
  (PCRE, no anchoring, no options); else when the header is `always`. Otherwise the weight
  decides: `math.random(total) <= weight`, where `total` is `canary-weight-total` only when
  that is above 100, and 100 otherwise.
- `internal/ingress/controller/controller.go` (`createUpstreams`, `mergeAlternativeBackend`):
  of a canary Ingress's other annotations, ingress-nginx reads only those that shape its
  upstream (`load-balance`, `upstream-hash-by*`, `service-upstream`) and
  `affinity-canary-behavior`; the rest comes from the stable Ingress. `kubernetes.io/ingress.class`
  decides which controller reads it at all.
- `internal/ingress/controller/config/config.go`: `ignore-invalid-headers` is on and
  `enable-underscores-in-headers` off by default, so NGINX drops request headers whose names
  have characters other than letters, digits and `-` before the canary rules see them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshshift.spec.errors import Findings
from meshshift.spec.fields import at, decimal_int
from meshshift.spec.model import MatchKind, SetHeaderRoute, Step, StepGroup

DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
# The annotations (after the prefix) ingress-nginx reads on a canary Ingress beyond canary-*.
UPSTREAM_ANNOTATIONS = (
    "load-balance",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "service-upstream",
    "affinity-canary-behavior",
)

_BASIC_CHARS = re.compile(r"[/\-._~a-zA-Z0-9:]*")  # BasicCharsRegex
_REGEX_CHARS = re.compile(r"[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*")  # IsValidRegex
_LINE_BREAK = re.compile(r"\r|\n")  # MaliciousRegex
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi, base 10
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_INT64 = 2**63

VALUE_CHARS = "letters, digits, spaces inside the value, and - . _ ~ / :"
PATTERN_CHARS = "letters, digits and - . _ ~ / : ^ $ [ ] ( ) { } * + ? | & = \\"
_PCRE_SPECIAL = set("\\^$.|?*+()[]{}")


def _passes(validator: re.Pattern[str], value: str, *, remove_spaces: bool) -> bool:
    """parser.ValidateRegex(validator, remove_spaces)."""
    checked = value.replace(" ", "") if remove_spaces else value
    return validator.fullmatch(checked) is not None and not _LINE_BREAK.search(checked)


def _trimmed(value: str) -> str:
    """parser.normalizeString: each line trimmed."""
    return "\n".join(line.strip() for line in value.split("\n"))


# --- what meshshift may write ----------------------------------------------------------------


def header_name_problem(name: str) -> str | None:
    if _HEADER_NAME.fullmatch(name):
        return None
    return (
        f'ingress-nginx cannot route on header "{name}": NGINX ignores request headers whose '
        "names have characters other than letters, digits and - (ingress-nginx's default "
        "ignore-invalid-headers), and canary-by-header accepts no others"
    )


def value_problem(value: str, kind: MatchKind) -> str | None:
    """Why an exact or prefix value cannot go into canary-by-header-value (or a pattern)."""
    if not value.strip():
        return f"ingress-nginx ignores an empty canary-by-header-value; a {kind} value must not be empty"
    if value != value.strip():
        return (
            f"ingress-nginx trims canary-by-header-value, so {value!r} would be compared as "
            f"{value.strip()!r}; remove the leading and trailing spaces"
        )
    if not _passes(_BASIC_CHARS, value, remove_spaces=True):
        bad = sorted({char for char in value if char != " " and not _BASIC_CHARS.fullmatch(char)})
        return (
            f"ingress-nginx drops a canary-by-header-value with {', '.join(repr(c) for c in bad)} "
            f"(it allows {VALUE_CHARS}), and the request would then get the weight instead; "
            "use a regex with \\xHH for such characters"
        )
    return None


def regex_problem(pattern: str) -> str | None:
    """Why a regex cannot go into canary-by-header-pattern (ingress-nginx's IsValidRegex)."""
    if _passes(_REGEX_CHARS, pattern, remove_spaces=False):
        return None
    bad = sorted({char for char in pattern if not _REGEX_CHARS.fullmatch(char)})
    return (
        f"ingress-nginx drops a canary-by-header-pattern with {', '.join(repr(c) for c in bad)} "
        f"(it allows {PATTERN_CHARS}); write such characters as \\xHH (\\x20 for a space, "
        "\\x2c for a comma: {m,n} cannot be written)"
    )


def weight_total_problem(total: int) -> str | None:
    if total > 100:
        return None
    return (
        f"ingress-nginx honours canary-weight-total only above 100 and uses 100 otherwise, so a "
        f"total of {total} would send canary-weight percent, not canary-weight out of {total}; "
        "use a total above 100 (for example 1000), or leave it unset for 100"
    )


def pcre_literal(value: str) -> str:
    """`value` as a PCRE literal made of IsValidRegex's characters (a space becomes \\x20)."""
    return "".join(
        "\\x20" if char == " " else f"\\{char}" if char in _PCRE_SPECIAL else char for char in value
    )


def header_pattern(entries: Sequence[tuple[MatchKind, str]]) -> str:
    """One canary-by-header-pattern for several (kind, value) matches, matching whole values only.

    ingress-nginx searches the pattern anywhere in the header value, so it is anchored here,
    `^(?:...)$`, as Istio, Envoy and meshshift's own nginx.conf match a regex route: `v1`
    matches `v1`, not `prev1` or `v1x`. A regex is grouped on its own so that its inline
    flags or alternatives stay inside it.
    """
    if len(entries) == 1 and entries[0][0] == "regex":
        return f"^(?:{entries[0][1]})$"
    pieces = []
    for kind, value in entries:
        if kind == "exact":
            pieces.append(pcre_literal(value))
        elif kind == "prefix":
            pieces.append(pcre_literal(value) + ".*")
        else:
            pieces.append(f"(?:{value})")
    return f"^(?:{'|'.join(pieces)})$"


def check_header_routes(steps: Sequence[Step | StepGroup | None], path: str, findings: Findings) -> None:
    """Each setHeaderRoute as the nginx router will write it, checked by ingress-nginx's rules.

    `steps` are as written (read_steps), so `path[i]` is the step a finding names. Routes
    active at the same time must name one header: a canary Ingress routes on one.
    """
    active: dict[str, set[str]] = {}  # route name -> header names (lower case)
    for index, step in enumerate(steps):
        parts = step.parts if isinstance(step, StepGroup) else (step,)
        for part in parts:
            if not isinstance(part, SetHeaderRoute):
                continue
            where = at(at(path, index), "setHeaderRoute")
            active.pop(part.name, None)
            if part.removes:
                continue
            check_header_route(part, where, findings)
            active[part.name] = {match.header_name.lower() for match in part.match}
            headers = sorted(set().union(*active.values()))
            if len(headers) > 1:
                findings.error(
                    where,
                    "ingress-nginx routes a canary on one header only; the header routes active "
                    f"at this step use {', '.join(headers)}: remove the others first",
                )


def check_header_route(route: SetHeaderRoute, where: str, findings: Findings) -> None:
    """One header route's names and values, by ingress-nginx's rules (`where`: the route's path)."""
    for position, match in enumerate(route.match):
        at_match = at(at(where, "match"), position)
        problem = header_name_problem(match.header_name)
        if problem:
            findings.error(at(at_match, "headerName"), problem)
        value = match.value
        problem = (
            regex_problem(value.value) if value.kind == "regex" else value_problem(value.value, value.kind)
        )
        if problem:
            findings.error(at(at(at_match, "headerValue"), value.kind), problem)


# --- what ingress-nginx makes of a canary Ingress ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """ingress-nginx's canary.Config of one Ingress: what it will route by."""

    enabled: bool = False
    weight: int = 0
    weight_total: int = 100
    header: str = ""
    header_value: str = ""
    header_pattern: str = ""
    dropped: tuple[str, ...] = ()  # "annotation: why", for the annotations it ignored

    @property
    def canary_percent(self) -> float:
        """The share of the requests the weight sends to the canary (header routes aside)."""
        if not self.enabled:
            return 0.0
        total = self.weight_total if self.weight_total > 100 else 100
        return max(0, min(self.weight, total)) * 100 / total

    @property
    def header_route(self) -> tuple[str, str, str] | None:
        """(header, value, pattern) that sends a request to the canary, the value winning; None: none."""
        if not self.enabled or not self.header:
            return None
        if self.header_value:
            return self.header, self.header_value, ""
        if self.header_pattern:
            return self.header, "", self.header_pattern
        return None  # only `always` / `never`: not a route meshshift writes


def parse_canary(annotations: Mapping[str, str], prefix: str = DEFAULT_PREFIX) -> CanaryConfig:
    """canary.Parse, as ingress-nginx runs it on the Ingress's annotations."""
    dropped: list[str] = []

    def raw(name: str) -> str | None:
        value = annotations.get(f"{prefix}/{name}")
        return value if value else None  # empty values are not validated, then fail to parse

    def boolean(name: str) -> bool:
        value = raw(name)
        if value is None:
            return False
        if value in _GO_TRUE or value in _GO_FALSE:
            return value in _GO_TRUE
        dropped.append(f"{name}: {value!r} is not a bool")
        return False

    def integer(name: str, default: int) -> int:
        value = raw(name)
        if value is None:
            return default
        if _GO_INT.fullmatch(value):
            try:
                number = decimal_int(value)
            except ValueError as error:  # thousands of digits
                dropped.append(f"{name}: {error} is out of range, as strconv.Atoi says")
                return default
            if -_INT64 <= number < _INT64:
                return number
        dropped.append(f"{name}: {value!r} is not an integer")
        return default

    def string(name: str, validator: re.Pattern[str], *, remove_spaces: bool) -> str:
        value = raw(name)
        if value is None:
            return ""
        if not _passes(validator, value, remove_spaces=remove_spaces):
            dropped.append(f"{name}: {value!r} has characters ingress-nginx does not accept")
            return ""
        return _trimmed(value)

    enabled = boolean("canary")
    weight = integer("canary-weight", 0)
    weight_total = integer("canary-weight-total", 100)
    header = string("canary-by-header", _BASIC_CHARS, remove_spaces=True)
    header_value = string("canary-by-header-value", _BASIC_CHARS, remove_spaces=True)
    header_pattern = string("canary-by-header-pattern", _REGEX_CHARS, remove_spaces=False)
    if not enabled and (weight > 0 or header or header_value or header_pattern):
        dropped.append("canary: configured but not enabled; the Ingress is not a canary")
    if weight_total <= 100 and raw("canary-weight-total") is not None:
        dropped.append(f"canary-weight-total: {weight_total} is not above 100; 100 is used")
    return CanaryConfig(enabled, weight, weight_total, header, header_value, header_pattern, tuple(dropped))
