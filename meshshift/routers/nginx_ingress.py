"""NGINX router: an ingress-nginx canary Ingress (after Argo Rollouts' nginx reconciler).

meshshift creates `<stable ingress>-canary`, a copy of the stable Ingress whose
backends point at the canary Service, owned by the Deployment, and drives it with
ingress-nginx's canary annotations (prefix `nginx.ingress.kubernetes.io`, configurable):
`canary: "true"`, `canary-weight: "N"`, optionally `canary-weight-total`, and for
header routes `canary-by-header` with `canary-by-header-value` (one exact value) or
`canary-by-header-pattern` (prefix, regex, or several values). Argo Rollouts ignores
header routes on NGINX; meshshift does not. ingress-nginx routes on one header per
canary Ingress, so header routes naming two different headers are refused with a
clear error. Mirror routes have no ingress-nginx equivalent: they are logged and skipped.

As with the Istio router, calls are staged and written as one merge patch (with the
resourceVersion read) when the controller reads back or before a workload change.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from meshshift.engine.state import HeaderRoute, MirrorRoute
from meshshift.kube.resources import INGRESSES, JsonObject, KubeApi, owner_reference
from meshshift.kube.rmw import read_modify_write
from meshshift.ports import AppliedRoutes
from meshshift.spec.model import HeaderMatch, MirrorMatch

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
MANAGED_ROUTES_ANNOTATION = "meshshift.io/managed-routes"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CANARY_SUFFIX = "-canary"
_NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration", MANAGED_ROUTES_ANNOTATION)


class IngressConfigError(RuntimeError):
    """The stable Ingress or the header routes cannot be expressed as ingress-nginx canary settings."""


def canary_ingress_name(stable: str) -> str:
    return stable + CANARY_SUFFIX


def _pattern(kind: str, value: str) -> str:
    """A PCRE pattern for one Argo string match (ingress-nginx does not anchor patterns)."""
    if kind == "exact":
        return f"^{re.escape(value)}$"
    if kind == "prefix":
        return f"^{re.escape(value)}"
    return value


@dataclass
class CanaryModel:
    """What the canary Ingress expresses: a weight and the active header routes (step name -> matches)."""

    weight: int = 0
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def from_ingress(cls, ingress: Mapping[str, Any] | None, prefix: str, total: int | None) -> CanaryModel:
        if ingress is None:
            return cls()
        annotations = (ingress.get("metadata") or {}).get("annotations") or {}
        try:
            headers = json.loads(annotations.get(MANAGED_ROUTES_ANNOTATION) or "{}")
        except ValueError:
            headers = {}
        return cls(
            weight=read_weight(annotations, prefix, total) or 0,
            headers=headers if isinstance(headers, dict) else {},
        )

    def header_annotations(self, prefix: str) -> dict[str, str]:
        entries = [entry for matches in self.headers.values() for entry in matches]
        if not entries:
            return {}
        names = sorted({entry["header"] for entry in entries}, key=str.lower)
        if len({name.lower() for name in names}) > 1:
            raise IngressConfigError(
                "ingress-nginx routes a canary on one header only; the active header routes use "
                + ", ".join(names)
            )
        annotations = {f"{prefix}/canary-by-header": names[0]}
        if len(entries) == 1 and entries[0]["kind"] == "exact":
            annotations[f"{prefix}/canary-by-header-value"] = entries[0]["value"]
        else:
            patterns = [_pattern(e["kind"], e["value"]) for e in entries]
            joined = patterns[0] if len(patterns) == 1 else "|".join(f"(?:{p})" for p in patterns)
            annotations[f"{prefix}/canary-by-header-pattern"] = joined
        return annotations


def read_weight(annotations: Mapping[str, str], prefix: str, total: int | None) -> int | None:
    raw = annotations.get(f"{prefix}/canary-weight")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    scale = int(annotations.get(f"{prefix}/canary-weight-total") or total or 100)
    return round(value * 100 / scale) if scale else None


Edit = Callable[[CanaryModel], None]


class NginxIngressRouter:
    name = "nginx"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        stable_ingress: str,
        service: str,
        owner: Mapping[str, Any],
        annotation_prefix: str = DEFAULT_PREFIX,
        weight_total: int | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.stable_ingress = stable_ingress
        self.canary_ingress = canary_ingress_name(stable_ingress)
        self.service = service
        self.canary_service = f"{service}-canary"
        self.stable_services = {service, f"{service}-primary"}
        self.owner = owner
        self.prefix = annotation_prefix.rstrip("/")
        self.weight_total = weight_total
        self.writes = 0
        self._staged: list[Edit] = []
        self.log = log.bind(ingress=f"{namespace}/{self.canary_ingress}")

    # --- the Router port: staged edits -------------------------------------------------------

    async def set_weight(self, canary_weight: int) -> None:
        self._staged.append(lambda model: setattr(model, "weight", canary_weight))

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None:
        entries = [{"header": m.header_name, "kind": m.value.kind, "value": m.value.value} for m in match]

        def edit(model: CanaryModel) -> None:
            model.headers.pop(name, None)
            model.headers[name] = entries

        self._staged.append(edit)

    async def remove_header_route(self, name: str) -> None:
        def edit(model: CanaryModel) -> None:
            model.headers.pop(name, None)

        self._staged.append(edit)

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        self.log.warning("ingress-nginx has no mirror routes; skipped", route=name)

    async def remove_mirror_route(self, name: str) -> None:
        return None

    async def remove_managed_routes(self) -> None:
        self._staged.append(lambda model: model.headers.clear())

    async def set_managed_routes(
        self, header_routes: Sequence[HeaderRoute], mirror_routes: Sequence[MirrorRoute]
    ) -> None:
        # Staged edits are written together (one update of the canary Ingress): no gap.
        await self.remove_managed_routes()
        for header in header_routes:
            await self.set_header_route(header.name, header.match)
        for mirror in mirror_routes:
            await self.set_mirror_route(mirror.name, mirror.match, mirror.percentage)

    async def read_back(self) -> AppliedRoutes:
        await self.commit()
        current = await self.api.get(INGRESSES, self.canary_ingress, self.namespace)
        if current is None:
            return AppliedRoutes(canary_weight=None)
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        model = CanaryModel.from_ingress(current, self.prefix, self.weight_total)
        return AppliedRoutes(read_weight(annotations, self.prefix, self.weight_total), tuple(model.headers))

    # --- writing -----------------------------------------------------------------------------

    async def commit(self) -> None:
        if not self._staged:
            return
        edits, self._staged = self._staged, []
        stable = await self.api.get(INGRESSES, self.stable_ingress, self.namespace)
        if stable is None:
            raise IngressConfigError(
                f"Ingress {self.namespace}/{self.stable_ingress} (meshshift.io/nginx-ingress) does not exist"
            )

        def build(current: JsonObject | None) -> JsonObject:
            model = CanaryModel.from_ingress(current, self.prefix, self.weight_total)
            for apply in edits:
                apply(model)
            desired = self._desired(stable, model)
            if current is None:
                return desired
            # Keep what others added (status, finalizers, extra labels); own the rest.
            current["metadata"]["labels"] = {
                **(current["metadata"].get("labels") or {}),
                **desired["metadata"]["labels"],
            }
            current["metadata"]["annotations"] = desired["metadata"]["annotations"]
            current["metadata"].setdefault("ownerReferences", desired["metadata"]["ownerReferences"])
            current["spec"] = desired["spec"]
            return current

        _, written = await read_modify_write(self.api, INGRESSES, self.canary_ingress, self.namespace, build)
        if written:
            self.writes += 1
            self.log.info("canary ingress written")

    def _desired(self, stable: Mapping[str, Any], model: CanaryModel) -> JsonObject:
        meta = stable.get("metadata") or {}
        annotations = {
            key: value
            for key, value in (meta.get("annotations") or {}).items()
            if key not in _NOT_COPIED and not key.startswith(f"{self.prefix}/canary")
        }
        weight = model.weight if self.weight_total is None else round(model.weight * self.weight_total / 100)
        annotations[f"{self.prefix}/canary"] = "true"
        annotations[f"{self.prefix}/canary-weight"] = str(weight)
        if self.weight_total is not None:
            annotations[f"{self.prefix}/canary-weight-total"] = str(self.weight_total)
        annotations.update(model.header_annotations(self.prefix))
        if model.headers:
            annotations[MANAGED_ROUTES_ANNOTATION] = json.dumps(model.headers, sort_keys=True)
        return {
            "apiVersion": INGRESSES.api_version,
            "kind": INGRESSES.kind,
            "metadata": {
                "name": self.canary_ingress,
                "namespace": self.namespace,
                "labels": {**(meta.get("labels") or {}), MANAGED_BY_LABEL: "meshshift"},
                "annotations": annotations,
                "ownerReferences": [owner_reference(self.owner)],
            },
            "spec": self._canary_spec(stable.get("spec") or {}),
        }

    def _canary_spec(self, stable_spec: Mapping[str, Any]) -> JsonObject:
        """The stable spec with every backend on the stable Service moved to the canary Service."""
        spec = copy.deepcopy(dict(stable_spec))
        rules = []
        for rule in spec.get("rules") or []:
            paths = [p for p in (rule.get("http") or {}).get("paths") or [] if self._moves(p.get("backend"))]
            if paths:
                rules.append({**rule, "http": {**rule["http"], "paths": paths}})
        spec["rules"] = rules
        if not rules:
            spec.pop("rules")
        default = spec.get("defaultBackend")
        if default is not None and not self._moves(default):
            spec.pop("defaultBackend")
        if not rules and "defaultBackend" not in spec:
            raise IngressConfigError(
                f"Ingress {self.stable_ingress} has no backend on Service {self.service} "
                f"(or {self.service}-primary) to send canary traffic for"
            )
        return spec

    def _moves(self, backend: Mapping[str, Any] | None) -> bool:
        """True (and the backend now names the canary) when it pointed at the stable Service."""
        service = (backend or {}).get("service")
        if not isinstance(service, dict) or service.get("name") not in self.stable_services:
            return False
        service["name"] = self.canary_service
        return True
