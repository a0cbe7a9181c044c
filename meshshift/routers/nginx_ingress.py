"""NGINX router: one ingress-nginx canary Ingress per rollout and stable Ingress (after Argo Rollouts).

meshshift creates `<deployment>-<stable ingress>-canary` (Argo's name), a copy of the stable
Ingress holding only the paths whose backend is this rollout's Service, pointed at the canary
Service, owned by the Deployment, and drives it with ingress-nginx's canary annotations
(prefix `nginx.ingress.kubernetes.io`, configurable): `canary: "true"`, `canary-weight: "N"`,
optionally `canary-weight-total`, and for header routes `canary-by-header` with
`canary-by-header-value` (one exact value) or `canary-by-header-pattern` (prefix, regex, or
several values). Two Deployments behind one Ingress each get their own canary Ingress, so
neither overwrites the other's paths or weight. Argo Rollouts ignores header routes on NGINX;
meshshift does not. ingress-nginx routes on one header per canary Ingress, so header routes
naming two different headers are refused with a clear error. Mirror routes have no
ingress-nginx equivalent: they are logged and skipped.

Earlier versions of meshshift wrote one shared `<stable ingress>-canary`. The first write of
a rollout after an upgrade carries over the weight and header routes that object expressed
for it, writes its own canary Ingress, and only then moves its paths out of the shared one
(deleting it once it holds no path). While both exist, ingress-nginx keeps the older one's
settings for the canary Service (it builds one upstream per Service, from the oldest Ingress
naming it), so the rollout's paths always have a canary and never lose their weight.

As with the Istio router, calls are staged and written as one merge patch (with the
resourceVersion read) when the controller reads back or before a workload change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from meshshift.kube.patches import merge_diff, with_resource_version
from meshshift.kube.resources import (
    INGRESSES,
    JsonObject,
    KubeApi,
    KubeApiError,
    owner_reference,
    resource_version,
)
from meshshift.kube.rmw import read_modify_write
from meshshift.ports import AppliedRoutes
from meshshift.routers.kube_objects import (
    MANAGED_BY_LABEL,
    MANAGED_ROUTES_ANNOTATION,
    annotation_json,
)
from meshshift.routers.staged import ModelStagingRouter
from meshshift.spec.ingress_nginx import (
    DEFAULT_PREFIX,
    INGRESS_CLASS_ANNOTATION,
    UPSTREAM_ANNOTATIONS,
    header_name_problem,
    header_pattern,
    parse_canary,
    regex_problem,
    value_problem,
    weight_total_problem,
)
from meshshift.spec.model import MatchKind, MirrorMatch
from meshshift.spec.steps import MATCH_KINDS

log = structlog.get_logger(__name__)

ROLLOUT_ANNOTATION = "meshshift.io/rollout"  # the Deployment a canary Ingress belongs to
STABLE_INGRESS_ANNOTATION = "meshshift.io/stable-ingress"  # and the stable Ingress it copies
CANARY_SUFFIX = "-canary"
MAX_NAME = 253  # an Ingress name is a DNS subdomain
_MIGRATION_ATTEMPTS = 5


class IngressConfigError(RuntimeError):
    """The stable Ingress or the header routes cannot be expressed as ingress-nginx canary settings."""


def canary_ingress_name(deployment: str, stable: str) -> str:
    """`<deployment>-<stable>-canary`, cut to fit 253 characters as Argo Rollouts cuts it."""
    return f"{deployment}-{stable}"[: MAX_NAME - len(CANARY_SUFFIX)] + CANARY_SUFFIX


def shared_canary_ingress_name(stable: str) -> str:
    """The one canary Ingress per stable Ingress that earlier versions of meshshift wrote."""
    return stable + CANARY_SUFFIX


def is_shared_canary(ingress: Mapping[str, Any]) -> bool:
    """Written by an earlier meshshift: its label, but none of the per-rollout annotations."""
    meta = ingress.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return labels.get(MANAGED_BY_LABEL) == "meshshift" and STABLE_INGRESS_ANNOTATION not in annotations


@dataclass
class CanaryModel:
    """What the canary Ingress expresses: a weight and the active header routes (step name -> matches)."""

    weight: int = 0
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def from_ingress(cls, ingress: Mapping[str, Any] | None, prefix: str) -> CanaryModel:
        if ingress is None:
            return cls()
        annotations = (ingress.get("metadata") or {}).get("annotations") or {}
        headers = annotation_json(ingress.get("metadata"), MANAGED_ROUTES_ANNOTATION, "{}")
        return cls(
            weight=round(parse_canary(annotations, prefix).canary_percent),
            headers=headers if isinstance(headers, dict) else {},
        )

    def header_route(self) -> tuple[str, str, str] | None:
        """(header, value, pattern) for ingress-nginx, as CanaryConfig.header_route reads it back."""
        entries = [entry for matches in self.headers.values() for entry in matches]
        if not entries:
            return None
        names = sorted({entry["header"] for entry in entries}, key=str.lower)
        if len({name.lower() for name in names}) > 1:
            raise IngressConfigError(
                "ingress-nginx routes a canary on one header only; the active header routes use "
                + ", ".join(names)
            )
        problems = [header_name_problem(names[0])]
        for entry in entries:
            kind = _match_kind(entry["kind"])
            problems.append(
                regex_problem(entry["value"]) if kind == "regex" else value_problem(entry["value"], kind)
            )
        found = [problem for problem in problems if problem]
        if found:
            raise IngressConfigError("; ".join(found))
        if len(entries) == 1 and entries[0]["kind"] == "exact":
            return names[0], entries[0]["value"], ""
        pattern = header_pattern([(_match_kind(e["kind"]), e["value"]) for e in entries])
        problem = regex_problem(pattern)
        if problem:
            raise IngressConfigError(problem)
        return names[0], "", pattern

    def header_annotations(self, prefix: str) -> dict[str, str]:
        route = self.header_route()
        if route is None:
            return {}
        header, value, pattern = route
        annotations = {f"{prefix}/canary-by-header": header}
        if value:
            annotations[f"{prefix}/canary-by-header-value"] = value
        else:
            annotations[f"{prefix}/canary-by-header-pattern"] = pattern
        return annotations


def _match_kind(kind: str) -> MatchKind:
    for known in MATCH_KINDS:
        if known == kind:
            return known
    raise IngressConfigError(f"unknown header match kind {kind!r} in {MANAGED_ROUTES_ANNOTATION}")


def weight_annotation(weight: int, total: int | None) -> str:
    """canary-weight for `weight` percent, out of `total` (None: 100)."""
    return str(weight if total is None else round(weight * total / 100))


class NginxIngressRouter(ModelStagingRouter[CanaryModel]):
    name = "nginx"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        deployment: str,
        stable_ingress: str,
        service: str,
        owner: Mapping[str, Any],
        annotation_prefix: str = DEFAULT_PREFIX,
        weight_total: int | None = None,
    ) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self.deployment = deployment
        self.stable_ingress = stable_ingress
        self.canary_ingress = canary_ingress_name(deployment, stable_ingress)
        self.shared_canary_ingress = shared_canary_ingress_name(stable_ingress)
        self.service = service
        self.canary_service = f"{service}-canary"
        self.stable_services = {service, f"{service}-primary"}
        self.owner = owner
        self.prefix = annotation_prefix.rstrip("/")
        problem = None if weight_total is None else weight_total_problem(weight_total)
        if problem:
            raise IngressConfigError(f"canary-weight-total {weight_total}: {problem}")
        self.weight_total = weight_total
        self.writes = 0
        self._shared_checked = False  # the shared canary Ingress of earlier versions was looked at
        self.log = log.bind(ingress=f"{namespace}/{self.canary_ingress}")

    # --- the Router port: staged edits -------------------------------------------------------

    async def set_weight(self, canary_weight: int) -> None:
        self.stage(lambda model: setattr(model, "weight", canary_weight))

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        self.log.warning("ingress-nginx has no mirror routes; skipped", route=name)

    async def remove_mirror_route(self, name: str) -> None:
        return None

    async def remove_managed_routes(self) -> None:
        self.stage(lambda model: model.headers.clear())

    async def read_back(self) -> AppliedRoutes:
        """What ingress-nginx will do with the canary Ingress, parsed by its rules (not what was meant).

        The weight is the share of requests `canary-weight` sends (0 when the Ingress is missing
        or not a canary); the header routes are reported only when ingress-nginx reads the
        header, value or pattern meshshift means for them.
        """
        await self.commit()
        current = await self.api.get(INGRESSES, self.canary_ingress, self.namespace)
        if current is None:
            return AppliedRoutes(canary_weight=0)
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        config = parse_canary(annotations, self.prefix)
        for dropped in config.dropped:
            self.log.warning("ingress-nginx ignores a canary annotation", annotation=dropped)
        model = CanaryModel.from_ingress(current, self.prefix)
        try:
            meant = model.header_route()
        except IngressConfigError:
            meant = None
        routes = tuple(model.headers) if meant is not None and config.header_route == meant else ()
        return AppliedRoutes(round(config.canary_percent), routes)

    # --- writing -----------------------------------------------------------------------------

    async def commit(self) -> None:
        edits = self.staged_edits()
        if not edits:
            return
        stable = await self.api.get(INGRESSES, self.stable_ingress, self.namespace)
        if stable is None:
            raise IngressConfigError(
                f"Ingress {self.namespace}/{self.stable_ingress} (meshshift.io/nginx-ingress) does not exist"
            )
        shared = None if self._shared_checked else await self._shared_canary_with_our_paths()
        carried = None
        if shared is not None and not _has_backend(_without_backend(shared["spec"], self.canary_service)):
            # Only ours: its annotations were written for this rollout (each write of an earlier
            # version replaced the paths with the writer's own).
            carried = CanaryModel.from_ingress(shared, self.prefix)

        def build(current: JsonObject | None) -> JsonObject:
            if current is not None:
                self._check_ours(current)
            model = (
                CanaryModel.from_ingress(current, self.prefix)
                if current is not None
                else carried or CanaryModel()
            )
            for apply in edits:
                apply(model)
            desired = self._desired(stable, model)
            if current is None:
                return desired
            # Keep what others added (status, finalizers, extra labels and owners); own the rest.
            meta = current["metadata"]
            meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
            meta["annotations"] = desired["metadata"]["annotations"]
            meta["ownerReferences"] = self._owners(meta.get("ownerReferences") or [])
            current["spec"] = desired["spec"]
            return current

        _, written = await read_modify_write(self.api, INGRESSES, self.canary_ingress, self.namespace, build)
        if written:
            self.writes += 1
            self.log.info("canary ingress written")
        if shared is not None:
            await self._leave_shared_canary()
        self._shared_checked = True

    def _check_ours(self, current: Mapping[str, Any]) -> None:
        """Never take over an Ingress of that name that another rollout, or someone else, owns."""
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        owner = (annotations.get(ROLLOUT_ANNOTATION), annotations.get(STABLE_INGRESS_ANNOTATION))
        if owner != (self.deployment, self.stable_ingress):
            whose = (
                f"the canary of Deployment {owner[0]} behind Ingress {owner[1]}"
                if owner[1] is not None
                else "not a per-rollout canary Ingress of meshshift"
            )
            raise IngressConfigError(
                f"Ingress {self.namespace}/{self.canary_ingress} exists and is {whose}; "
                "meshshift will not overwrite it (rename or delete it)"
            )

    def _owners(self, existing: Sequence[Mapping[str, Any]]) -> list[JsonObject]:
        ours = owner_reference(self.owner)
        kept = [
            dict(ref)
            for ref in existing
            if not (ref.get("kind") == ours["kind"] and ref.get("name") == ours["name"])
        ]
        return [*kept, ours]

    async def _shared_canary_with_our_paths(self) -> JsonObject | None:
        """The shared `<ingress>-canary` of an earlier meshshift, if it still holds paths of ours."""
        shared = await self.api.get(INGRESSES, self.shared_canary_ingress, self.namespace)
        if shared is None or not is_shared_canary(shared):
            return None
        spec = shared.get("spec") or {}
        return shared if _without_backend(spec, self.canary_service) != spec else None

    async def _leave_shared_canary(self) -> None:
        """Move this rollout's paths out of the shared canary Ingress; delete it once it holds none.

        Its other paths stay for their own rollouts, which move them out the same way.
        """
        name = self.shared_canary_ingress
        for _attempt in range(_MIGRATION_ATTEMPTS):
            shared = await self._shared_canary_with_our_paths()
            if shared is None:
                return
            spec = shared.get("spec") or {}
            rest = _without_backend(spec, self.canary_service)
            version = resource_version(shared)
            try:
                if _has_backend(rest):
                    patch = with_resource_version(merge_diff({"spec": spec}, {"spec": rest}), version)
                    await self.api.merge_patch(INGRESSES, name, patch, self.namespace)
                else:
                    await self.api.delete(INGRESSES, name, self.namespace, resource_version=version)
            except KubeApiError as error:
                if not error.conflict:
                    raise
                continue  # written meanwhile: look again
            self.log.info(
                "moved this rollout's paths out of the shared canary ingress of an earlier meshshift",
                shared=name,
                deleted=not _has_backend(rest),
            )
            return
        raise IngressConfigError(
            f"Ingress {self.namespace}/{name} kept changing while meshshift moved this rollout out of it"
        )

    def _desired(self, stable: Mapping[str, Any], model: CanaryModel) -> JsonObject:
        meta = stable.get("metadata") or {}
        # Only what ingress-nginx reads on a canary Ingress (the rest comes from the stable one).
        copied = {INGRESS_CLASS_ANNOTATION, *(f"{self.prefix}/{name}" for name in UPSTREAM_ANNOTATIONS)}
        annotations = {key: value for key, value in (meta.get("annotations") or {}).items() if key in copied}
        annotations[f"{self.prefix}/canary"] = "true"
        annotations[f"{self.prefix}/canary-weight"] = weight_annotation(model.weight, self.weight_total)
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
                "annotations": {
                    **annotations,
                    ROLLOUT_ANNOTATION: self.deployment,
                    STABLE_INGRESS_ANNOTATION: self.stable_ingress,
                },
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


def _without_backend(spec: Mapping[str, Any], service: str) -> JsonObject:
    """`spec` without the paths (and default backend) whose backend is `service`."""
    result = copy.deepcopy(dict(spec))
    rules = []
    for rule in result.get("rules") or []:
        paths = [
            p for p in (rule.get("http") or {}).get("paths") or [] if _service_of(p.get("backend")) != service
        ]
        if paths:
            rules.append({**rule, "http": {**rule["http"], "paths": paths}})
    if "rules" in result:
        result["rules"] = rules
    if _service_of(result.get("defaultBackend")) == service:
        result.pop("defaultBackend")
    return result


def _has_backend(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("rules")) or spec.get("defaultBackend") is not None


def _service_of(backend: Mapping[str, Any] | None) -> str | None:
    service = (backend or {}).get("service")
    return service.get("name") if isinstance(service, dict) else None
