"""Istio router: the weights and header/mirror routes of a VirtualService (after Argo Rollouts).

The user's VirtualService is patched in place. The managed routes are the HTTP routes
named in `meshshift.io/istio-routes`, or by default every route whose destinations
include both the primary host (`<svc>-primary`) and the canary host (`<svc>-canary`).
Only the weights of those two destinations change; every other route and field stays.
If the VirtualService does not exist, meshshift creates one, owned by the Deployment.

Header and mirror routes are added one per managed route, each a copy of the route it
shadows minus its destinations (so corsPolicy, retries, timeout, headers, rewrite... still
apply) with the header conditions added to each of its match blocks, and each sits
immediately before the route it shadows (header routes first, then mirror routes). Istio
takes the first route that matches, so a shadow catches only requests its route would have
caught: a user's route placed before the managed one (`/legacy`) keeps its requests, header
or not. (Argo Rollouts instead puts its header and mirror routes, which match on the header
alone, on top of the whole list, in the order of `managedRoutes`: there they catch every
request with the header, whatever route it was meant for.) Their names, and the route each
shadows, are kept in the annotation `meshshift.io/managed-routes` on the VirtualService, so a
restarted daemon can still find and remove them.

Router calls are staged and written together, as one JSON merge patch carrying the
resourceVersion that was read: when the controller reads back (it does after every
batch of routing actions), and before any workload change (the operator wires
`KubeWorkloads.before_write` to `commit`), so traffic leaves the canary before its pods
go, in the order the engine asks. A resync after a restart, which re-asserts the whole
routing state, therefore writes nothing when nothing changed. On 409 the object is read
again and the staged edits are applied again.

The VirtualService is read once; after that each write starts from the answer of the one
before (its resourceVersion makes that safe: anyone else's write meets a 409 and a fresh
read), and that answer, the object as the server stored it, is what `read_back` reports.
One request per step: the write.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.kube.resources import JsonObject, KubeApi, ResourceType, answer_copy, virtual_services
from meshshift.kube.rmw import KnownObjects, read_modify_write
from meshshift.ports import AppliedRoutes
from meshshift.routers.kube_objects import (
    HEADER,
    MIRROR,
    NamedRoutesEdit,
    canary_share,
    owned_metadata,
    set_split,
)
from meshshift.routers.staged import EditStagingRouter
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch

log = structlog.get_logger(__name__)

DEFAULT_ROUTE_NAME = "primary"
# Fields of a route that say where traffic goes; a shadowing route replaces them.
_DESTINATION_FIELDS = (
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "delegate",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
)


class RouterConfigError(RuntimeError):
    """The VirtualService cannot be managed as configured (the message says what to fix)."""


def _string_match(match: StringMatch) -> dict[str, str]:
    return {match.kind: match.value}


def _header_conditions(match: HeaderMatch) -> dict[str, Any]:
    # Istio wants header keys in lowercase; HTTP header names are case-insensitive anyway,
    # so `X-Canary` from an Argo step matches exactly what `x-canary` does.
    return {match.header_name.lower(): _string_match(match.value)}


def _mirror_conditions(match: MirrorMatch) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if match.method is not None:
        block["method"] = _string_match(match.method)
    if match.path is not None:
        block["uri"] = _string_match(match.path)
    if match.headers:
        block["headers"] = {k: v for h in match.headers for k, v in _header_conditions(h).items()}
    return block


def combine_matches(
    original: Sequence[Mapping[str, Any]] | None, extra: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """Each original match block AND each extra block, OR-ed: the shadow catches no more than its route."""
    combined = []
    for block in original or [{}]:
        for condition in extra:
            merged = copy.deepcopy(dict(block))
            for key, value in condition.items():
                if key == "headers":
                    merged["headers"] = {**(merged.get("headers") or {}), **copy.deepcopy(value)}
                else:
                    merged[key] = copy.deepcopy(value)
            combined.append(merged)
    return combined


@dataclass(frozen=True, slots=True)
class Hosts:
    stable: str
    canary: str
    namespace: str

    def is_host(self, destination: Mapping[str, Any], host: str) -> bool:
        """`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` all name the same Service."""
        name = str((destination.get("destination") or {}).get("host") or "")
        if name == host:
            return True
        parts = name.split(".")
        return parts[0] == host and len(parts) >= 2 and parts[1] == self.namespace

    def is_stable(self, destination: Mapping[str, Any]) -> bool:
        return self.is_host(destination, self.stable)

    def is_canary(self, destination: Mapping[str, Any]) -> bool:
        return self.is_host(destination, self.canary)


def destination_weight(destination: Mapping[str, Any]) -> int:
    return int(destination.get("weight") or 0)  # Istio: a destination without a weight gets none


class VirtualServiceEdit(NamedRoutesEdit):
    """Pure edits of one VirtualService document (no I/O), applied in order.

    Its managed-routes annotation also says which managed route each shadow sits before
    (`"shadows"`, absent in older versions).
    """

    def __init__(self, doc: JsonObject, hosts: Hosts, route_names: Sequence[str]) -> None:
        self.hosts = hosts
        self.route_names = tuple(route_names)
        self.name = str(doc.get("metadata", {}).get("name", ""))
        super().__init__(doc, "http")

    # --- which routes -------------------------------------------------------------------

    def managed_routes(self) -> list[JsonObject]:
        if self.route_names:
            by_name = {r.get("name"): r for r in self.theirs}
            routes = []
            for name in self.route_names:
                route = by_name.get(name)
                if route is None:
                    raise RouterConfigError(
                        f'VirtualService {self.name} has no HTTP route named "{name}" '
                        "(listed in meshshift.io/istio-routes)"
                    )
                self._check_destinations(route)
                routes.append(route)
            return routes
        routes = [r for r in self.theirs if self._has_both_hosts(r)]
        if not routes:
            raise RouterConfigError(
                f"VirtualService {self.name} has no HTTP route with both {self.hosts.stable} and "
                f"{self.hosts.canary} as destinations; add them, or name routes in meshshift.io/istio-routes"
            )
        return routes

    def _has_both_hosts(self, route: Mapping[str, Any]) -> bool:
        destinations = route.get("route") or []
        return any(self.hosts.is_host(d, self.hosts.stable) for d in destinations) and any(
            self.hosts.is_host(d, self.hosts.canary) for d in destinations
        )

    def _check_destinations(self, route: Mapping[str, Any]) -> None:
        for host in (self.hosts.stable, self.hosts.canary):
            count = sum(self.hosts.is_host(d, host) for d in route.get("route") or [])
            if count != 1:
                raise RouterConfigError(
                    f'VirtualService {self.name} route "{route.get("name", "")}" has {count} destinations '
                    f"for {host}; it needs exactly one"
                )

    # --- weights ------------------------------------------------------------------------

    def set_weight(self, weight: int) -> None:
        for route in self.managed_routes():
            self._set_weights(route, weight)
        for route in self.ours:
            if self.managed.get(route.get("name", ""), {}).get("kind") == MIRROR:
                self._set_weights(route, weight)

    def _set_weights(self, route: JsonObject, weight: int) -> None:
        self._check_destinations(route)
        set_split(
            route["route"],
            weight,
            primary=self.hosts.is_stable,
            canary=self.hosts.is_canary,
            weight_of=destination_weight,
        )

    def canary_weights(self) -> list[int]:
        """The canary's percentage of the stable+canary share, per managed route."""
        weights = []
        for route in self.managed_routes():
            destinations = route.get("route") or []
            hosts = self.hosts
            percent = canary_share(
                destinations, primary=hosts.is_stable, canary=hosts.is_canary, weight_of=destination_weight
            )
            if percent is not None:
                weights.append(percent)
        return weights

    # --- header and mirror routes ---------------------------------------------------------

    def _shadow_name(self, step_name: str, route: Mapping[str, Any], count: int, index: int) -> str:
        if count == 1:
            return step_name
        return f"{step_name}-{route.get('name') or index}"

    def _add_shadows(self, kind: str, step_name: str, make: Callable[[JsonObject, str], JsonObject]) -> None:
        self._drop(kind, step_name)
        routes = self.managed_routes()
        taken = {r.get("name") for r in self.theirs}
        for index, route in enumerate(routes):
            name = self._shadow_name(step_name, route, len(routes), index)
            if name in taken:
                raise RouterConfigError(
                    f'VirtualService {self.name} already has a route named "{name}"; '
                    f"rename the {kind} route of the step"
                )
            self.ours.append(make(route, name))
            self.managed[name] = {"kind": kind, "step": step_name, "shadows": self._key_of(route)}

    def set_header_route(self, step_name: str, match: Sequence[HeaderMatch]) -> None:
        conditions = [{"headers": _header_conditions(m)} for m in match]

        def make(route: JsonObject, name: str) -> JsonObject:
            canary = next(d for d in route["route"] if self.hosts.is_host(d, self.hosts.canary))
            shadow: JsonObject = {"name": name, "match": combine_matches(route.get("match"), conditions)}
            shadow["route"] = [{**copy.deepcopy(canary), "weight": 100}]
            shadow.update({k: copy.deepcopy(v) for k, v in route.items() if k not in _DESTINATION_FIELDS})
            return shadow

        self._add_shadows(HEADER, step_name, make)

    def set_mirror_route(self, step_name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        conditions = [_mirror_conditions(m) for m in match]

        def make(route: JsonObject, name: str) -> JsonObject:
            canary = next(d for d in route["route"] if self.hosts.is_host(d, self.hosts.canary))
            shadow: JsonObject = {"name": name, "match": combine_matches(route.get("match"), conditions)}
            shadow["route"] = copy.deepcopy(route["route"])
            shadow["mirror"] = copy.deepcopy(canary.get("destination") or {})
            shadow["mirrorPercentage"] = {"value": float(100 if percentage is None else percentage)}
            shadow.update({k: copy.deepcopy(v) for k, v in route.items() if k not in _DESTINATION_FIELDS})
            return shadow

        self._add_shadows(MIRROR, step_name, make)

    def step_names(self, kind: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i["step"] for i in self.managed.values() if i.get("kind") == kind))

    # --- the result -----------------------------------------------------------------------

    def ordered_http(self) -> list[JsonObject]:
        """The user's routes in their order, each managed one preceded by its header, then mirror, shadows."""
        keys = [self._key_of(route) for route in self.theirs]
        before: dict[str, list[JsonObject]] = {key: [] for key in keys}
        unplaced: list[JsonObject] = []
        for kind in (HEADER, MIRROR):
            for shadow in self.ours:
                info = self.managed.get(shadow.get("name", ""), {})
                if info.get("kind") != kind:
                    continue
                target = self._shadowed(shadow.get("name", ""), info)
                before.get(target or "", unplaced).append(shadow)
        routes: list[JsonObject] = []
        for key, route in zip(keys, self.theirs, strict=True):
            if unplaced and self._is_managed(route):
                routes += unplaced  # shadows whose route is gone: before the first managed one
                unplaced = []
            routes += [*before[key], route]
        return [*unplaced, *routes]

    def _shadowed(self, name: str, info: Mapping[str, str]) -> str | None:
        """The key of the route a shadow sits before; older annotations name it only in the shadow's name."""
        if "shadows" in info:
            return info["shadows"]
        step = info.get("step", "")
        if name == step:  # one managed route: the shadow had the step's name
            try:
                routes = self.managed_routes()
            except RouterConfigError:
                return None
            return self._key_of(routes[0]) if len(routes) == 1 else None
        return name.removeprefix(f"{step}-") if name.startswith(f"{step}-") else None

    def _key_of(self, route: Mapping[str, Any]) -> str:
        """How a shadow names the route it shadows: its name (an unnamed one: #<its position>)."""
        name = route.get("name")
        if name:
            return str(name)
        return f"#{next(i for i, theirs in enumerate(self.theirs) if theirs is route)}"

    def _is_managed(self, route: Mapping[str, Any]) -> bool:
        if self.route_names:
            return route.get("name") in self.route_names
        return self._has_both_hosts(route)

    def result(self) -> JsonObject:
        doc = self.doc
        doc["spec"]["http"] = self.ordered_http()
        self.record_managed()
        return doc


