"""The Workloads port in Kubernetes: Flagger's primary/canary model over plain Deployments.

The user's Deployment `<name>` is the canary: its pod template is what the user asks for.
meshshift keeps `<name>-primary`, a copy of that template with every selector label
value suffixed `-primary`, and three Services: `<svc>-primary` and `<svc>-canary` (the
hosts the routers split traffic between) and the apex `<svc>`, which selects the primary
pods (created when missing; an existing one is re-pointed at the primary, its original
selector kept in an annotation). Everything meshshift creates is owned by the user's
Deployment, so deleting it collects them.

A revision is a stable hash of the user's pod template. The primary's pod template
carries it as the label `meshshift.io/revision`, which is how meshshift tells which
revision the stable runs, and what analysis queries select stable pods on
(`baseline-hash`); canary pods are the pods of `<name>` (see the README notes).

A blue-green rollout may name a preview Service (`previewService`): it selects the pods of
`<name>` while they run (a new revision is up), and the primary's pods otherwise, so it always
reaches the newest revision, as Argo's preview Service does. It is re-pointed before `<name>` is
scaled to zero, and created when missing (owned, with the apex's ports).

Pod metadata (Argo's canaryMetadata / stableMetadata, blue-green's previewMetadata /
activeMetadata): the stable's labels and annotations are written into the primary's pod
template with it; the new revision's go into `<name>`'s pod template when it is scaled up
(it has no pods then, so nothing restarts) and come out again once it is scaled to zero. What
meshshift added is recorded in the template's annotation `meshshift.io/pod-metadata`, and the
revision is the hash of the template without it (`user_template`): adding them is no new revision.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from meshshift.kube.patches import with_resource_version
from meshshift.kube.resources import (
    DEPLOYMENTS,
    SERVICES,
    JsonObject,
    KubeApi,
    KubeApiError,
    ResourceType,
    json_copy,
    owner_reference,
    resource_version,
)
from meshshift.kube.rmw import KnownObjects, read_modify_write
from meshshift.ports import WorkloadStatus
from meshshift.spec.model import CanaryScale, PodMetadata, RolloutSpec

log = structlog.get_logger(__name__)

REVISION_LABEL = "meshshift.io/revision"
POD_METADATA_ANNOTATION = "meshshift.io/pod-metadata"  # on a pod template: the metadata meshshift added
PRIMARY_OF_LABEL = "meshshift.io/primary-of"
ORIGINAL_SELECTOR_ANNOTATION = "meshshift.io/original-selector"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "meshshift"
PRIMARY_SUFFIX = "-primary"
CANARY_SUFFIX = "-canary"
# Metadata never copied from the user's Deployment to the primary.
_NOT_COPIED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/")
_COPIED_SPEC_FIELDS = ("minReadySeconds", "progressDeadlineSeconds", "revisionHistoryLimit", "strategy")
_TEMPLATES_KEPT = 8


class WorkloadError(RuntimeError):
    """The workloads cannot be brought where the rollout needs them (a clear reason inside)."""


def template_revision(template: Mapping[str, Any]) -> str:
    """A stable hash of a pod template: equal templates, equal revisions."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _template_version(deployment: Mapping[str, Any]) -> tuple[str, str] | None:
    """What changes whenever the pod template may have: the spec's generation (status updates
    leave it alone), else the resourceVersion; None if neither is known."""
    meta = deployment.get("metadata") or {}
    generation = meta.get("generation")
    if generation is not None and meta.get("uid"):
        return str(meta["uid"]), str(generation)
    version = meta.get("resourceVersion")
    return ("resourceVersion", str(version)) if version else None


def _records_pod_metadata(template: Mapping[str, Any]) -> bool:
    """Whether with_pod_metadata added something to `template` (its record is there)."""
    meta = template.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return isinstance(annotations, dict) and isinstance(annotations.get(POD_METADATA_ANNOTATION), str)


