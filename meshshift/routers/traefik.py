"""Traefik router, Kubernetes mode: a TraefikService's weights, and header/mirror routes.

meshshift owns the weights of the TraefikService (`traefik.io/v1alpha1`) named by
`meshshift.io/traefik-service` (default: the service name): a `weighted` service over the
`<svc>-primary` and `<svc>-canary` Services, as Argo Rollouts and Flagger drive it. The
user's IngressRoute references it (`services: [{kind: TraefikService, name: ...}]`). If it
does not exist, meshshift creates it, owned by the Deployment, with the port of the
primary Service. Other entries of `weighted.services` keep their weights; the primary and
the canary share the rest. A weight of 0 stays written: Traefik's weighted round robin
ignores a non-positive weight.

Header routes, which Argo does not offer on Traefik: every IngressRoute route in the
namespace that sends traffic to the TraefikService gets a shadow route in the same
IngressRoute, whose match is `(<the route's match>) && Header(...)` (or `HeaderRegexp`,
anchored as in standalone mode), whose priority is one above the route's (Traefik's default
priority is the length of the match), to the canary Service; its middlewares are the
route's. Entries of one setHeaderRoute are ORed (one shadow each). Mirror routes: a
`mirroring` TraefikService `<traefik service>-mirror-<name>` (the weighted service, plus a
percentage copied to the canary) and shadow routes to it, with the mirror match added.

Which routes are meshshift's is recorded in the annotation `meshshift.io/managed-routes`:
on the TraefikService, the header and mirror routes asked for (so a restarted daemon knows
them); on each IngressRoute, the matches of the shadow routes it holds. Unmanaged routes and
fields are never touched. As with the Istio router, calls are staged and written when the
controller reads back or before a workload change; writes are merge patches carrying the
resourceVersion that was read.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from meshshift.kube.resources import SERVICES, JsonObject, KubeApi, ResourceType
from meshshift.kube.rmw import read_modify_write
from meshshift.ports import AppliedRoutes
from meshshift.routers.kube_objects import (
    HEADER,
    MANAGED_ROUTES_ANNOTATION,
    MIRROR,
    annotation_json,
    canary_percent,
    header_entry,
    owned_metadata,
    put_last,
    set_annotation,
    set_split,
    weight_or_one,
)
from meshshift.routers.staged import ModelStagingRouter
from meshshift.routers.traefik_file import header_rule, method_problem, mirror_rule
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch

log = structlog.get_logger(__name__)

GROUP, VERSION = "traefik.io", "v1alpha1"
TRAEFIK_SERVICES = ResourceType(GROUP, VERSION, "traefikservices", "TraefikService")
INGRESS_ROUTES = ResourceType(GROUP, VERSION, "ingressroutes", "IngressRoute")
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")


class TraefikConfigError(RuntimeError):
    """The Traefik objects cannot be managed as configured (the message says what to fix)."""


def mirror_service_name(traefik_service: str, route: str) -> str:
    """`<traefik service>-mirror-<route>`, a valid object name (lower case, `-`, at most 253)."""
    suffix = _NAME_CHARS.sub("-", route.lower()).strip("-") or "route"
    return f"{traefik_service}-mirror-{suffix}"[:253].rstrip("-")


def _string_match(data: Mapping[str, Any]) -> StringMatch:
    return StringMatch(data["kind"], data["value"])


def _header_from(entry: Mapping[str, str]) -> HeaderMatch:
    return HeaderMatch(entry["header"], StringMatch(entry["kind"], entry["value"]))  # type: ignore[arg-type]


def _mirror_entry(match: MirrorMatch) -> dict[str, Any]:
    entry: dict[str, Any] = {"headers": [header_entry(h) for h in match.headers]}
    for key, value in (("method", match.method), ("path", match.path)):
        if value is not None:
            entry[key] = {"kind": value.kind, "value": value.value}
    return entry


def _mirror_from(entry: Mapping[str, Any]) -> MirrorMatch:
    return MirrorMatch(
        method=_string_match(entry["method"]) if entry.get("method") else None,
        path=_string_match(entry["path"]) if entry.get("path") else None,
        headers=tuple(_header_from(h) for h in entry.get("headers") or ()),
    )


@dataclass
class TraefikModel:
    """What meshshift asked for: a weight, header routes and mirror routes (step name -> matches)."""

    weight: int | None = None  # None: leave the weights as they are
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    mirrors: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {match, percentage}

    @classmethod
    def from_traefik_service(cls, obj: Mapping[str, Any] | None) -> TraefikModel:
        data = annotation_json((obj or {}).get("metadata"), MANAGED_ROUTES_ANNOTATION, "{}")
        if not isinstance(data, dict):
            data = {}
        return cls(headers=dict(data.get(HEADER) or {}), mirrors=dict(data.get(MIRROR) or {}))

    def annotation(self) -> str | None:
        if not self.headers and not self.mirrors:
            return None
        return json.dumps({HEADER: self.headers, MIRROR: self.mirrors}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Backends:
    namespace: str
    primary: str
    canary: str
    traefik_service: str

    def refers_to_us(self, service: Mapping[str, Any]) -> bool:
        return (
            service.get("kind") == "TraefikService"
            and service.get("name") == self.traefik_service
            and service.get("namespace") in (None, "", self.namespace)
        )

    def is_primary(self, weighted: Mapping[str, Any]) -> bool:
        return weighted.get("name") == self.primary

    def is_canary(self, weighted: Mapping[str, Any]) -> bool:
        return weighted.get("name") == self.canary


def route_priority(route: Mapping[str, Any]) -> int:
    """Traefik's priority of a route: the explicit one, else the length of its match."""
    explicit = int(route.get("priority") or 0)
    return explicit if explicit > 0 else len(str(route.get("match") or ""))


