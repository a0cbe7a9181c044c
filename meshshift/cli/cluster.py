"""The CLI's Kubernetes side: rollouts read from the cluster, commands through the annotation.

A rollout is an annotated Deployment. Its view is built the way the daemon builds its
own: the spec from the annotations, the engine state and analysis runs from the state
ConfigMap, the workloads as `KubeWorkloads.observe()` reads them; then the same JSON
view as the HTTP API (`api.rollout_view`). The CLI never writes state: a command is the
`meshshift.io/command` annotation (a verb plus a unique token), and the outcome is the
record the daemon writes in the state ConfigMap. `undo` rewrites the Deployment's pod
template back to the one the stable (`<name>-primary`) runs, which the daemon then sees
as a return to the stable revision.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import list_kube_config_contexts
from kubernetes_asyncio.config.config_exception import ConfigException

from meshshift.cli.rollouts import COMMAND_WAIT, CliError, ControlResult, View, command_value
from meshshift.kube.client import load_configuration, pod_namespace
from meshshift.kube.commands import COMMAND_ANNOTATION
from meshshift.kube.patches import merge_diff, with_resource_version
from meshshift.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    JsonObject,
    KubeApi,
    KubeApiError,
    resource_version,
)
from meshshift.kube.state_store import COMMANDS_KEY, STATE_KEY, decode_stored, state_config_map_name
from meshshift.kube.workloads import (
    REVISION_LABEL,
    KubeWorkloads,
    WorkloadError,
    primary_name,
    selector_labels,
    template_revision,
    user_template,
)
from meshshift.observe.api import rollout_view
from meshshift.ports import StoredRollout
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.settings import DaemonSettings
from meshshift.spec.annotations import ENABLED, parse_deployment
from meshshift.spec.errors import SpecError

POLL = 1.0  # seconds between reads while watching or waiting for a command's record


class ClusterSource:
    def __init__(self, client: ApiClient, default_namespace: str) -> None:
        self.client = client
        self.api = KubeApi(client, request_timeout=15.0, retries=2)
        self.default_namespace = default_namespace

    @classmethod
    async def connect(cls, *, kubeconfig: str | None, context: str | None) -> ClusterSource:
        settings = DaemonSettings(kubeconfig=kubeconfig, context=context)
        try:
            configuration = await load_configuration(settings)
        except (ConfigException, OSError) as error:
            raise CliError(
                f"no Kubernetes configuration ({error}); pass --kubeconfig, or --server URL for a "
                "standalone or demo daemon"
            ) from error
        return cls(ApiClient(configuration), _context_namespace(kubeconfig, context))

    async def close(self) -> None:
        await self.client.close()

    # --- reading -------------------------------------------------------------------------

    async def rollouts(self) -> list[View]:
        listing = await self._call(self.api.list_objects(DEPLOYMENTS, None), "list Deployments")
        views = []
        for deployment in listing.get("items") or []:
            if _opted_in(deployment):
                meta = deployment["metadata"]
                view = await self._view(meta.get("namespace") or "default", meta["name"], deployment)
                if view is not None:
                    views.append(view)
        return views

    async def rollout(self, namespace: str, name: str) -> View | None:
        deployment = await self._call(self.api.get(DEPLOYMENTS, name, namespace), f"read Deployment {name}")
        if deployment is None:
            return None
        if not _opted_in(deployment):
            raise CliError(
                f'Deployment {namespace}/{name} is not managed by meshshift (no {ENABLED}: "true")'
            )
        return await self._view(namespace, name, deployment)

    async def watch(self, namespace: str, name: str) -> AsyncIterator[View | None]:
        last: View | None = None
        while True:
            view = await self.rollout(namespace, name)
            if view is None:
                yield None
                return
            comparable = {k: v for k, v in view.items() if k != "updatedAt"}
            if last is None or comparable != last:
                last = comparable
                yield view
            await asyncio.sleep(POLL)

    async def _view(self, namespace: str, name: str, deployment: Mapping[str, Any]) -> View | None:
        try:
            annotated = parse_deployment(deployment)
            spec, spec_error = (annotated.rollout, None) if annotated else (None, "not opted in")
            routers = annotated.target.routers if annotated else ()
            service = annotated.target.service if annotated else name
        except SpecError as error:
            spec, spec_error, routers, service = None, str(error), (), name
        stored = await self._stored(namespace, name)
        try:
            workloads = await KubeWorkloads(
                self.api, namespace=namespace, deployment=name, service=service
            ).observe()
        except (KubeApiError, WorkloadError):
            workloads = None
        snapshot = RolloutSnapshot(
            key=RolloutKey(namespace, name),
            spec=spec,
            spec_error=spec_error,
            state=stored.rollout if stored else None,
            analysis_runs=dict(stored.analysis_runs) if stored else {},
            workloads=workloads,
            applied={},  # what the routers applied is the daemon's to read back
            routers=tuple(routers),
            updated_at=time.time(),
        )
        return rollout_view(snapshot)

    async def _stored(self, namespace: str, name: str) -> StoredRollout | None:
        config_map = await self._call(
            self.api.get(CONFIG_MAPS, state_config_map_name(name), namespace), "read the state ConfigMap"
        )
        text = ((config_map or {}).get("data") or {}).get(STATE_KEY)
        if not text:
            return None
        try:
            return decode_stored(text)
        except (ValueError, KeyError, TypeError) as error:
            raise CliError(f"the state of {namespace}/{name} cannot be read: {error}") from error

    # --- commands ------------------------------------------------------------------------

    async def control(self, namespace: str, name: str, action: str) -> ControlResult:
        deployment = await self._call(self.api.get(DEPLOYMENTS, name, namespace), f"read Deployment {name}")
        if deployment is None or not _opted_in(deployment):
            raise CliError(f'no rollout {namespace}/{name} (a Deployment annotated {ENABLED}: "true")')
        if action == "undo":
            return await self._undo(namespace, name, deployment)
        value = command_value(action)
        patch = {"metadata": {"annotations": {COMMAND_ANNOTATION: value}}}
        await self._call(self.api.merge_patch(DEPLOYMENTS, name, patch, namespace), "annotate the Deployment")
        return await self._outcome(namespace, name, value)

    async def _outcome(self, namespace: str, name: str, value: str) -> ControlResult:
        deadline = time.monotonic() + COMMAND_WAIT
        while time.monotonic() < deadline:
            config_map = await self._call(
                self.api.get(CONFIG_MAPS, state_config_map_name(name), namespace), "read the state ConfigMap"
            )
            for record in _records((config_map or {}).get("data") or {}):
                if record.get("id") == value:
                    return ControlResult(bool(record.get("applied")), str(record.get("message", "")))
            await asyncio.sleep(POLL / 2)
        return ControlResult(
            None, f"{COMMAND_ANNOTATION}={value} is set; the daemon has not recorded an outcome yet"
        )

    async def _undo(self, namespace: str, name: str, deployment: Mapping[str, Any]) -> ControlResult:
        stored = await self._stored(namespace, name)
        primary = await self._call(
            self.api.get(DEPLOYMENTS, primary_name(name), namespace), "read the primary"
        )
        if stored is None or primary is None:
            raise CliError(f"{namespace}/{name} has no stable yet: nothing to undo")
        stable = stored.rollout.stable_revision
        current = (deployment.get("spec") or {}).get("template") or {}
        if template_revision(current) == stable:
            return ControlResult(False, f"the Deployment already runs the stable revision {stable}")
        try:
            template = stable_template(deployment, primary)
        except WorkloadError as error:
            raise CliError(str(error)) from error
        if template_revision(template) != stable:
            raise CliError(
                f"{primary_name(name)} does not hold revision {stable}'s pod template any more; "
                "undo by hand (kubectl rollout undo) or abort"
            )
        patch = with_resource_version(
            {"spec": {"template": merge_diff(current, template)}}, resource_version(deployment)
        )
        await self._call(
            self.api.merge_patch(DEPLOYMENTS, name, patch, namespace), "rewrite the pod template"
        )
        return ControlResult(True, f"the Deployment's pod template is back to the stable revision {stable}")

    async def set_images(self, namespace: str, name: str, images: Mapping[str, str]) -> str:
        """Each named container (`*`: every one) of the Deployment's pod template on its new image,
        in one write guarded by the resourceVersion read; the daemon rolls the new revision out."""
        deployment = await self._call(self.api.get(DEPLOYMENTS, name, namespace), f"read Deployment {name}")
        if deployment is None or not _opted_in(deployment):
            raise CliError(f'no rollout {namespace}/{name} (a Deployment annotated {ENABLED}: "true")')
        pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        lists = {key: copy.deepcopy(pod.get(key) or []) for key in ("initContainers", "containers")}
        found: set[str] = set()
        changed = []
        for containers in lists.values():
            for container in containers:
                cname = str(container.get("name"))
                image = images.get(cname, images.get("*"))
                if image is None:
                    continue
                found.add(cname)
                if container.get("image") != image:
                    container["image"] = image
                    changed.append(f"{cname}={image}")
        missing = sorted(set(images) - found - {"*"})
        if missing:
            names = ", ".join(str(c.get("name")) for c in lists["containers"] + lists["initContainers"])
            raise CliError(f"no container {', '.join(missing)} in {namespace}/{name} (containers: {names})")
        if not changed:
            return "image already set: nothing changed"
        patch = with_resource_version(
            {"spec": {"template": {"spec": {k: v for k, v in lists.items() if v}}}},
            resource_version(deployment),
        )
        await self._call(self.api.merge_patch(DEPLOYMENTS, name, patch, namespace), "set the image")
        return f"image updated: {', '.join(changed)}"

    async def _call(self, call: Any, what: str) -> Any:
        try:
            return await call
        except KubeApiError as error:
            if error.conflict:
                raise CliError(f"cannot {what}: it changed meanwhile; try again") from error
            raise CliError(f"cannot {what}: {error}") from error
        except (TimeoutError, OSError) as error:
            raise CliError(f"cannot {what}: the API server is unreachable ({error})") from error


def stable_template(deployment: Mapping[str, Any], primary: Mapping[str, Any]) -> JsonObject:
    """The user's pod template for the revision the primary runs: its own labels back, ours removed."""
    template = user_template((primary.get("spec") or {}).get("template") or {})
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop(REVISION_LABEL, None)
    labels.update(selector_labels(deployment))  # the primary's carry a -primary suffix
    template.setdefault("metadata", {})["labels"] = labels
    return template


def _records(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    import json

    try:
        records = json.loads(data.get(COMMANDS_KEY) or "[]")
    except ValueError:
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _opted_in(deployment: Mapping[str, Any]) -> bool:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ENABLED)
    return value is True or value == "true"


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig context, as kubectl uses it; else the pod's, else default."""
    try:
        contexts, active = list_kube_config_contexts(kubeconfig)
    except (ConfigException, OSError, TypeError):
        return pod_namespace() or "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"