def user_template_view(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """user_template, without a copy when meshshift added nothing: only to be read."""
    return user_template(template) if _records_pod_metadata(template) else template


def user_template(template: Mapping[str, Any]) -> JsonObject:
    """A pod template without the labels and annotations meshshift added to it (with_pod_metadata)."""
    result = json_copy(dict(template))
    meta = result.get("metadata")
    if not isinstance(meta, dict):
        return result
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or not isinstance(annotations.get(POD_METADATA_ANNOTATION), str):
        return result
    text = annotations[POD_METADATA_ANNOTATION]
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    had = set(record.get("had") or ())
    annotations.pop(POD_METADATA_ANNOTATION)
    for kind in ("labels", "annotations"):
        current = meta.get(kind)
        if not isinstance(current, dict):
            continue
        added = record.get(kind) or {}
        for key, entry in added.items() if isinstance(added, dict) else ():
            if not isinstance(entry, list) or len(entry) != 2 or current.get(key) != entry[0]:
                continue  # changed since by someone else: theirs now
            if entry[1] is None:
                current.pop(key, None)
            else:
                current[key] = entry[1]
        if not current and kind not in had:
            del meta[kind]
    return result


def with_pod_metadata(template: Mapping[str, Any], metadata: PodMetadata) -> JsonObject:
    """`template` (as the user wrote it) carrying `metadata`, and the record of what was added.

    With nothing to add and nothing added before, that is `template` itself, not a copy.
    """
    if not metadata and not _records_pod_metadata(template):
        return template if isinstance(template, dict) else dict(template)
    result = user_template(template)
    if not metadata:
        return result
    meta = result.setdefault("metadata", {})
    record: dict[str, Any] = {"had": sorted(k for k in ("labels", "annotations") if k in meta)}
    for kind, values in (("labels", metadata.labels), ("annotations", metadata.annotations)):
        current = dict(meta.get(kind) or {})
        record[kind] = {key: [value, current.get(key)] for key, value in values.items()}
        current.update(values)
        if values:
            meta[kind] = current
    annotations = dict(meta.get("annotations") or {})
    annotations[POD_METADATA_ANNOTATION] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    meta["annotations"] = annotations
    return result


def primary_name(deployment: str) -> str:
    return deployment + PRIMARY_SUFFIX


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """kubectl's `rollout status` rule: the controller saw the spec, every replica is new and available."""
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    wanted = spec_replicas(deployment)
    updated = status.get("updatedReplicas") or 0
    return (
        updated >= wanted
        and (status.get("replicas") or 0) <= updated
        and (status.get("availableReplicas") or 0) >= wanted
    )


def spec_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def selector_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The Deployment's matchLabels; meshshift needs them (it rewrites them for the primary)."""
    selector = (deployment.get("spec") or {}).get("selector") or {}
    name = (deployment.get("metadata") or {}).get("name")
    if selector.get("matchExpressions"):
        raise WorkloadError(
            f"Deployment {name}: spec.selector.matchExpressions is not supported; "
            "use matchLabels so the primary's selector can be told apart"
        )
    labels = dict(selector.get("matchLabels") or {})
    if not labels:
        raise WorkloadError(f"Deployment {name}: spec.selector.matchLabels is empty")
    return labels


def primary_selector(labels: Mapping[str, str]) -> dict[str, str]:
    return {key: value + PRIMARY_SUFFIX for key, value in labels.items()}


def _images(deployment: Mapping[str, Any] | None) -> tuple[str, ...]:
    if deployment is None:
        return ()
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or []
    return tuple(str(c.get("image", "")) for c in containers)


def deployment_replicas(deployment: Mapping[str, Any]) -> dict[str, int]:
    """One Deployment's replica counts, as Argo's rollout_info_replicas_* read a Rollout's."""
    available = _status_count(deployment, "availableReplicas")
    return {
        "desired": spec_replicas(deployment),
        "updated": _status_count(deployment, "updatedReplicas"),
        "available": available,
        "unavailable": max(0, _status_count(deployment, "replicas") - available),
    }


def _status_count(deployment: Mapping[str, Any] | None, key: str) -> int:
    if deployment is None:
        return 0
    return int((deployment.get("status") or {}).get(key) or 0)


def _copied_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in annotations.items()
        if not key.startswith("meshshift.io/") and not key.startswith(_NOT_COPIED_ANNOTATIONS)
    }