class IngressRouteEdit:
    """Pure edits of one IngressRoute: its shadow routes follow the model."""

    def __init__(self, doc: JsonObject, backends: Backends, canary_port: Any) -> None:
        self.doc = doc
        self.backends = backends
        self.canary_port = canary_port
        managed = annotation_json(doc.get("metadata"), MANAGED_ROUTES_ANNOTATION, "[]")
        self.managed: set[str] = {str(m) for m in managed} if isinstance(managed, list) else set()
        routes = (doc.get("spec") or {}).get("routes") or []
        self.theirs = [r for r in routes if str(r.get("match")) not in self.managed]

    def shadowed(self) -> list[JsonObject]:
        return [
            r
            for r in self.theirs
            if r.get("kind", "Rule") == "Rule"
            and any(self.backends.refers_to_us(s) for s in r.get("services") or [])
        ]

    def ours(self, model: TraefikModel) -> list[JsonObject]:
        routes: list[JsonObject] = []
        for route in self.shadowed():
            base = f"({route.get('match')})"
            keep = {
                k: copy.deepcopy(v)
                for k, v in route.items()
                if k in ("middlewares", "observability", "syntax")
            }
            priority = route_priority(route) + 1
            for entries in model.headers.values():
                for entry in entries:
                    routes.append(
                        {
                            "kind": "Rule",
                            "match": f"{base} && {header_rule(_header_from(entry))}",
                            "priority": priority,
                            "services": [{"name": self.backends.canary, "port": self.canary_port}],
                            **keep,
                        }
                    )
            for name, mirror in model.mirrors.items():
                service = {
                    "kind": "TraefikService",
                    "name": mirror_service_name(self.backends.traefik_service, name),
                }
                for entry in mirror["match"]:
                    routes.append(
                        {
                            "kind": "Rule",
                            "match": f"{base} && {mirror_rule(_mirror_from(entry))}",
                            "priority": priority,
                            "services": [service],
                            **keep,
                        }
                    )
        return routes

    def result(self, model: TraefikModel) -> JsonObject:
        ours = self.ours(model)
        doc = self.doc
        doc.setdefault("spec", {})["routes"] = [*ours, *self.theirs]
        value = json.dumps(sorted({r["match"] for r in ours})) if ours else None
        set_annotation(doc.setdefault("metadata", {}), MANAGED_ROUTES_ANNOTATION, value)
        return doc

    def route_names(self, model: TraefikModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The header and mirror routes of `model` this IngressRoute holds now."""
        present = {str(r.get("match")) for r in (self.doc.get("spec") or {}).get("routes") or []}
        wanted = IngressRouteEdit(copy.deepcopy(self.doc), self.backends, self.canary_port)
        headers: list[str] = []
        mirrors: list[str] = []
        for name in model.headers:
            only = TraefikModel(headers={name: model.headers[name]})
            if (matches := {r["match"] for r in wanted.ours(only)}) and matches <= present:
                headers.append(name)
        for name in model.mirrors:
            only = TraefikModel(mirrors={name: model.mirrors[name]})
            if (matches := {r["match"] for r in wanted.ours(only)}) and matches <= present:
                mirrors.append(name)
        return tuple(headers), tuple(mirrors)


def weighted_services(doc: Mapping[str, Any]) -> list[JsonObject]:
    services = ((doc.get("spec") or {}).get("weighted") or {}).get("services")
    return services if isinstance(services, list) else []


class TraefikRouter(ModelStagingRouter[TraefikModel]):
    name = "traefik"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        traefik_service: str,
        service: str,
        owner: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self.traefik_service = traefik_service
        self.backends = Backends(namespace, f"{service}-primary", f"{service}-canary", traefik_service)
        self.service = service
        self.owner = owner
        self.writes = 0
        self._desired_weight: int | None = None
        self.log = log.bind(traefik_service=f"{namespace}/{traefik_service}")

    # --- the Router port: staged edits ---------------------------------------------------------

    async def set_weight(self, canary_weight: int) -> None:
        self._desired_weight = canary_weight
        self.stage(lambda model: setattr(model, "weight", canary_weight))

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        for entry in match:
            problem = method_problem(entry)
            if problem:
                raise TraefikConfigError(f"mirror route {name}: {problem}")
        value = {
            "match": [_mirror_entry(m) for m in match],
            "percentage": 100 if percentage is None else percentage,
        }
        self.stage(lambda model: put_last(model.mirrors, name, value))

    async def remove_mirror_route(self, name: str) -> None:
        def edit(model: TraefikModel) -> None:
            model.mirrors.pop(name, None)

        self.stage(edit)

    async def remove_managed_routes(self) -> None:
        def edit(model: TraefikModel) -> None:
            model.headers.clear()
            model.mirrors.clear()

        self.stage(edit)

    async def read_back(self) -> AppliedRoutes:
        """Write what is staged, then report the TraefikService's weight and the routes in place."""
        await self.commit()
        current = await self.api.get(TRAEFIK_SERVICES, self.traefik_service, self.namespace)
        if current is None:
            return AppliedRoutes(canary_weight=None)
        weights = {s.get("name"): int(s.get("weight") or 0) for s in weighted_services(current)}
        primary, canary = weights.get(self.backends.primary, 0), weights.get(self.backends.canary, 0)
        weight = canary_percent(primary, canary)
        model = TraefikModel.from_traefik_service(current)
        headers: list[str] = []
        mirrors: list[str] = []
        port = self._port_of(current)
        for route in await self._ingress_routes():
            found = IngressRouteEdit(route, self.backends, port).route_names(model)
            headers += [n for n in found[0] if n not in headers]
            mirrors += [n for n in found[1] if n not in mirrors]
        return AppliedRoutes(weight, tuple(headers), tuple(mirrors))

    # --- writing ---------------------------------------------------------------------------------

    async def commit(self) -> None:
        edits = self.staged_edits()
        if not edits:
            return
        port = await self._service_port()
        model_box: list[TraefikModel] = []

        def build(current: JsonObject | None) -> JsonObject:
            model = TraefikModel.from_traefik_service(current)
            for apply in edits:
                apply(model)
            model_box[:] = [model]
            return self._desired_traefik_service(current, model, port)

        _, written = await read_modify_write(
            self.api, TRAEFIK_SERVICES, self.traefik_service, self.namespace, build
        )
        if written:
            self.writes += 1
            self.log.info("traefik service written", canary_weight=self._desired_weight)
        model = model_box[0]
        for name, mirror in model.mirrors.items():
            await self._ensure_mirror_service(name, mirror, port)
        await self._write_ingress_routes(model, port)

    async def _write_ingress_routes(self, model: TraefikModel, port: Any) -> None:
        shadowing = 0
        for route in await self._ingress_routes():
            name = str(route["metadata"]["name"])

            def build(current: JsonObject | None) -> JsonObject | None:
                if current is None:
                    return None
                return IngressRouteEdit(current, self.backends, port).result(model)

            stored, written = await read_modify_write(self.api, INGRESS_ROUTES, name, self.namespace, build)
            if stored is not None and IngressRouteEdit(copy.deepcopy(stored), self.backends, port).shadowed():
                shadowing += 1
            if written:
                self.writes += 1
                self.log.info("ingress route written", ingress_route=name)
        if (model.headers or model.mirrors) and not shadowing:
            raise TraefikConfigError(
                f"no IngressRoute in namespace {self.namespace} has a route to TraefikService "
                f"{self.traefik_service}: header and mirror routes need one to shadow"
            )

    async def _ingress_routes(self) -> list[JsonObject]:
        listing = await self.api.list_objects(INGRESS_ROUTES, self.namespace)
        routes = []
        for item in listing.get("items") or []:
            edit = IngressRouteEdit(copy.deepcopy(item), self.backends, None)
            if edit.shadowed() or edit.managed:
                routes.append(item)
        return routes

    async def _service_port(self) -> Any:
        """The port the TraefikService names for the primary, else the primary Service's first port."""
        current = await self.api.get(TRAEFIK_SERVICES, self.traefik_service, self.namespace)
        port = self._port_of(current)
        if port is not None:
            return port
        for name in (self.backends.primary, self.service):
            service = await self.api.get(SERVICES, name, self.namespace)
            ports = ((service or {}).get("spec") or {}).get("ports") or []
            if ports:
                return ports[0].get("port")
        raise TraefikConfigError(
            f"no port for TraefikService {self.traefik_service}: Service {self.backends.primary} "
            f"(or {self.service}) has no ports yet"
        )

    def _port_of(self, traefik_service: Mapping[str, Any] | None) -> Any:
        for entry in weighted_services(traefik_service or {}):
            if entry.get("name") in (self.backends.primary, self.backends.canary) and entry.get("port"):
                return entry["port"]
        return None

    def _desired_traefik_service(
        self, current: JsonObject | None, model: TraefikModel, port: Any
    ) -> JsonObject:
        doc = current if current is not None else self._new_traefik_service()
        spec = doc.setdefault("spec", {})
        if (
            any(key in spec for key in ("mirroring", "highestRandomWeight", "failover"))
            and "weighted" not in spec
        ):
            raise TraefikConfigError(
                f"TraefikService {self.traefik_service} is not a weighted service; "
                "meshshift owns the weights of a `weighted` TraefikService"
            )
        services = spec.setdefault("weighted", {}).setdefault("services", [])
        for name in (self.backends.primary, self.backends.canary):
            if not any(s.get("name") == name for s in services):
                services.append({"name": name, "port": port, "weight": 0})
        if model.weight is not None:
            backends = self.backends
            set_split(
                services,
                model.weight,
                primary=backends.is_primary,
                canary=backends.is_canary,
                weight_of=weight_or_one,
            )
        set_annotation(doc.setdefault("metadata", {}), MANAGED_ROUTES_ANNOTATION, model.annotation())
        return doc

    def _new_traefik_service(self) -> JsonObject:
        return {
            "apiVersion": TRAEFIK_SERVICES.api_version,
            "kind": TRAEFIK_SERVICES.kind,
            "metadata": owned_metadata(self.traefik_service, self.namespace, self.owner),
            "spec": {"weighted": {"services": []}},
        }

    async def _ensure_mirror_service(self, route: str, mirror: Mapping[str, Any], port: Any) -> None:
        name = mirror_service_name(self.traefik_service, route)
        spec = {
            "mirroring": {
                "kind": "TraefikService",
                "name": self.traefik_service,
                "mirrors": [
                    {"name": self.backends.canary, "port": port, "percent": int(mirror["percentage"])}
                ],
            }
        }

        def build(current: JsonObject | None) -> JsonObject:
            if current is None:
                return {
                    "apiVersion": TRAEFIK_SERVICES.api_version,
                    "kind": TRAEFIK_SERVICES.kind,
                    "metadata": owned_metadata(name, self.namespace, self.owner),
                    "spec": spec,
                }
            current["spec"] = spec
            return current

        _, written = await read_modify_write(self.api, TRAEFIK_SERVICES, name, self.namespace, build)
        if written:
            self.writes += 1