class IstioRouter(EditStagingRouter[VirtualServiceEdit]):
    name = "istio"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        virtual_service: str,
        service: str,
        routes: Sequence[str] = (),
        owner: Mapping[str, Any],
        api_version: str = "v1beta1",
    ) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.service = service
        self.route_names = tuple(routes)
        self.owner = owner
        self.rt: ResourceType = virtual_services(api_version)
        self.hosts = Hosts(f"{service}-primary", f"{service}-canary", namespace)
        self.writes = 0
        self.known = KnownObjects()  # the VirtualService as last read or written
        self.log = log.bind(virtual_service=f"{namespace}/{virtual_service}")

    async def read_back(self) -> AppliedRoutes:
        """Write what is staged, then report what the VirtualService holds (as the write stored it)."""
        await self.commit()
        current = self.known.get(self.rt, self.virtual_service, self.namespace)
        if current is None:
            current = await self.api.get(self.rt, self.virtual_service, self.namespace)
            self.known.put(self.rt, self.virtual_service, self.namespace, current)
        if current is None:
            return AppliedRoutes(canary_weight=None)
        edit = VirtualServiceEdit(answer_copy(current), self.hosts, self.route_names)
        return self.applied(edit, edit.canary_weights())

    # --- writing --------------------------------------------------------------------------

    async def commit(self) -> None:
        edits = self.staged_edits()
        if not edits:
            return

        def build(current: JsonObject | None) -> JsonObject:
            doc = self._new_virtual_service() if current is None else current
            edit = VirtualServiceEdit(doc, self.hosts, self.route_names)
            for apply in edits:
                apply(edit)
            return edit.result()

        try:
            _, written = await read_modify_write(
                self.api, self.rt, self.virtual_service, self.namespace, build, known=self.known
            )
        except Exception:
            self.known.clear()  # a failed write: read afresh next time
            raise
        if written:
            self.writes += 1
            self.log.info("virtual service written", canary_weight=self._desired_weight)

    def _new_virtual_service(self) -> JsonObject:
        route_name = self.route_names[0] if self.route_names else DEFAULT_ROUTE_NAME
        return {
            "apiVersion": self.rt.api_version,
            "kind": self.rt.kind,
            "metadata": owned_metadata(self.virtual_service, self.namespace, self.owner),
            "spec": {
                "hosts": [self.service],
                "http": [
                    {
                        "name": route_name,
                        "route": [
                            {"destination": {"host": self.hosts.stable}, "weight": 100},
                            {"destination": {"host": self.hosts.canary}, "weight": 0},
                        ],
                    }
                ],
            },
        }
