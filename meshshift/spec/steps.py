"""Canary steps and analysis references, in Argo Rollouts syntax.

One reader per step kind; each reports what is wrong with a path such as
`steps[2].setHeaderRoute.match[0].headerValue.regex` and keeps going.

`read_steps` returns one entry per step as written, None where a step is invalid, so that
later checks (monotonic weights, template references) still name the right index.
Likewise an analysis `templates`, `args`, `dryRun` or `measurementRetention` entry that
cannot be read is kept as a placeholder with an empty name; placeholders only exist when
an error has been reported, so they never reach the engine.

Header names follow RFC 7230 (token characters). Pseudo-headers (`:authority`, `:path`)
and `host` are refused: routers match them differently (Envoy sees the Host header as
`:authority`, ingress-nginx does not route canaries by host), so a header route on them
would not mean the same on every router. Regexes must suit RE2, which Envoy, Istio and
our own checks share: no backreferences, lookarounds, atomic groups or possessive
quantifiers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from meshshift.spec.errors import Findings
from meshshift.spec.fields import (
    at,
    check_keys,
    exactly_one_key,
    expect_bool,
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_str,
    expect_weight,
    report_duplicate,
    require,
    type_name,
)
from meshshift.spec.fields import expect_duration as _expect_duration
from meshshift.spec.model import (
    DEFAULT_MEASUREMENT_RETENTION,
    STEP_KINDS,
    AnalysisRef,
    Arg,
    ArgValueFrom,
    BackgroundAnalysis,
    CanaryScale,
    HeaderMatch,
    MatchKind,
    MeasurementRetention,
    MirrorMatch,
    Pause,
    SetCanaryScale,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    Step,
    StepAnalysis,
    StepGroup,
    StringMatch,
    TemplateRef,
)

# Argo step kinds meshshift does not run: named so the error says so instead of "unknown".
UNSUPPORTED_STEP_KINDS = ("experiment", "plugin")
# The kinds of which one step holds at most one (Argo's validation); the others (canary
# scale, header and mirror routes) may join them, and run first.
EXCLUSIVE_STEP_KINDS = ("setWeight", "pause", "experiment", "analysis")
MATCH_KINDS: tuple[MatchKind, ...] = ("exact", "prefix", "regex")

ANALYSIS_FIELDS = ("templates", "args", "dryRun", "measurementRetention", "analysisRunMetadata")
BACKGROUND_ANALYSIS_FIELDS = (*ANALYSIS_FIELDS, "startingStep")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# --- the steps list ----------------------------------------------------------------


def read_steps(
    value: object, path: str, findings: Findings, *, max_weight: int = 100
) -> tuple[Step | StepGroup | None, ...]:
    """Every step as written, None where a step is invalid (its errors are reported).

    `max_weight` is Argo's `trafficRouting.maxTrafficWeight`: setWeight counts in those units
    (50 of 1000 is 5%), and is read here as the percentage it stands for."""
    steps = expect_list(value, path, findings)
    if steps is None:
        return ()
    if max_weight != 100:
        steps = [_in_percent(raw, at(path, index), max_weight, findings) for index, raw in enumerate(steps)]
    return tuple(
        None if raw is _INVALID else read_step(raw, at(path, index), findings)
        for index, raw in enumerate(steps)
    )


_INVALID = object()  # a step already reported as invalid


def _unit(max_weight: int) -> int:
    """The smallest setWeight, in units of `max_weight`, that is a whole percent."""
    return max_weight // math.gcd(max_weight, 100)


def _in_percent(raw: object, path: str, max_weight: int, findings: Findings) -> object:
    """A step whose setWeight, in units of `max_weight`, is written as a percentage (_INVALID
    when it cannot be: reported)."""
    if not isinstance(raw, Mapping) or "setWeight" not in raw:
        return raw
    where = at(path, "setWeight")
    weight = expect_int(raw["setWeight"], where, findings, minimum=0, maximum=max_weight)
    if weight is None:
        return _INVALID
    percent, rest = divmod(weight * 100, max_weight)
    if rest:
        findings.error(
            where,
            f"setWeight {weight} of maxTrafficWeight {max_weight} is {weight * 100 / max_weight:g}%; "
            f"meshshift routes in whole percents: use a multiple of {_unit(max_weight)}",
        )
        return _INVALID
    return {**raw, "setWeight": percent}


def read_step(value: object, path: str, findings: Findings) -> Step | StepGroup | None:
    step = expect_mapping(value, path, findings)
    if step is None:
        return None
    kinds = _step_kinds(step, path, findings)
    if not kinds:
        return None
    parts = [_STEP_READERS[kind](step[kind], at(path, kind), findings) for kind in kinds]
    if any(part is None for part in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    return StepGroup(tuple(part for part in parts if part is not None))


def _step_kinds(step: Mapping[str, Any], path: str, findings: Findings) -> list[str]:
    """The kinds of one step, in the order its parts run; [] when it is invalid (reported)."""
    unsupported = [key for key in step if key in UNSUPPORTED_STEP_KINDS]
    for key in unsupported:
        findings.error(at(path, key), f'"{key}" is an Argo Rollouts step that meshshift does not run')
    others = {key: value for key, value in step.items() if key not in UNSUPPORTED_STEP_KINDS}
    check_keys(others, STEP_KINDS, path, findings, what="step kind")
    kinds = [key for key in step if key in STEP_KINDS]
    # Argo lets only setWeight, pause, experiment and analysis exclude each other.
    exclusive = [key for key in step if key in EXCLUSIVE_STEP_KINDS]
    if len(exclusive) > 1:
        findings.error(
            path,
            f"a step has at most one of {', '.join(EXCLUSIVE_STEP_KINDS)}, found {', '.join(exclusive)}; "
            "write one step for each",
        )
        return []
    if not step:
        findings.error(path, f"empty step; expected one of {', '.join(STEP_KINDS)}")
    if unsupported:
        return []
    return sorted(kinds, key=lambda kind: kind in EXCLUSIVE_STEP_KINDS)


def _read_set_weight(value: object, path: str, findings: Findings) -> Step | None:
    weight = expect_weight(value, path, findings)
    return None if weight is None else SetWeight(weight)


def _read_pause(value: object, path: str, findings: Findings) -> Step | None:
    if value is None:
        # Argo rejects `pause:` with nothing after it; the intent is clear, so warn only.
        findings.warning(path, "write `pause: {}` for a pause that waits for a promote")
        return Pause()
    pause = expect_mapping(value, path, findings)
    if pause is None:
        return None
    check_keys(pause, ("duration",), path, findings)
    if pause.get("duration") is None:
        return Pause()
    seconds = _expect_duration(pause["duration"], at(path, "duration"), findings)
    return None if seconds is None else Pause(seconds)


def _read_step_analysis(value: object, path: str, findings: Findings) -> Step | None:
    analysis = read_analysis_ref(value, path, findings, ANALYSIS_FIELDS)
    return None if analysis is None else StepAnalysis(analysis)


def read_header_route(value: object, path: str, findings: Findings) -> SetHeaderRoute | None:
    """A `setHeaderRoute` block `{name, match}` (no match: the route is removed)."""
    route = _read_set_header_route(value, path, findings)
    return route if isinstance(route, SetHeaderRoute) else None


def _read_set_header_route(value: object, path: str, findings: Findings) -> Step | None:
    route = expect_mapping(value, path, findings)
    if route is None:
        return None
    check_keys(route, ("name", "match"), path, findings)
    name = _read_route_name(route, path, findings)
    matches: list[HeaderMatch | None] = []
    if route.get("match") is not None:
        entries = expect_list(route["match"], at(path, "match"), findings) or []
        matches = [
            _read_header_match(entry, at(at(path, "match"), i), findings) for i, entry in enumerate(entries)
        ]
    if name is None or None in matches:
        return None
    return SetHeaderRoute(name, tuple(m for m in matches if m is not None))


def _read_route_name(route: Mapping[str, Any], path: str, findings: Findings) -> str | None:
    if "name" not in route or route["name"] is None:
        findings.error(at(path, "name"), "is required: the route's name")
        return None
    return expect_str(route["name"], at(path, "name"), findings)


def _read_header_match(value: object, path: str, findings: Findings) -> HeaderMatch | None:
    entry = expect_mapping(value, path, findings)
    if entry is None:
        return None
    check_keys(entry, ("headerName", "headerValue"), path, findings)
    name = read_header_name(require(entry, "headerName", path, findings), at(path, "headerName"), findings)
    raw_value = require(entry, "headerValue", path, findings)
    match = None if raw_value is None else read_string_match(raw_value, at(path, "headerValue"), findings)
    if name is None or match is None:
        return None
    return HeaderMatch(name, match)


def _read_set_mirror_route(value: object, path: str, findings: Findings) -> Step | None:
    route = expect_mapping(value, path, findings)
    if route is None:
        return None
    check_keys(route, ("name", "match", "percentage"), path, findings)
    name = _read_route_name(route, path, findings)
    matches: list[MirrorMatch | None] = []
    if route.get("match") is not None:
        entries = expect_list(route["match"], at(path, "match"), findings) or []
        matches = [
            _read_mirror_match(entry, at(at(path, "match"), i), findings) for i, entry in enumerate(entries)
        ]
    percentage = None
    if route.get("percentage") is not None:
        percentage = expect_weight(route["percentage"], at(path, "percentage"), findings)
        if percentage is None:
            return None
    if name is None or None in matches:
        return None
    return SetMirrorRoute(name, tuple(m for m in matches if m is not None), percentage)


def _read_mirror_match(value: object, path: str, findings: Findings) -> MirrorMatch | None:
    entry = expect_mapping(value, path, findings)
    if entry is None:
        return None
    check_keys(entry, ("method", "path", "headers"), path, findings)
    if not any(entry.get(key) is not None for key in ("method", "path", "headers")):
        findings.error(path, "a match entry needs at least one of method, path, headers")
        return None
    ok = True
    method = path_match = None
    if entry.get("method") is not None:
        method = read_string_match(entry["method"], at(path, "method"), findings)
        ok = method is not None
    if entry.get("path") is not None:
        path_match = read_string_match(entry["path"], at(path, "path"), findings)
        ok = ok and path_match is not None
    headers: list[HeaderMatch] = []
    if entry.get("headers") is not None:
        read = _read_header_map(entry["headers"], at(path, "headers"), findings)
        ok = ok and read is not None
        headers = read or []
    return MirrorMatch(method, path_match, tuple(headers)) if ok else None


def _read_header_map(value: object, path: str, findings: Findings) -> list[HeaderMatch] | None:
    headers = expect_mapping(value, path, findings)
    if headers is None:
        return None
    result: list[HeaderMatch] = []
    ok = True
    for raw_name, raw_match in headers.items():
        name = read_header_name(raw_name, at(path, str(raw_name)), findings)
        match = read_string_match(raw_match, at(path, str(raw_name)), findings)
        if name is None or match is None:
            ok = False
        else:
            result.append(HeaderMatch(name, match))
    return result if ok else None


def _read_set_canary_scale(value: object, path: str, findings: Findings) -> Step | None:
    scale = expect_mapping(value, path, findings)
    if scale is None:
        return None
    options = ("replicas", "weight", "matchTrafficWeight")
    check_keys(scale, options, path, findings)
    kind = exactly_one_key(scale, options, path, findings, what="setting")
    if kind is None:
        return None
    where = at(path, kind)
    if kind == "replicas":
        replicas = expect_int(scale[kind], where, findings, minimum=0)
        return None if replicas is None else SetCanaryScale(CanaryScale(replicas=replicas))
    if kind == "weight":
        weight = expect_weight(scale[kind], where, findings)
        return None if weight is None else SetCanaryScale(CanaryScale(weight=weight))
    if scale[kind] is not True:
        findings.error(where, f"must be true (or left out), got {type_name(scale[kind])} {scale[kind]!r}")
        return None
    return SetCanaryScale(CanaryScale(match_traffic_weight=True))


_STEP_READERS: Mapping[str, Callable[[object, str, Findings], Step | None]] = {
    "setWeight": _read_set_weight,
    "pause": _read_pause,
    "analysis": _read_step_analysis,
    "setHeaderRoute": _read_set_header_route,
    "setMirrorRoute": _read_set_mirror_route,
    "setCanaryScale": _read_set_canary_scale,
}


# --- matches, header names, regexes ------------------------------------------------


def read_string_match(value: object, path: str, findings: Findings) -> StringMatch | None:
    """Argo's `{exact|prefix|regex: value}`, exactly one."""
    match = expect_mapping(value, path, findings)
    if match is None:
        return None
    check_keys(match, MATCH_KINDS, path, findings, what="match kind")
    kind = exactly_one_key(match, MATCH_KINDS, path, findings, what="match kind")
    if kind is None:
        return None
    where = at(path, kind)
    text = expect_str(match[kind], where, findings)
    if text is None:
        return None
    problem = regex_problem(text) if kind == "regex" else _header_value_problem(text)
    if problem:
        findings.error(where, problem)
        return None
    return StringMatch(_as_match_kind(kind), text)


