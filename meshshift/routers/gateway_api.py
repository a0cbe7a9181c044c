"""Gateway API router: the backendRefs weights of an HTTPRoute's managed rules (after Flagger).

The user's HTTPRoute (`gateway.networking.k8s.io/v1`), named by `meshshift.io/http-route`
(default: the service name), is patched in place. Its managed rules are those whose
backendRefs name both the `<svc>-primary` and the `<svc>-canary` Service; only their weights
change (other backendRefs keep theirs; a missing weight is 1, as the API says). Every other
rule and field stays.

Header routes: for each managed rule, a copy with the header match added to each of its
matches (entries of one setHeaderRoute are ORed: one match per original match and entry),
whose backendRefs are the canary alone. Under Gateway API's precedence (the same path,
then the method, then the most header matches wins) the copy wins exactly for the requests
its rule would have caught that carry the header. `exact` is an `Exact` header match;
`prefix` and `regex` are `RegularExpression` matches written so that both a full-match
implementation (Envoy's) and a search one agree: `^literal.*$`, `^(?:regex)$`.

Mirror routes: a copy of the managed rule with the mirror's method, path and headers added,
the same weighted backendRefs, and a `RequestMirror` filter to the canary with `percent`.
A request has one path, so a mirror path and a match's own path combine into the narrower of
the two (`PathPrefix /api` and `/api/v2` give `/api/v2`), and a match whose path cannot hold
together with the mirror's gets no copy; a regular expression on either side is refused.

meshshift's rules are named `meshshift-<header|mirror>-<n>` (rule names are standard since
Gateway API 1.2) and recorded in the annotation `meshshift.io/managed-routes` (rule name ->
kind and step), so a restarted daemon finds them. Writes are staged and sent as one merge
patch with the resourceVersion that was read, when the controller reads back or before a
workload change.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.kube.resources import JsonObject, KubeApi, ResourceType
from meshshift.kube.rmw import read_modify_write
from meshshift.ports import AppliedRoutes
from meshshift.routers.kube_objects import (
    HEADER,
    MIRROR,
    NamedRoutesEdit,
    canary_share,
    set_split,
    weight_or_one,
)
from meshshift.routers.staged import EditStagingRouter
from meshshift.routers.traefik_file import go_regex_literal
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch

log = structlog.get_logger(__name__)

HTTP_ROUTES = ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
RULE_PREFIX = "meshshift-"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
MAX_HEADER_MATCHES = 16  # per match, as the CRD allows


class GatewayConfigError(RuntimeError):
    """The HTTPRoute cannot be managed as configured (the message says what to fix)."""


def header_match(match: HeaderMatch) -> dict[str, str]:
    value = match.value
    if value.kind == "exact":
        return {"type": "Exact", "name": match.header_name, "value": value.value}
    pattern = f"^{go_regex_literal(value.value)}.*$" if value.kind == "prefix" else f"^(?:{value.value})$"
    return {"type": "RegularExpression", "name": match.header_name, "value": pattern}


def path_match(match: StringMatch) -> dict[str, str]:
    kind = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}[match.kind]
    return {"type": kind, "value": match.value}


def mirror_problem(match: MirrorMatch) -> str | None:
    if match.method is not None and (match.method.kind != "exact" or match.method.value not in METHODS):
        return (
            f"Gateway API matches one method exactly ({', '.join(METHODS)}); got a {match.method.kind} "
            f"match {match.method.value!r}"
        )
    return None


def _and_headers(base: Mapping[str, Any], extra: Sequence[Mapping[str, str]]) -> JsonObject:
    merged = copy.deepcopy(dict(base))
    headers = [*(merged.get("headers") or []), *extra]
    if len(headers) > MAX_HEADER_MATCHES:
        raise GatewayConfigError(f"a match would hold {len(headers)} header matches; Gateway API allows 16")
    if headers:
        merged["headers"] = headers
    return merged


def _within(prefix: str, path: str) -> bool:
    """`path` is matched by PathPrefix `prefix` (Gateway API compares whole path elements)."""
    base = prefix.rstrip("/")
    return not base or path == base or path.startswith(base + "/")


def both_paths(rule: Mapping[str, str] | None, mirror: Mapping[str, str]) -> Mapping[str, str] | None:
    """The path match that holds when both do (the narrower one), or None when none can."""
    if rule is None or rule == mirror:
        return mirror
    if "RegularExpression" in (rule.get("type"), mirror.get("type")):
        raise GatewayConfigError(
            f"the mirror path {mirror.get('value')!r} and the rule's path {rule.get('value')!r} cannot be "
            "combined when either is a regular expression"
        )
    kinds = (rule.get("type", "PathPrefix"), mirror.get("type", "PathPrefix"))
    first, second = str(rule.get("value", "/")), str(mirror.get("value", "/"))
    if kinds == ("PathPrefix", "PathPrefix"):
        return mirror if _within(first, second) else rule if _within(second, first) else None
    if kinds == ("PathPrefix", "Exact"):
        return mirror if _within(first, second) else None
    if kinds == ("Exact", "PathPrefix"):
        return rule if _within(second, first) else None
    return rule if first == second else None


def _with_mirror_match(base: Mapping[str, Any], match: MirrorMatch) -> JsonObject | None:
    """`base` AND `match`, or None when both cannot hold (two methods, disjoint paths)."""
    merged = _and_headers(base, [header_match(h) for h in match.headers])
    if match.method is not None:
        if merged.get("method") not in (None, match.method.value):
            return None
        merged["method"] = match.method.value
    if match.path is not None:
        path = both_paths(merged.get("path"), path_match(match.path))
        if path is None:
            return None
        merged["path"] = dict(path)
    return merged


@dataclass(frozen=True, slots=True)
class Backends:
    namespace: str
    primary: str
    canary: str

    def is_ref(self, ref: Mapping[str, Any], name: str) -> bool:
        return (
            ref.get("name") == name
            and ref.get("kind", "Service") == "Service"
            and ref.get("group", "") in ("", "core")
            and ref.get("namespace") in (None, "", self.namespace)
        )

    def is_primary(self, ref: Mapping[str, Any]) -> bool:
        return self.is_ref(ref, self.primary)

    def is_canary(self, ref: Mapping[str, Any]) -> bool:
        return self.is_ref(ref, self.canary)


class HTTPRouteEdit(NamedRoutesEdit):
    """Pure edits of one HTTPRoute document (no I/O), applied in order."""

    def __init__(self, doc: JsonObject, backends: Backends) -> None:
        self.backends = backends
        self.name = str((doc.get("metadata") or {}).get("name", ""))
        super().__init__(doc, "rules")

    def managed_rules(self) -> list[JsonObject]:
        rules = [r for r in self.theirs if self._has_both(r)]
        if not rules:
            raise GatewayConfigError(
                f"HTTPRoute {self.name} has no rule with both {self.backends.primary} and "
                f"{self.backends.canary} in its backendRefs; add them"
            )
        return rules

    def _has_both(self, rule: Mapping[str, Any]) -> bool:
        refs = rule.get("backendRefs") or []
        return all(
            sum(self.backends.is_ref(ref, name) for ref in refs) == 1
            for name in (self.backends.primary, self.backends.canary)
        )

    # --- weights ----------------------------------------------------------------------------

    def set_weight(self, weight: int) -> None:
        for rule in self.managed_rules():
            self._set_weights(rule, weight)
        for rule in self.ours:
            if self.managed.get(str(rule.get("name")), {}).get("kind") == MIRROR:
                self._set_weights(rule, weight)

    def _set_weights(self, rule: JsonObject, weight: int) -> None:
        refs = rule.get("backendRefs") or []
        backends = self.backends
        set_split(
            refs, weight, primary=backends.is_primary, canary=backends.is_canary, weight_of=weight_or_one
        )

    def canary_weights(self) -> list[int]:
        weights = []
        for rule in self.managed_rules():
            refs = rule.get("backendRefs") or []
            backends = self.backends
            percent = canary_share(
                refs, primary=backends.is_primary, canary=backends.is_canary, weight_of=weight_or_one
            )
            if percent is not None:
                weights.append(percent)
        return weights

    # --- header and mirror routes -----------------------------------------------------------

    def _next_name(self) -> str:
        taken = {str(r.get("name")) for r in [*self.ours, *self.theirs] if r.get("name")}
        for index in itertools.count():
            name = f"{RULE_PREFIX}{index}"
            if name not in taken and name not in self.managed:
                return name
        raise AssertionError("unreachable")

    def _canary_ref(self, rule: Mapping[str, Any]) -> JsonObject:
        ref = next(r for r in rule.get("backendRefs") or [] if self.backends.is_ref(r, self.backends.canary))
        return {k: copy.deepcopy(v) for k, v in ref.items() if k not in ("weight", "filters")}

    def _add(self, kind: str, step: str, rule: JsonObject) -> None:
        name = self._next_name()
        rule["name"] = name
        self.ours.append(rule)
        self.managed[name] = {"kind": kind, "step": step}

    def set_header_route(self, step: str, match: Sequence[HeaderMatch]) -> None:
        self._drop(HEADER, step)
        extra = [header_match(m) for m in match]
        for rule in self.managed_rules():
            copied = {
                k: copy.deepcopy(v) for k, v in rule.items() if k not in ("name", "backendRefs", "matches")
            }
            copied["matches"] = [_and_headers(m, [e]) for m in rule.get("matches") or [{}] for e in extra]
            copied["backendRefs"] = [{**self._canary_ref(rule), "weight": 1}]
            self._add(HEADER, step, copied)

    def set_mirror_route(self, step: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        self._drop(MIRROR, step)
        for entry in match:
            problem = mirror_problem(entry)
            if problem:
                raise GatewayConfigError(f"mirror route {step}: {problem}")
        for rule in self.managed_rules():
            matches = []
            for base in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
                for entry in match:
                    merged = _with_mirror_match(base, entry)
                    if merged is not None:
                        matches.append(merged)
            if not matches:
                continue
            copied = {k: copy.deepcopy(v) for k, v in rule.items() if k not in ("name", "matches")}
            copied["matches"] = matches
            mirror = {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": self._canary_ref(rule),
                    "percent": 100 if percentage is None else percentage,
                },
            }
            copied["filters"] = [*(copied.get("filters") or []), mirror]
            self._add(MIRROR, step, copied)

    def step_names(self, kind: str) -> tuple[str, ...]:
        present = {str(r.get("name")) for r in self.ours}
        return tuple(
            dict.fromkeys(
                info["step"]
                for name, info in self.managed.items()
                if info.get("kind") == kind and name in present
            )
        )

    def result(self) -> JsonObject:
        doc = self.doc
        count = len(self.ours) + len(self.theirs)
        if count > 16:
            raise GatewayConfigError(
                f"HTTPRoute {self.name} would hold {count} rules with meshshift's header and mirror "
                "routes; Gateway API allows 16"
            )
        # Ours after theirs: the user's rules keep their positions (implementations name a rule's
        # backends by its index, as Traefik does in its metrics), and precedence does not
        # depend on the order here (a copy has more header matches than its rule).
        doc["spec"]["rules"] = [*self.theirs, *self.ours]
        self.record_managed()
        return doc


class GatewayApiRouter(EditStagingRouter[HTTPRouteEdit]):
    name = "gateway-api"

    def __init__(self, api: KubeApi, *, namespace: str, http_route: str, service: str) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self.http_route = http_route
        self.backends = Backends(namespace, f"{service}-primary", f"{service}-canary")
        self.writes = 0
        self.log = log.bind(http_route=f"{namespace}/{http_route}")

    async def read_back(self) -> AppliedRoutes:
        await self.commit()
        current = await self.api.get(HTTP_ROUTES, self.http_route, self.namespace)
        if current is None:
            return AppliedRoutes(canary_weight=None)
        edit = HTTPRouteEdit(copy.deepcopy(current), self.backends)
        try:
            weights = edit.canary_weights()
        except GatewayConfigError:
            return AppliedRoutes(canary_weight=None)
        return self.applied(edit, weights)

    async def commit(self) -> None:
        edits = self.staged_edits()
        if not edits:
            return

        def build(current: JsonObject | None) -> JsonObject:
            if current is None:
                raise GatewayConfigError(
                    f"HTTPRoute {self.namespace}/{self.http_route} (meshshift.io/http-route) does not exist; "
                    "create it with its parentRefs and a rule to both Services"
                )
            edit = HTTPRouteEdit(current, self.backends)
            for apply in edits:
                apply(edit)
            return edit.result()

        _, written = await read_modify_write(self.api, HTTP_ROUTES, self.http_route, self.namespace, build)
        if written:
            self.writes += 1
            self.log.info("http route written", canary_weight=self._desired_weight)
