"""An Argo Rollout (`argoproj.io/v1alpha1`) as a Deployment with meshshift's annotations.

- The pod template (`spec.template`, or the Deployment `spec.workloadRef` names) becomes the
  Deployment meshshift rolls out; `replicas`, `selector`, `minReadySeconds` and
  `revisionHistoryLimit` go with it.
- `strategy.canary.steps` become `meshshift.io/steps` (the same syntax), `.analysis`
  `meshshift.io/analysis`, `strategy.blueGreen` `meshshift.io/blue-green`.
- `trafficRouting` becomes `meshshift.io/router` and its options: Istio's virtual service and
  routes, NGINX's stable Ingress, Traefik's weighted TraefikService, the Gateway API plugin's
  HTTPRoute; `maxTrafficWeight` becomes `meshshift.io/max-traffic-weight`. Those objects, when
  they are in the files, are pointed at the Services meshshift manages (`<name>-primary`,
  `<name>-canary`) instead of Argo's stable and canary Services (or Istio subsets).
- AnalysisTemplates stay as they are.

Everything else is a note (common.py) naming the field and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshshift.spec import annotations as keys
from meshshift.spec.argo import CANARY_FIELDS, NOT_ACTED_ON, ROLLOUT_SPEC_FIELDS, STRATEGIES
from meshshift.spec.bluegreen import ARGO_FIELDS as BLUE_GREEN_FIELDS
from meshshift.spec.bluegreen import NOT_ACTED_ON as BLUE_GREEN_NOT_ACTED_ON
from meshshift.spec.convert.common import (
    Notes,
    OutputDocument,
    Workspace,
    annotation_yaml,
    ordered_annotations,
)
from meshshift.spec.fields import at

DEPLOYMENT_FIELDS = ("replicas", "selector", "template", "minReadySeconds", "revisionHistoryLimit")
ARGO_ANNOTATION_PREFIXES = ("rollout.argoproj.io/", "notifications.argoproj.io/")
UNSUPPORTED_STEPS = {
    "experiment": "meshshift runs no experiments (ReplicaSets beside the rollout): the step is left out",
    "plugin": "meshshift runs no step plugins: the step is left out",
}
ROUTERS_WITHOUT_MESHSHIFT = ("alb", "ambassador", "apisix", "appMesh", "smi")
GATEWAY_API_PLUGIN = "argoproj-labs/gatewayAPI"


def convert_rollout(position: int, workspace: Workspace, *, default_router: str) -> None:
    """Replace the Rollout at `position` by its Deployment (see the module docstring)."""
    source = workspace.sources[position]
    notes = Notes(source)
    rollout: Mapping[str, Any] = source.data
    _unknown_fields(rollout, ("apiVersion", "kind", "metadata", "spec", "status"), "", notes)
    if rollout.get("apiVersion") is None:
        notes.assumed("apiVersion", "is missing: read as argoproj.io/v1alpha1")
    metadata: Mapping[str, Any] = _mapping(rollout.get("metadata"))
    spec: Mapping[str, Any] = _mapping(rollout.get("spec"))
    name = source.name
    annotations: dict[str, str] = {keys.ENABLED: "true"}
    strategy = _mapping(spec.get("strategy"))
    routing = _Routing(workspace, notes, service=name, namespace=source.namespace)
    if "blueGreen" in strategy:
        _blue_green(strategy["blueGreen"], annotations, notes)
        if "canary" in strategy:
            notes.not_converted(
                "spec.strategy.canary",
                "a Rollout has one strategy (Argo refuses both): blueGreen was converted",
            )
    elif "canary" in strategy:
        _canary(_mapping(strategy["canary"]), annotations, notes, routing)
    else:
        notes.not_converted("spec.strategy", "has neither canary nor blueGreen: the Deployment gets no steps")
    annotations.update(routing.annotations(default_router, blue_green="blueGreen" in strategy))
    _spec_fields(spec, annotations, notes)
    deployment_annotations = ordered_annotations({**_kept_annotations(metadata, notes), **annotations})
    comment = f"meshshift convert: Argo Rollout {name} ({source.file}, document {source.index})"
    reference = spec.get("workloadRef")
    if reference is not None:
        _workload_ref(
            workspace, position, _mapping(reference), spec, metadata, deployment_annotations, notes, comment
        )
    else:
        deployment = _deployment(metadata, spec, deployment_annotations)
        workspace.replace(position, OutputDocument(deployment, comment))
    workspace.notes.extend(notes.found)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _deployment(
    metadata: Mapping[str, Any], spec: Mapping[str, Any], annotations: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": metadata.get("name")}
    for key in ("namespace", "labels"):
        if metadata.get(key):
            meta[key] = metadata[key]
    meta["annotations"] = annotations
    body: dict[str, Any] = {key: spec[key] for key in DEPLOYMENT_FIELDS if spec.get(key) is not None}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}


def _kept_annotations(metadata: Mapping[str, Any], notes: Notes) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key, value in _mapping(metadata.get("annotations")).items():
        if str(key).startswith(ARGO_ANNOTATION_PREFIXES):
            reason = (
                "Argo Rollouts' notifications: meshshift notifies through meshshift.io/slack-webhook-url "
                "and meshshift.io/webhook-url"
                if str(key).startswith("notifications.")
                else "written by Argo Rollouts' controller"
            )
            notes.not_converted(at("metadata.annotations", str(key)), reason)
            continue
        kept[str(key)] = value
    return kept


def _workload_ref(
    workspace: Workspace,
    position: int,
    reference: Mapping[str, Any],
    spec: Mapping[str, Any],
    metadata: Mapping[str, Any],
    annotations: dict[str, str],
    notes: Notes,
    comment: str,
) -> None:
    kind, target = reference.get("kind"), str(reference.get("name", ""))
    if kind != "Deployment":
        notes.not_converted(
            "spec.workloadRef.kind",
            f"is {kind}: meshshift rolls out Deployments; the annotations are written on a Deployment "
            f"{target} instead",
        )
    if reference.get("scaleDown") not in (None, "never"):
        notes.changed(
            "spec.workloadRef.scaleDown",
            "the Deployment itself is meshshift's canary: meshshift scales it (up for a new revision, "
            "to 0 once promoted); its copy <name>-primary serves the stable",
        )
    found = workspace.find("Deployment", "apps", target, metadata.get("namespace"))
    if found is None:
        notes.assumed(
            "spec.workloadRef",
            f"the Deployment {target} is not in the files: the annotations are written on a Deployment "
            f"{target} that holds only them; apply them to yours (kubectl annotate, or kubectl patch "
            "--type merge with this document)",
        )
        meta = {"name": target, **({"namespace": metadata["namespace"]} if metadata.get("namespace") else {})}
        patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "annotations": annotations},
        }
        workspace.replace(position, OutputDocument(patch, comment))
        return
    deployment = workspace.data(found)
    meta = deployment.setdefault("metadata", {})
    meta["annotations"] = ordered_annotations({**(meta.get("annotations") or {}), **annotations})
    workspace.annotated[found] = f"Rollout {metadata.get('name')}"
    if spec.get("replicas") is not None:
        deployment.setdefault("spec", {})["replicas"] = spec["replicas"]
        notes.changed(
            "spec.replicas",
            f"set on the Deployment {target} (Argo scales a referenced Deployment to 0 "
            "and runs the Rollout's "
            "replicas; meshshift runs the Deployment's)",
        )
    workspace.replace(position)  # the Rollout goes: its Deployment, annotated, takes its place


def _unknown_fields(data: Mapping[str, Any], known: tuple[str, ...], path: str, notes: Notes) -> None:
    for key in data:
        if key not in known:
            notes.not_converted(at(path, str(key)), "is not a field Argo Rollouts defines here (a typo?)")


def _spec_fields(spec: Mapping[str, Any], annotations: dict[str, str], notes: Notes) -> None:
    _unknown_fields(spec, ROLLOUT_SPEC_FIELDS, "spec", notes)
    _unknown_fields(_mapping(spec.get("strategy")), STRATEGIES, "spec.strategy", notes)
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        annotations[keys.PROGRESS_DEADLINE] = f"{deadline}s"
    if spec.get("progressDeadlineAbort") is not True:
        notes.changed(
            "spec.progressDeadlineAbort",
            f"meshshift aborts a rollout whose canary is not ready within the progress deadline "
            f"({deadline or 600}s), as Argo does with progressDeadlineAbort: true; this Rollout only "
            "reported it",
        )
    if spec.get("paused"):
        notes.not_converted("spec.paused", NOT_ACTED_ON["spec.paused"])
    for field in ("restartAt", "rollbackWindow"):
        if spec.get(field) is not None:
            notes.not_converted(at("spec", field), NOT_ACTED_ON[f"spec.{field}"])
    if spec.get("analysis") is not None:
        notes.not_converted(
            "spec.analysis",
            "Argo's AnalysisRun history limits: meshshift keeps the runs of the current rollout in its "
            "state, and measurementRetention measurements per metric",
        )


# --- canary -------------------------------------------------------------------------------------


def _canary(canary: Mapping[str, Any], annotations: dict[str, str], notes: Notes, routing: _Routing) -> None:
    base = "spec.strategy.canary"
    _unknown_fields(canary, CANARY_FIELDS, base, notes)
    steps = []
    for index, step in enumerate(canary.get("steps") or []):
        kind = next(iter(step), None) if isinstance(step, Mapping) and step else None
        if kind in UNSUPPORTED_STEPS:
            notes.not_converted(at(at(at(base, "steps"), index), str(kind)), UNSUPPORTED_STEPS[str(kind)])
            continue
        steps.append(step)
    if canary.get("steps") and not steps:
        notes.changed(
            at(base, "steps"),
            "no step is left: a new revision would be promoted at once; write the steps meshshift "
            "should run instead",
        )
    if steps:
        annotations[keys.STEPS] = annotation_yaml(steps)
    if canary.get("analysis") is not None:
        annotations[keys.ANALYSIS] = annotation_yaml(canary["analysis"])
    for field, key in (("canaryMetadata", keys.CANARY_METADATA), ("stableMetadata", keys.STABLE_METADATA)):
        if canary.get(field) is not None:
            annotations[key] = annotation_yaml(canary[field])
    for field, reason in NOT_ACTED_ON.items():
        if field.startswith("spec.") or canary.get(field) is None:
            continue
        if field in ("canaryService", "stableService"):
            routing.note_service(field, str(canary[field]))
            continue
        if field in ("scaleDownDelaySeconds", "scaleDownDelayRevisionLimit"):
            notes.changed(at(base, field), f"not needed: {reason}")
            continue
        notes.not_converted(at(base, field), reason)
    delay = canary.get("abortScaleDownDelaySeconds")
    if delay is not None and delay != 30:
        notes.not_converted(
            at(base, "abortScaleDownDelaySeconds"),
            "meshshift's delay is the daemon's (MESHSHIFT_ABORT_SCALE_DOWN_DELAY, default 30 s), "
            "not per rollout",
        )
    routing.stable_service = canary.get("stableService")
    routing.canary_service = canary.get("canaryService")
    if canary.get("trafficRouting") is not None:
        routing.read(_mapping(canary["trafficRouting"]), at(base, "trafficRouting"))


# --- blue-green ---------------------------------------------------------------------------------


def _blue_green(value: object, annotations: dict[str, str], notes: Notes) -> None:
    base = "spec.strategy.blueGreen"
    block = dict(_mapping(value))
    _unknown_fields(block, BLUE_GREEN_FIELDS, base, notes)
    for key in [k for k in block if k not in BLUE_GREEN_FIELDS]:
        del block[key]
    for field, reason in BLUE_GREEN_NOT_ACTED_ON.items():
        if block.pop(field, None) is not None:
            notes.not_converted(at(base, field), reason)
    annotations[keys.BLUE_GREEN] = annotation_yaml(block)


# --- traffic routing ------------------------------------------------------------------------------


class _Routing:
    """What `trafficRouting` says, as router annotations; the routing objects in the files rewritten
    to the Services meshshift manages."""

    def __init__(self, workspace: Workspace, notes: Notes, *, service: str, namespace: str | None) -> None:
        self.workspace = workspace
        self.notes = notes
        self.service = service
        self.namespace = namespace
        self.routers: list[str] = []
        self.values: dict[str, str] = {}
        self.stable_service: Any = None
        self.canary_service: Any = None
        self.routing_path = "spec.strategy.canary.trafficRouting"
        self.read_routing = False
        self._services_noted: list[tuple[str, str]] = []

    @property
    def primary(self) -> str:
        return f"{self.service}-primary"

    @property
    def canary(self) -> str:
        return f"{self.service}-canary"

    def note_service(self, field: str, value: str) -> None:
        self._services_noted.append((field, value))

    def annotations(self, default_router: str, *, blue_green: bool) -> dict[str, str]:
        if not self.routers:
            self.routers.append(default_router)
            if blue_green:
                reason = (
                    "Argo switches the activeService's selector; meshshift switches traffic with a router: "
                    f"wrote meshshift.io/router: {default_router} (choose another with --router)"
                )
                path = "spec.strategy.blueGreen"
            elif self.read_routing:
                reason = (
                    "meshshift drives none of these routers: "
                    f"wrote meshshift.io/router: {default_router} (choose another with --router)"
                )
                path = self.routing_path
            else:
                reason = (
                    "without trafficRouting Argo splits traffic by replica counts; meshshift needs a router: "
                    f"wrote meshshift.io/router: {default_router} (choose another with --router)"
                )
                path = self.routing_path
            self.notes.assumed(path, reason)
        for field, value in self._services_noted:
            target = self.primary if field == "stableService" else self.canary
            if value == target:
                self.notes.changed(
                    at("spec.strategy.canary", field),
                    f"meshshift manages the Service {value} itself (it creates it, or points it at the pods)",
                )
                continue
            self.notes.changed(
                at("spec.strategy.canary", field),
                f"meshshift routes to the Service {target} it manages instead of {value}",
            )
        return {keys.ROUTER: ",".join(self.routers), **self.values}

    def read(self, routing: Mapping[str, Any], path: str) -> None:
        self.routing_path = path
        self.read_routing = True
        readers: dict[str, Callable[[Any, str], None]] = {
            "istio": self._istio,
            "nginx": self._nginx,
            "traefik": self._traefik,
            "plugins": self._plugins,
        }
        for key, value in routing.items():
            where = at(path, str(key))
            if key in readers:
                readers[key](value, where)
            elif key == "maxTrafficWeight":
                self.values[keys.MAX_TRAFFIC_WEIGHT] = str(value)
            elif key == "managedRoutes":
                self.notes.changed(
                    where,
                    "not needed: meshshift places each header and mirror route right before the route "
                    "it shadows, so their order comes from the routes, not from a list",
                )
            elif key in ROUTERS_WITHOUT_MESHSHIFT:
                self.notes.not_converted(
                    where, f"meshshift has no {key} router (it drives istio, nginx, traefik and gateway-api)"
                )
            else:
                self.notes.not_converted(where, f"{key} is not a traffic router meshshift knows")

    # Istio

    def _istio(self, value: Any, path: str) -> None:
        istio = _mapping(value)
        self.routers.append("istio")
        services = list(istio.get("virtualServices") or [])
        if istio.get("virtualService") is not None:
            services.insert(0, istio["virtualService"])
        rule = _mapping(istio.get("destinationRule"))
        for index, entry in enumerate(services):
            where = (
                at(path, "virtualService")
                if "virtualService" in istio and index == 0
                else at(at(path, "virtualServices"), index - (1 if "virtualService" in istio else 0))
            )
            entry = _mapping(entry)
            if index > 0:
                self.notes.not_converted(where, "meshshift drives one VirtualService per rollout")
                continue
            name = str(entry.get("name", ""))
            name, _, namespace = name.partition(".")
            self.values[keys.ISTIO_VIRTUAL_SERVICE] = name
            routes = [str(r) for r in entry.get("routes") or []]
            if routes:
                self.values[keys.ISTIO_ROUTES] = ",".join(routes)
            for field in ("tlsRoutes", "tcpRoutes"):
                if entry.get(field):
                    self.notes.not_converted(at(where, field), "meshshift shifts HTTP routes only")
            self._rewrite_virtual_service(name, namespace or self.namespace, routes, rule, where)
        if rule:
            self.notes.changed(
                at(path, "destinationRule"),
                f"meshshift splits by host, not by subset: the routes send to the Services {self.primary} "
                f"and {self.canary}; the DestinationRule {rule.get('name')} is no longer used",
            )

    def _rewrite_virtual_service(
        self, name: str, namespace: str | None, routes: list[str], rule: Mapping[str, Any], where: str
    ) -> None:
        found = self.workspace.find("VirtualService", "networking.istio.io", name, namespace)
        if found is None:
            self.notes.not_converted(
                where,
                f"the VirtualService {name} is not in the files: point the stable and canary destinations "
                f"of its managed routes at the Services {self.primary} and {self.canary}",
            )
            return
        document = self.workspace.data(found)
        stable_subset, canary_subset = rule.get("stableSubsetName"), rule.get("canarySubsetName")
        changed = 0
        for route in _mapping(document.get("spec")).get("http") or []:
            if not isinstance(route, dict) or (routes and route.get("name") not in routes):
                continue
            for entry in route.get("route") or []:
                destination = entry.get("destination") if isinstance(entry, dict) else None
                if not isinstance(destination, dict):
                    continue
                host = str(destination.get("host", "")).split(".")[0]
                subset = destination.get("subset")
                target = None
                if (rule and subset == stable_subset) or (not rule and host == self.stable_service):
                    target = self.primary
                elif (rule and subset == canary_subset) or (not rule and host == self.canary_service):
                    target = self.canary
                if target is not None:
                    destination["host"] = target
                    destination.pop("subset", None)
                    changed += 1
        if changed:
            self.notes.changed(
                where,
                f"the VirtualService {name} (in the files) now routes to {self.primary} and {self.canary}: "
                f"{changed} destinations rewritten",
            )

    # NGINX

    def _nginx(self, value: Any, path: str) -> None:
        nginx = _mapping(value)
        self.routers.append("nginx")
        ingresses = [nginx["stableIngress"]] if nginx.get("stableIngress") else []
        ingresses.extend(nginx.get("stableIngresses") or [])
        if ingresses:
            self.values[keys.NGINX_INGRESS] = str(ingresses[0])
            self._rewrite_ingress(str(ingresses[0]), at(path, "stableIngress"))
        for extra in ingresses[1:]:
            self.notes.not_converted(
                at(path, "stableIngresses"),
                f"meshshift drives one stable Ingress per rollout: {extra} is left out",
            )
        prefix = nginx.get("annotationPrefix")
        if prefix not in (None, "nginx.ingress.kubernetes.io"):
            self.notes.not_converted(
                at(path, "annotationPrefix"),
                "meshshift's prefix is the daemon's (MESHSHIFT_NGINX_ANNOTATION_PREFIX), not per rollout",
            )
        for field in ("additionalIngressAnnotations", "canaryIngressAnnotations"):
            if nginx.get(field):
                self.notes.not_converted(
                    at(path, field),
                    "the canary Ingress carries only the annotations ingress-nginx reads on one (README)",
                )

    def _rewrite_ingress(self, name: str, where: str) -> None:
        found = self.workspace.find("Ingress", "networking.k8s.io", name, self.namespace)
        if found is None:
            return
        document = self.workspace.data(found)
        spec = _mapping(document.get("spec"))
        backends = [_mapping(spec.get("defaultBackend")).get("service")]
        for rule in spec.get("rules") or []:
            for entry in _mapping(_mapping(rule).get("http")).get("paths") or []:
                backends.append(_mapping(_mapping(entry).get("backend")).get("service"))
        changed = 0
        for backend in backends:
            if (
                isinstance(backend, dict)
                and self.stable_service
                and backend.get("name") == self.stable_service
            ):
                backend["name"] = self.service
                changed += 1
        if changed:
            self.notes.changed(
                where,
                f"the Ingress {name} (in the files) now sends to the Service {self.service}, which meshshift "
                f"points at the stable pods, instead of {self.stable_service}",
            )

    # Traefik

    def _traefik(self, value: Any, path: str) -> None:
        traefik = _mapping(value)
        self.routers.append("traefik")
        name = traefik.get("weightedTraefikServiceName")
        if not name:
            return
        self.values[keys.TRAEFIK_SERVICE] = str(name)
        found = self.workspace.find("TraefikService", "traefik.io", str(name), self.namespace)
        if found is None:
            found = self.workspace.find("TraefikService", "traefik.containo.us", str(name), self.namespace)
        if found is None:
            return
        document = self.workspace.data(found)
        changed = 0
        for entry in _mapping(_mapping(document.get("spec")).get("weighted")).get("services") or []:
            if isinstance(entry, dict):
                renamed = self._renamed(entry.get("name"))
                if renamed:
                    entry["name"] = renamed
                    changed += 1
        if changed:
            self.notes.changed(
                at(path, "weightedTraefikServiceName"),
                f"the TraefikService {name} (in the files) now weighs {self.primary} and {self.canary}",
            )

    # Gateway API (Argo's plugin)

    def _plugins(self, value: Any, path: str) -> None:
        for plugin, config in _mapping(value).items():
            where = at(path, str(plugin))
            if plugin != GATEWAY_API_PLUGIN:
                self.notes.not_converted(where, "meshshift runs no traffic router plugins")
                continue
            self.routers.append("gateway-api")
            options = _mapping(config)
            routes = [options["httpRoute"]] if options.get("httpRoute") else []
            routes.extend(_mapping(r).get("name") for r in options.get("httpRoutes") or [])
            names = [str(r) for r in routes if r]
            if names:
                self.values[keys.HTTP_ROUTE] = names[0]
                self._rewrite_http_route(
                    names[0], str(options.get("namespace") or "") or self.namespace, where
                )
            for extra in names[1:]:
                self.notes.not_converted(
                    where, f"meshshift drives one HTTPRoute per rollout: {extra} is left out"
                )
            for field in ("grpcRoute", "tcpRoute", "tlsRoute", "grpcRoutes", "tcpRoutes", "tlsRoutes"):
                if options.get(field):
                    self.notes.not_converted(at(where, field), "meshshift shifts HTTPRoutes only")

    def _rewrite_http_route(self, name: str, namespace: str | None, where: str) -> None:
        found = self.workspace.find("HTTPRoute", "gateway.networking.k8s.io", name, namespace)
        if found is None:
            return
        document = self.workspace.data(found)
        changed = 0
        for rule in _mapping(document.get("spec")).get("rules") or []:
            for ref in _mapping(rule).get("backendRefs") or []:
                if isinstance(ref, dict):
                    renamed = self._renamed(ref.get("name"))
                    if renamed:
                        ref["name"] = renamed
                        changed += 1
        if changed:
            self.notes.changed(
                where, f"the HTTPRoute {name} (in the files) now sends to {self.primary} and {self.canary}"
            )

    def _renamed(self, service: object) -> str | None:
        if service is not None and service == self.stable_service:
            return self.primary
        if service is not None and service == self.canary_service:
            return self.canary
        return None