def _as_match_kind(kind: str) -> MatchKind:
    for known in MATCH_KINDS:
        if known == kind:
            return known
    raise AssertionError(kind)


def _header_value_problem(text: str) -> str | None:
    if any(char in text for char in "\r\n\0"):
        return "must not contain line breaks or NUL characters"
    return None


def read_header_name(value: object, path: str, findings: Findings) -> str | None:
    name = expect_str(value, path, findings)
    if name is None:
        return None
    problem = header_name_problem(name)
    if problem:
        findings.error(path, problem)
        return None
    return name


def header_name_problem(name: str) -> str | None:
    if name.startswith(":"):
        return f'"{name}" is an HTTP/2 pseudo-header; header routes match ordinary request headers only'
    if not _TOKEN.fullmatch(name):
        bad = sorted({char for char in name if not _TOKEN.fullmatch(char)})
        shown = ", ".join(repr(char) for char in bad)
        return f'"{name}" is not a valid header name (RFC 7230 token characters only; not allowed: {shown})'
    if name.lower() == "host":
        return (
            '"host" cannot be used for a header route: route on hosts in the VirtualService or '
            "Ingress instead (Envoy matches it as :authority, NGINX canaries ignore it)"
        )
    return None


_RE2_ONLY = "Envoy and Istio use RE2, which does not support"
_LOOKAROUNDS = (
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
)
_PYTHON_ONLY_FLAGS = "aLux"  # inline flags Python knows and RE2 does not


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used as a route regex, or None."""
    try:
        re.compile(pattern)
    except re.error as error:
        return f"invalid regular expression: {error}"
    return _re2_problem(pattern)


def _re2_problem(pattern: str) -> str | None:
    """What Python accepts and RE2 does not; a small scanner that skips escapes and classes."""
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            problem = _escape_problem(pattern[index + 1 : index + 2], in_class)
            if problem:
                return problem
            index += 2
            continue
        if in_class:
            in_class = char != "]"
            index += 1
            continue
        if char == "[":
            index += 1
            index += pattern.startswith("^", index)
            index += pattern.startswith("]", index)  # a leading ] is a literal
            in_class = True
            continue
        problem = _group_problem(pattern, index) if pattern.startswith("(?", index) else None
        if problem is None and pattern.startswith("+", index + 1) and _ends_quantifier(pattern, index):
            problem = f"possessive quantifiers ({pattern[index : index + 2]}): {_RE2_ONLY} them"
        if problem:
            return problem
        index += 1
    return None


def _escape_problem(escaped: str, in_class: bool) -> str | None:
    if escaped.isdigit() and escaped != "0" and not in_class:
        return f"backreference \\{escaped}: {_RE2_ONLY} backreferences"
    if escaped == "Z":
        return f"\\Z: {_RE2_ONLY} it; use $ (or \\z)"
    return None


def _group_problem(pattern: str, index: int) -> str | None:
    for prefix, what in _LOOKAROUNDS:
        if pattern.startswith(prefix, index):
            return f"{what} {prefix}...): {_RE2_ONLY} lookarounds"
    special = {
        "(?P=": f"named backreference (?P=...): {_RE2_ONLY} backreferences",
        "(?>": f"atomic group (?>...): {_RE2_ONLY} atomic groups",
        "(?(": f"conditional group (?(...): {_RE2_ONLY} conditionals",
        "(?#": f"comment group (?#...): {_RE2_ONLY} comments",
    }
    for prefix, problem in special.items():
        if pattern.startswith(prefix, index):
            return problem
    flags = re.match(r"\(\?([a-zA-Z-]+)[:)]", pattern[index:])
    unsupported = sorted(set(flags.group(1)) & set(_PYTHON_ONLY_FLAGS)) if flags else []
    if unsupported:
        return f"inline flag {', '.join(unsupported)}: {_RE2_ONLY} it (RE2 knows i, m, s, U)"
    return None


def _ends_quantifier(pattern: str, index: int) -> bool:
    """Whether pattern[index] closes a quantifier (`*`, `+`, `?`, `{2,3}`)."""
    char = pattern[index]
    if char in "*+?":
        return index > 0 and pattern[index - 1] != "("
    return char == "}" and re.search(r"\{[0-9]*,?[0-9]*$", pattern[:index]) is not None


# --- analysis references -----------------------------------------------------------


def read_background_analysis(value: object, path: str, findings: Findings) -> BackgroundAnalysis | None:
    """The rollout-wide analysis: a step analysis plus `startingStep`."""
    analysis = read_analysis_ref(value, path, findings, BACKGROUND_ANALYSIS_FIELDS)
    if analysis is None or not isinstance(value, Mapping):
        return None
    starting_step = 0
    if value.get("startingStep") is not None:
        checked = expect_int(value["startingStep"], at(path, "startingStep"), findings, minimum=0)
        if checked is None:
            return None
        starting_step = checked
    return BackgroundAnalysis(analysis, starting_step)


def read_analysis_ref(
    value: object, path: str, findings: Findings, allowed: tuple[str, ...] = ANALYSIS_FIELDS
) -> AnalysisRef | None:
    analysis = expect_mapping(value, path, findings)
    if analysis is None:
        return None
    check_keys(analysis, allowed, path, findings)
    if analysis.get("analysisRunMetadata") is not None:
        expect_mapping(analysis["analysisRunMetadata"], at(path, "analysisRunMetadata"), findings)
    templates = _read_template_refs(analysis.get("templates"), at(path, "templates"), findings)
    args = read_args(analysis.get("args"), at(path, "args"), findings, value_required=True)
    dry_run = read_dry_run(analysis.get("dryRun"), at(path, "dryRun"), findings)
    retention = read_measurement_retention(
        analysis.get("measurementRetention"), at(path, "measurementRetention"), findings
    )
    return AnalysisRef(tuple(templates), tuple(args), dry_run, retention)


def _read_template_refs(value: object, path: str, findings: Findings) -> list[TemplateRef]:
    if value is None:
        findings.error(path, "is required: a list of {templateName: NAME}")
        return []
    entries = expect_list(value, path, findings)
    if entries is None:
        return []
    if not entries:
        findings.error(path, "must name at least one template")
    return [_read_template_ref(entry, at(path, index), findings) for index, entry in enumerate(entries)]


def _read_template_ref(value: object, path: str, findings: Findings) -> TemplateRef:
    ref = expect_mapping(value, path, findings)
    if ref is None:
        return TemplateRef("")
    check_keys(ref, ("templateName", "clusterScope"), path, findings)
    raw_name = require(ref, "templateName", path, findings)
    name = None if raw_name is None else expect_str(raw_name, at(path, "templateName"), findings)
    cluster_scope = False
    if ref.get("clusterScope") is not None:
        cluster_scope = bool(expect_bool(ref["clusterScope"], at(path, "clusterScope"), findings))
    return TemplateRef(name or "", cluster_scope)


def read_args(value: object, path: str, findings: Findings, *, value_required: bool) -> list[Arg]:
    """`[{name, value | valueFrom}]`; duplicate names are errors.

    A rollout must give each arg a value (`value_required`); a template may leave one
    without, to be given by the rollout.
    """
    if value is None:
        return []
    entries = expect_list(value, path, findings)
    if entries is None:
        return []
    seen: dict[str, str] = {}
    args = [
        _read_arg(entry, at(path, index), findings, value_required) for index, entry in enumerate(entries)
    ]
    for index, arg in enumerate(args):
        if arg.name:
            report_duplicate(arg.name, seen, at(at(path, index), "name"), findings, what="arg")
    return args


def _read_arg(value: object, path: str, findings: Findings, value_required: bool) -> Arg:
    entry = expect_mapping(value, path, findings)
    if entry is None:
        return Arg("")
    check_keys(entry, ("name", "value", "valueFrom"), path, findings)
    raw_name = require(entry, "name", path, findings)
    name = None if raw_name is None else expect_str(raw_name, at(path, "name"), findings)
    has_value, has_from = entry.get("value") is not None, entry.get("valueFrom") is not None
    if has_value and has_from:
        findings.error(path, "give either value or valueFrom, not both")
        return Arg(name or "")
    if value_required and not (has_value or has_from):
        findings.error(path, f'arg "{name or ""}" needs a value or a valueFrom')
    arg_value = _read_arg_value(entry["value"], at(path, "value"), findings) if has_value else None
    value_from = read_value_from(entry["valueFrom"], at(path, "valueFrom"), findings) if has_from else None
    return Arg(name or "", arg_value, value_from)


def _read_arg_value(value: object, path: str, findings: Findings) -> str | None:
    # A number is what the user meant as its decimal text; a YAML boolean is ambiguous.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return expect_str(value, path, findings, allow_empty=True)


def read_value_from(value: object, path: str, findings: Findings) -> ArgValueFrom | None:
    source = expect_mapping(value, path, findings)
    if source is None:
        return None
    kinds = ("podTemplateHashValue", "secretKeyRef", "fieldRef")
    check_keys(source, kinds, path, findings)
    kind = exactly_one_key(source, kinds, path, findings, what="source")
    if kind is None:
        return None
    where = at(path, kind)
    if kind == "podTemplateHashValue":
        which = expect_choice(source[kind], ("Stable", "Latest"), where, findings)
        return None if which is None else ArgValueFrom(pod_template_hash=_stable_or_latest(which))
    ref = expect_mapping(source[kind], where, findings)
    if ref is None:
        return None
    if kind == "secretKeyRef":
        check_keys(ref, ("name", "key"), where, findings)
        name = _required_str(ref, "name", where, findings)
        key = _required_str(ref, "key", where, findings)
        return None if name is None or key is None else ArgValueFrom(secret_name=name, secret_key=key)
    check_keys(ref, ("fieldPath",), where, findings)
    field_path = _required_str(ref, "fieldPath", where, findings)
    if field_path is not None and FIELD_PATH.fullmatch(field_path) is None:
        findings.error(
            at(where, "fieldPath"),
            f'"{field_path}" is not a field meshshift can read; use metadata.name, metadata.namespace, '
            "metadata.labels['KEY'] or metadata.annotations['KEY'] (of the Deployment; of the rollout "
            "file in standalone mode)",
        )
        return None
    return None if field_path is None else ArgValueFrom(field_path=field_path)


# The downward-API paths an arg's valueFrom.fieldRef may name (Argo reads them off the Rollout).
FIELD_PATH = re.compile(r"metadata\.(?:name|namespace|(?:labels|annotations)\['[^']+'\])")


def read_field_path(field_path: str, metadata: Mapping[str, Any]) -> str:
    """The value of a fieldRef path in `metadata` (name, namespace, labels, annotations); a
    missing label or annotation reads as "", as the downward API has it."""
    match = re.fullmatch(r"metadata\.(name|namespace|labels|annotations)(?:\['([^']+)'\])?", field_path)
    if match is None:
        raise LookupError(f"fieldRef {field_path}: not a field meshshift can read")
    field, key = match.groups()
    value = metadata.get(field)
    if key is None:
        return "" if value is None else str(value)
    return str((value or {}).get(key, "")) if isinstance(value, Mapping) or value is None else ""


def _stable_or_latest(which: str) -> Literal["Stable", "Latest"]:
    return "Stable" if which == "Stable" else "Latest"


def _required_str(data: Mapping[str, Any], key: str, path: str, findings: Findings) -> str | None:
    raw = require(data, key, path, findings)
    return None if raw is None else expect_str(raw, at(path, key), findings)


def read_dry_run(value: object, path: str, findings: Findings) -> tuple[str, ...]:
    """`[{metricName: REGEX}]` (".*" for every metric); an invalid entry is kept as ""."""
    names = []
    for index, entry in _list_of_mappings(value, path, findings):
        where = at(path, index)
        name = None
        if entry is not None:
            check_keys(entry, ("metricName",), where, findings)
            name = _required_str(entry, "metricName", where, findings)
        names.append(name or "")
    return tuple(names)


def read_measurement_retention(
    value: object, path: str, findings: Findings
) -> tuple[MeasurementRetention, ...]:
    """`[{metricName, limit}]`: how many measurements to keep (`limit: 0` is the default, as in
    Argo); an invalid entry is kept as ("", 0)."""
    retention = []
    for index, entry in _list_of_mappings(value, path, findings):
        where = at(path, index)
        name = limit = None
        if entry is not None:
            check_keys(entry, ("metricName", "limit"), where, findings)
            name = _required_str(entry, "metricName", where, findings)
            raw_limit = require(entry, "limit", where, findings)
            limit = (
                None if raw_limit is None else expect_int(raw_limit, at(where, "limit"), findings, minimum=0)
            )
            if limit == 0:
                limit = DEFAULT_MEASUREMENT_RETENTION
        retention.append(MeasurementRetention(name or "", limit or 0))
    return tuple(retention)


def _list_of_mappings(
    value: object, path: str, findings: Findings
) -> list[tuple[int, Mapping[str, Any] | None]]:
    """Each entry of a list with its index; None for an entry that is not a mapping (reported)."""
    if value is None:
        return []
    entries = expect_list(value, path, findings) or []
    return [(index, expect_mapping(entry, at(path, index), findings)) for index, entry in enumerate(entries)]