def service_ports_from(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An existing Service's ports, minus what is specific to that Service (nodePort)."""
    ports = []
    for port in (service.get("spec") or {}).get("ports") or []:
        ports.append({k: v for k, v in port.items() if k != "nodePort"})
    return ports


def container_ports(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = []
    seen: set[int] = set()
    for container in (template.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if number is None or number in seen:
                continue
            seen.add(number)
            entry: dict[str, Any] = {
                "port": number,
                "targetPort": number,
                "protocol": port.get("protocol", "TCP"),
            }
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
    return ports


DeploymentLookup = Callable[[str], JsonObject | None]  # a Deployment of the namespace by name, or None
VersionSeen = Callable[[str, str | None], bool]  # (name, resourceVersion): did the informer see it?
OWN_VERSIONS_KEPT = 4


class InformedDeployments(KnownObjects):
    """Deployments as the informer's cache has them, or as this daemon last wrote them.

    A write's answer is newer than the cache until the watch delivers it: the object written is
    used until the informer has seen its version (then the cache holds it or something newer,
    even when the watch brought the newer one before the write's answer came back), or the cache
    shows a version that is neither the one it showed when the write went out nor an earlier
    write of ours (a list after a 410 skips versions: whatever it brings is newer). Writes carry
    the resourceVersion they start from, so nobody wrote in between.
    """

    def __init__(self, lookup: DeploymentLookup, seen: VersionSeen) -> None:
        super().__init__()
        self.lookup = lookup
        self.seen = seen
        self._cache_version: dict[str, str | None] = {}  # name -> the cache's version at our write
        self._own: dict[str, deque[str]] = {}  # name -> versions this daemon wrote or read, oldest first

    def get(self, rt: ResourceType, name: str, namespace: str | None) -> JsonObject | None:
        cached = self.lookup(name)
        mine = super().get(rt, name, namespace)
        if mine is None or self.seen(name, resource_version(mine)):
            return cached
        version = resource_version(cached)
        if version == self._cache_version.get(name) or version in self._own.get(name, ()):
            return mine
        return cached

    def put(self, rt: ResourceType, name: str, namespace: str | None, obj: JsonObject | None) -> None:
        super().put(rt, name, namespace, obj)
        if obj is None:
            self._cache_version.pop(name, None)
            self._own.pop(name, None)
            return
        self._cache_version[name] = resource_version(self.lookup(name))
        version = resource_version(obj)
        if version is not None:
            self._own.setdefault(name, deque(maxlen=OWN_VERSIONS_KEPT)).append(version)


class KubeWorkloads:
    """One annotated Deployment and everything meshshift keeps beside it.

    With `deployments` (the informer's cache), the Deployments are read from it, not from the
    API server; the Services meshshift keeps are read once, then known from its own writes (a
    409 or a 404 reads them again).
    """

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        deployment: str,
        service: str,
        before_write: Callable[[], Awaitable[None]] | None = None,
        deployments: DeploymentLookup | None = None,
        deployment_seen: VersionSeen | None = None,
    ) -> None:
        self.api = api
        if (deployments is None) != (deployment_seen is None):
            raise ValueError("deployments and deployment_seen come together (both from the informer)")
        self.known_deployments = (
            InformedDeployments(deployments, deployment_seen)
            if deployments is not None and deployment_seen is not None
            else None
        )
        self.known_services = KnownObjects()
        # (_template_version of the canary, its revision)
        self._revision: tuple[tuple[str, str] | None, str] | None = None
        # The routers stage their edits; the engine orders traffic changes before the
        # workload changes that depend on them (route away, then scale down), so staged
        # traffic edits are written before any workload write.
        self.before_write = before_write
        self.namespace = namespace
        self.name = deployment
        self.service = service
        self.primary = primary_name(deployment)
        self.preview_service: str | None = None  # blue-green's previewService (see follow())
        self.new_pods_metadata = PodMetadata()  # on `<name>`'s pods while a new revision runs
        self.stable_pods_metadata = PodMetadata()  # on the primary's pods
        # Pod templates seen per revision, so a revision can still be promoted after the
        # user's Deployment moved on (the engine finishes a promotion before a new rollout).
        self._templates: dict[str, JsonObject] = {}
        self.log = log.bind(rollout=f"{namespace}/{deployment}")

    def follow(self, spec: RolloutSpec) -> None:
        """What the rollout's spec says about the workloads: the preview Service."""
        blue_green = spec.blue_green
        self.preview_service = blue_green.preview_service if blue_green is not None else None
        self.new_pods_metadata = spec.new_pods_metadata
        self.stable_pods_metadata = spec.stable_pods_metadata

    # --- the port -------------------------------------------------------------------------

    async def observe(self) -> WorkloadStatus:
        canary = await self._canary()
        # The user's template: the pod metadata meshshift added is no new revision.
        revision = self._revision_of(canary)
        primary = await self._deployment(self.primary)
        stable_revision = None
        if primary is not None:
            labels = ((primary.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
                "labels"
            ) or {}
            stable_revision = labels.get(REVISION_LABEL)
        return WorkloadStatus(
            revision=revision,
            stable_revision=stable_revision,
            stable_ready=primary is not None and rolled_out(primary),
            canary_ready=spec_replicas(canary) > 0 and rolled_out(canary),
            images={"stable": _images(primary), "canary": _images(canary)},
            replicas={
                "desired": spec_replicas(primary) if primary is not None else spec_replicas(canary),
                "updated": _status_count(primary, "updatedReplicas"),
                "available": _status_count(primary, "availableReplicas")
                + _status_count(canary, "availableReplicas"),
                "unavailable": _status_count(primary, "unavailableReplicas")
                + _status_count(canary, "unavailableReplicas"),
            },
        )

    async def promote(self, revision: str) -> None:
        """Make the primary run `revision`'s pod template; make sure the Services exist."""
        await self._flush_traffic()
        canary = await self._canary()
        template = self._template_for(canary, revision)

        def build(current: JsonObject | None) -> JsonObject:
            return self._desired_primary(canary, json_copy(dict(template)), revision, current)

        _, written = await read_modify_write(
            self.api, DEPLOYMENTS, self.primary, self.namespace, build, known=self.known_deployments
        )
        if written:
            self.log.info("primary updated", revision=revision)
        await self._ensure_services(canary)

    async def scale_canary(self, scale: CanaryScale, traffic_weight: int) -> None:
        await self._flush_traffic()
        canary = await self._canary()
        primary = await self._deployment(self.primary)
        base = spec_replicas(primary) if primary is not None else max(1, spec_replicas(canary))
        replicas = scale.replicas_for(base, traffic_weight)
        if replicas == 0:
            if primary is None or not rolled_out(primary):
                # The user's Deployment is all that serves until the primary is up (a resync
                # during initialization asks for zero before the primary exists). The engine
                # asks again once the primary is ready.
                self.log.info("canary kept: the primary is not ready yet", replicas=spec_replicas(canary))
                return
            # The apex and the preview must not select the pods about to go away.
            await self._point_apex_at_primary(canary)
            await self._point_preview(canary, at_canary=False)
        else:
            await self._point_preview(canary, at_canary=True)
            canary = await self._label_new_pods(self.new_pods_metadata) or canary  # before the pods exist
        if spec_replicas(canary) != replicas:
            await self._scale(canary, replicas)
            self.log.info("canary scaled", replicas=replicas)
        if replicas == 0:
            await self._label_new_pods(PodMetadata())  # its pods are gone: the template is the user's again

    async def _label_new_pods(self, metadata: PodMetadata) -> JsonObject | None:
        """`<name>`'s pod template with `metadata` added (none: with what meshshift added removed);
        returns the Deployment as stored."""

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                return None
            spec = current.setdefault("spec", {})
            template = spec.get("template") or {}
            desired = with_pod_metadata(template, metadata)
            if desired == template:
                return None
            spec["template"] = desired
            return current

        stored, written = await read_modify_write(
            self.api, DEPLOYMENTS, self.name, self.namespace, build, known=self.known_deployments
        )
        if written:
            self.log.info("canary pod metadata written", labels=dict(metadata.labels))
        return stored

    async def _scale(self, canary: JsonObject, replicas: int) -> None:
        """Scale the user's Deployment, from the version read (a 409: read it again, once)."""
        for attempt in range(2):
            patch = with_resource_version({"spec": {"replicas": replicas}}, resource_version(canary))
            try:
                scale = await self.api.merge_patch(
                    DEPLOYMENTS, self.name, patch, self.namespace, subresource="scale"
                )
                self._scaled(canary, replicas, resource_version(scale))
                return
            except KubeApiError as error:
                if not error.conflict or attempt:
                    raise
            fresh = await self.api.get(DEPLOYMENTS, self.name, self.namespace)
            if fresh is None:
                raise WorkloadError(f"Deployment {self.namespace}/{self.name} is gone")
            if self.known_deployments is not None:
                self.known_deployments.put(DEPLOYMENTS, self.name, self.namespace, fresh)
            if spec_replicas(fresh) == replicas:
                return
            canary = fresh

    def _scaled(self, canary: JsonObject, replicas: int, version: str | None) -> None:
        """Know the Deployment as scaled: the Scale answer is not the Deployment, but its version is.

        Without this, the cache shows the old replica count until the watch brings the new one,
        and a scale back to that count in between looks done already (it is not).
        """
        if self.known_deployments is None:
            return
        written = json_copy(canary)
        written.setdefault("spec", {})["replicas"] = replicas
        written.setdefault("metadata", {})["resourceVersion"] = version  # the API server sends it
        self.known_deployments.put(DEPLOYMENTS, self.name, self.namespace, written)

    async def _flush_traffic(self) -> None:
        if self.before_write is not None:
            await self.before_write()

    # --- the primary -------------------------------------------------------------------

    async def _deployment(self, name: str) -> JsonObject | None:
        if self.known_deployments is not None:
            return self.known_deployments.get(DEPLOYMENTS, name, self.namespace)
        return await self.api.get(DEPLOYMENTS, name, self.namespace)

    async def _canary(self) -> JsonObject:
        canary = await self._deployment(self.name)
        if canary is None:
            raise WorkloadError(f"Deployment {self.namespace}/{self.name} is gone")
        return canary

    def _revision_of(self, canary: Mapping[str, Any], template: Mapping[str, Any] | None = None) -> str:
        """The revision of the user's template (`template`: that template, if already at hand),
        worked out again only when the Deployment's generation moved."""
        version = _template_version(canary)
        if self._revision is not None and version is not None and self._revision[0] == version:
            return self._revision[1]
        if template is None:
            template = user_template_view((canary.get("spec") or {}).get("template") or {})
        revision = template_revision(template)
        self._revision = (version, revision)
        self._remember(revision, template)
        return revision

    def _remember(self, revision: str, template: Mapping[str, Any]) -> None:
        if revision not in self._templates:
            self._templates[revision] = json_copy(dict(template))
            while len(self._templates) > _TEMPLATES_KEPT:
                del self._templates[next(iter(self._templates))]

    def _template_for(self, canary: Mapping[str, Any], revision: str) -> Mapping[str, Any]:
        """The user's pod template of `revision`, only to be read (copy it to edit it)."""
        template = user_template_view((canary.get("spec") or {}).get("template") or {})
        if self._revision_of(canary, template) == revision:
            return template
        known = self._templates.get(revision)
        if known is None:
            raise WorkloadError(
                f"the pod template of revision {revision} is no longer known "
                f"(Deployment {self.name} changed since); it cannot be promoted"
            )
        return known

    def _desired_primary(
        self,
        canary: Mapping[str, Any],
        template: JsonObject,
        revision: str,
        primary: JsonObject | None,
    ) -> JsonObject:
        """The primary to write; `primary` is the one stored, as read_modify_write hands it over:
        without its status, and a copy of our own to edit."""
        meta = canary.get("metadata") or {}
        spec = canary.get("spec") or {}
        selector = primary_selector(selector_labels(canary))
        template_meta = template.setdefault("metadata", {})
        template_meta["labels"] = {
            **(template_meta.get("labels") or {}),
            **selector,
            REVISION_LABEL: revision,
        }
        template = with_pod_metadata(template, self.stable_pods_metadata)
        labels = {**(meta.get("labels") or {}), PRIMARY_OF_LABEL: self.name, MANAGED_BY_LABEL: MANAGED_BY}
        desired_spec: JsonObject = {key: spec[key] for key in _COPIED_SPEC_FIELDS if key in spec}
        desired_spec["template"] = template
        if primary is None:
            desired_spec["selector"] = {"matchLabels": selector}
            desired_spec["replicas"] = max(1, spec_replicas(canary))
            return {
                "apiVersion": DEPLOYMENTS.api_version,
                "kind": DEPLOYMENTS.kind,
                "metadata": {
                    "name": self.primary,
                    "namespace": self.namespace,
                    "labels": labels,
                    "annotations": _copied_annotations(meta.get("annotations") or {}),
                    "ownerReferences": [owner_reference(canary)],
                },
                "spec": desired_spec,
            }
        # An existing primary keeps its selector (immutable), its replicas (an HPA may own
        # them) and any metadata others added; the template and rollout settings follow.
        desired = primary
        desired["metadata"]["labels"] = {**(desired["metadata"].get("labels") or {}), **labels}
        desired["spec"] = {**desired.get("spec", {}), **desired_spec}
        return desired

    # --- services ----------------------------------------------------------------------

    async def _service_ports(
        self, canary: Mapping[str, Any]
    ) -> tuple[JsonObject | None, list[dict[str, Any]]]:
        """(the apex Service or None, the ports of meshshift's Services: the apex's, else the pods')."""
        apex = self.known_services.get(SERVICES, self.service, self.namespace)
        if apex is None:
            apex = await self.api.get(SERVICES, self.service, self.namespace)
            self.known_services.put(SERVICES, self.service, self.namespace, apex)
        if apex is not None:
            return apex, service_ports_from(apex)
        return None, container_ports((canary.get("spec") or {}).get("template") or {})

    async def _ensure_services(self, canary: Mapping[str, Any]) -> None:
        labels = selector_labels(canary)
        apex, ports = await self._service_ports(canary)
        if not ports:
            raise WorkloadError(
                f"cannot create Services for {self.name}: no Service {self.service} to copy ports from "
                "and no containerPort in the pod template"
            )
        await self._ensure_service(self.service + PRIMARY_SUFFIX, primary_selector(labels), ports, canary)
        await self._ensure_service(self.service + CANARY_SUFFIX, labels, ports, canary)
        if apex is None:
            await self._ensure_service(self.service, primary_selector(labels), ports, canary)
        await self._point_preview(canary, at_canary=spec_replicas(canary) > 0, ports=ports)

    def _managed_service(
        self, name: str, owner: Mapping[str, Any], selector: Mapping[str, str], ports: list[dict[str, Any]]
    ) -> JsonObject:
        """A ClusterIP Service meshshift creates and owns (labelled as managed, owned by `owner`)."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                "ownerReferences": [owner_reference(owner)],
            },
            "spec": {"type": "ClusterIP", "selector": dict(selector), "ports": ports},
        }

    async def _ensure_service(
        self, name: str, selector: Mapping[str, str], ports: list[dict[str, Any]], owner: Mapping[str, Any]
    ) -> None:
        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                return self._managed_service(name, owner, selector, ports)
            if (current["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                return None  # the user's own Service: theirs to configure
            spec = current.setdefault("spec", {})
            spec["selector"] = dict(selector)
            spec["ports"] = _merge_ports(spec.get("ports") or [], ports)
            return current

        _, written = await read_modify_write(
            self.api, SERVICES, name, self.namespace, build, known=self.known_services
        )
        if written:
            self.log.info("service written", service=name)

    async def _point_apex_at_primary(self, canary: Mapping[str, Any]) -> None:
        """Flagger's apex: `<svc>` selects the primary pods once the primary exists."""
        wanted = primary_selector(selector_labels(canary))

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                return None  # created with the primary Services (promote)
            spec = current.setdefault("spec", {})
            selector = spec.get("selector")
            if not selector or selector == wanted:
                return None  # no selector: endpoints managed by hand; leave them be
            annotations = current["metadata"].setdefault("annotations", {})
            annotations.setdefault(ORIGINAL_SELECTOR_ANNOTATION, json.dumps(selector, sort_keys=True))
            spec["selector"] = wanted
            return current

        _, written = await read_modify_write(
            self.api, SERVICES, self.service, self.namespace, build, known=self.known_services
        )
        if written:
            self.log.info("apex service now selects the primary", service=self.service)

    async def _point_preview(
        self, canary: Mapping[str, Any], *, at_canary: bool, ports: list[dict[str, Any]] | None = None
    ) -> None:
        """The preview Service selects the newest revision's pods: `<name>`'s while they run."""
        name = self.preview_service
        if name is None:
            return
        if ports is None:
            ports = (await self._service_ports(canary))[1]
        labels = selector_labels(canary)
        wanted = dict(labels) if at_canary else primary_selector(labels)

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                if not ports:
                    return None  # nothing to copy ports from: promote() reports it
                return self._managed_service(name, canary, wanted, ports)
            spec = current.setdefault("spec", {})
            selector = spec.get("selector")
            if selector == wanted:
                return None
            if (current["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY and selector:
                annotations = current["metadata"].setdefault("annotations", {})
                annotations.setdefault(ORIGINAL_SELECTOR_ANNOTATION, json.dumps(selector, sort_keys=True))
            spec["selector"] = wanted
            return current

        _, written = await read_modify_write(
            self.api, SERVICES, name, self.namespace, build, known=self.known_services
        )
        if written:
            self.log.info("preview service re-pointed", service=name, at="canary" if at_canary else "primary")


def _merge_ports(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`wanted`, keeping fields the API server filled in on the current ports (clusterIP-side defaults)."""
    by_port = {p.get("port"): p for p in current}
    merged = []
    for port in wanted:
        existing = by_port.get(port.get("port"), {})
        merged.append({**existing, **port})
    return merged
