"""Test support for the Kubernetes suite: the cluster around meshshift.

- `KubeEnv`: where the API server is (kmock, or a real cluster for the e2e lane).
- `Cluster`: the test's own kubernetes-asyncio client (typed APIs, raw dicts out).
- `DeploymentStatusSim`: plays kube-controller-manager, which kmock lacks: it marks a
  Deployment's replicas updated and available once its spec changed (unless held).
- `Observer`: watches the namespace and keeps every version of every object it sees;
  tests wait on conditions over it (event-driven, no polling, hang guards only).
- `MetricServer`: a local HTTP endpoint the `web` analysis provider measures.
- `running_daemon`: an in-process meshshift Operator connected through a kubeconfig.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from kubernetes_asyncio import client, config, watch

from meshshift.kube.operator import Operator, OperatorOptions
from meshshift.processes import free_port
from meshshift.settings import DaemonSettings

T = TypeVar("T")
VS_GROUP, VS_VERSION, VS_PLURAL = "networking.istio.io", "v1beta1", "virtualservices"
TEMPLATE_GROUP, TEMPLATE_VERSION = "meshshift.io", "v1alpha1"
MERGE = "application/merge-patch+json"
# The routers' other custom kinds the Observer follows: kind -> (group, version, plural).
CUSTOM_KINDS = {
    "TraefikService": ("traefik.io", "v1alpha1", "traefikservices"),
    "IngressRoute": ("traefik.io", "v1alpha1", "ingressroutes"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
}
HANG_GUARD = 60.0  # seconds; only ever reached when something is broken
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class KubeEnv:
    url: str
    kubeconfig: Path
    namespace: str
    kmock: Any | None = None  # the emulator: fault injection and the request log
    simulate: bool = True  # play the Deployment controller (kmock has none)

    @property
    def real(self) -> bool:
        return self.kmock is None


def write_kubeconfig(path: Path, url: str, namespace: str) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}
        ],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document))
    return path


@contextlib.asynccontextmanager
async def api_client(env: KubeEnv) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(env.kubeconfig), client_configuration=configuration, persist_config=False
    )
    async with client.ApiClient(configuration) as api:
        yield api


def plain(api: client.ApiClient, model: Any) -> dict[str, Any]:
    data = api.sanitize_for_serialization(model)
    assert isinstance(data, dict)
    return data


class Cluster:
    """What a test does to the cluster, through its own client."""

    def __init__(self, env: KubeEnv, api: client.ApiClient) -> None:
        self.env = env
        self.api = api
        self.ns = env.namespace
        # Typed as Any: the generated APIs take raw dicts and `_content_type` at run time,
        # which their annotations do not say.
        self.apps: Any = client.AppsV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.net: Any = client.NetworkingV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    async def create_deployment(self, body: dict[str, Any]) -> None:
        await self.apps.create_namespaced_deployment(self.ns, body)

    async def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return plain(self.api, await self.apps.read_namespaced_deployment(name, self.ns))
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    async def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        await self.apps.patch_namespaced_deployment(name, self.ns, patch, _content_type=MERGE)

    async def annotate(self, name: str, **annotations: str | None) -> None:
        await self.patch_deployment(name, {"metadata": {"annotations": annotations}})

    async def delete_deployment(self, name: str) -> None:
        await self.apps.delete_namespaced_deployment(name, self.ns)

    async def create_service(self, body: dict[str, Any]) -> None:
        await self.core.create_namespaced_service(self.ns, body)

    async def create_ingress(self, body: dict[str, Any]) -> None:
        await self.net.create_namespaced_ingress(self.ns, body)

    async def delete_ingress(self, name: str) -> None:
        await self.net.delete_namespaced_ingress(name, self.ns)

    async def create_virtual_service(self, body: dict[str, Any]) -> None:
        await self.custom.create_namespaced_custom_object(VS_GROUP, VS_VERSION, self.ns, VS_PLURAL, body)

    async def virtual_service(self, name: str) -> dict[str, Any]:
        result = await self.custom.get_namespaced_custom_object(
            VS_GROUP, VS_VERSION, self.ns, VS_PLURAL, name
        )
        assert isinstance(result, dict)
        return result

    async def create_custom(self, body: dict[str, Any]) -> None:
        """An object of one of CUSTOM_KINDS."""
        group, version, plural = CUSTOM_KINDS[body["kind"]]
        await self.custom.create_namespaced_custom_object(group, version, self.ns, plural, body)

    async def create_template(self, body: dict[str, Any], group: str = TEMPLATE_GROUP) -> None:
        body = {**body, "apiVersion": f"{group}/{TEMPLATE_VERSION}"}
        await self.custom.create_namespaced_custom_object(
            group, TEMPLATE_VERSION, self.ns, "analysistemplates", body
        )

    async def create_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        await self.core.create_namespaced_secret(self.ns, {"metadata": {"name": name}, "data": encoded})

    async def events(self) -> list[dict[str, Any]]:
        listing = await self.core.list_namespaced_event(self.ns)
        return [plain(self.api, item) for item in listing.items]


# --- the Deployment controller's part ---------------------------------------------------


class DeploymentStatusSim:
    """Marks Deployments rolled out (every replica updated and available) after each spec change."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.held: set[str] = set()
        self.latest: dict[str, dict[str, Any]] = {}

    async def run(self) -> None:
        while True:
            stream = watch.Watch()
            try:
                async with stream:
                    async for event in stream.stream(
                        self.cluster.apps.list_namespaced_deployment, self.cluster.ns, timeout_seconds=300
                    ):
                        if event["type"] in ("ADDED", "MODIFIED"):
                            obj = event["raw_object"]
                            self.latest[obj["metadata"]["name"]] = obj
                            await self._settle(obj)
            except client.ApiException:
                await asyncio.sleep(0.05)  # a fault injected for the daemon reached us too: watch again

    def hold(self, name: str) -> None:
        """Pods of `name` stop becoming ready until `release`."""
        self.held.add(name)

    async def release(self, name: str) -> None:
        self.held.discard(name)
        if name in self.latest:
            await self._settle(self.latest[name])

    async def _settle(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name in self.held:
            return
        replicas = obj.get("spec", {}).get("replicas")
        replicas = 1 if replicas is None else replicas
        wanted = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": 0,
        }
        status = obj.get("status") or {}
        if all(status.get(k) == v for k, v in wanted.items()):
            return
        with contextlib.suppress(client.ApiException):  # deleted meanwhile
            await self.cluster.apps.patch_namespaced_deployment_status(
                name, self.cluster.ns, {"status": wanted}, _content_type=MERGE
            )


# --- watching everything ------------------------------------------------------------------

Kind = str  # "VirtualService", "Ingress", "ConfigMap", "Deployment", "Service", "Event", "Lease"


class Observer:
    """Every version of every object of a few kinds in the namespace, as the watches deliver them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.current: dict[Kind, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.history: dict[Kind, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        self._changed = asyncio.Condition()

    def sources(self) -> dict[Kind, tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]]:
        c = self.cluster
        return {
            "Deployment": (c.apps.list_namespaced_deployment, (c.ns,)),
            "Service": (c.core.list_namespaced_service, (c.ns,)),
            "ConfigMap": (c.core.list_namespaced_config_map, (c.ns,)),
            "Event": (c.core.list_namespaced_event, (c.ns,)),
            "Ingress": (c.net.list_namespaced_ingress, (c.ns,)),
            "Lease": (client.CoordinationV1Api(c.api).list_namespaced_lease, (c.ns,)),
            "VirtualService": (
                c.custom.list_namespaced_custom_object,
                (VS_GROUP, VS_VERSION, c.ns, VS_PLURAL),
            ),
            **{
                kind: (c.custom.list_namespaced_custom_object, (group, version, c.ns, plural))
                for kind, (group, version, plural) in CUSTOM_KINDS.items()
            },
        }

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(kind, fn, args) for kind, (fn, args) in self.sources().items()))

    async def _follow(self, kind: Kind, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        version: str | None = None
        while True:
            stream = watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": 600}
            if version:
                kwargs["resource_version"] = version
            try:
                async with stream:
                    async for event in stream.stream(fn, *args, **kwargs):
                        obj = event["raw_object"]
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        await self._record(kind, event["type"], obj)
            except client.ApiException:
                # A 410 injected for the daemon reached us too: watch again from the start
                # (kmock replays every object as ADDED; versions seen already are not repeated).
                version = None
                await asyncio.sleep(0.05)

    async def _record(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        async with self._changed:
            if event == "DELETED":
                self.current[kind].pop(name, None)
            else:
                versions = self.history[kind][name]
                if not versions or versions[-1] != obj:
                    versions.append(obj)
                self.current[kind][name] = obj
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[Observer], T | None], *, what: str, within: float = HANG_GUARD
    ) -> T:
        """The first non-None, non-False value of `predicate`, re-checked on every change."""

        async def wait() -> T:
            async with self._changed:
                while True:
                    value = predicate(self)
                    if value is not None and value is not False:
                        return value
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        return self.current[kind].get(name)

    def state(self, deployment: str) -> dict[str, Any] | None:
        """The rollout state meshshift stored for `deployment`."""
        config_map = self.get("ConfigMap", f"{deployment}-meshshift-state")
        text = ((config_map or {}).get("data") or {}).get("state.json")
        return json.loads(text)["rollout"] if text else None

    def states(self, deployment: str) -> list[dict[str, Any]]:
        """Every rollout state stored for `deployment`, oldest first."""
        versions = self.history["ConfigMap"].get(f"{deployment}-meshshift-state", [])
        texts = [(v.get("data") or {}).get("state.json") for v in versions]
        return [json.loads(text)["rollout"] for text in texts if text]

    def events(self, deployment: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.current["Event"].values()
            if e.get("involvedObject", {}).get("name") == deployment
            and (e.get("source") or {}).get("component") == "meshshift"  # not the Deployment controller's
        ]

    def event_reasons(self, deployment: str) -> list[str]:
        ordered = sorted(self.events(deployment), key=lambda e: e["metadata"]["name"])
        return [e["reason"] for e in ordered]


# --- analysis answers ---------------------------------------------------------------------


@dataclass
class MetricServer:
    """GET /metric/<check>?canary=<hash> answers {"value": values[check]} (default 1.0)."""

    values: dict[str, Any] = field(default_factory=dict)
    hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    tokens: list[str] = field(default_factory=list)  # the `token` query parameter, when sent
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metric/{check}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        check = request.match_info["check"]
        self.hits[(check, request.query.get("canary", ""))] += 1
        if "token" in request.query:
            self.tokens.append(request.query["token"])
        return web.json_response({"value": self.values.get(check, 1.0)})

    def template(
        self, name: str = "web-check", *, interval: str = "200ms", count: int = 2, token: bool = False
    ) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/metric/{{{{args.check}}}}?canary={{{{args.canary-hash}}}}"
        args = [{"name": "check"}, {"name": "canary-hash"}]
        if token:
            url += "&token={{args.token}}"
            args.append({"name": "token"})
        return {
            "apiVersion": f"{TEMPLATE_GROUP}/{TEMPLATE_VERSION}",
            "kind": "AnalysisTemplate",
            "metadata": {"name": name},
            "spec": {
                "args": args,
                "metrics": [
                    {
                        "name": "check",
                        "interval": interval,
                        "count": count,
                        "successCondition": "result >= 0.9",
                        "provider": {
                            "web": {
                                "url": url,
                                "jsonPath": "{$.value}",
                            }
                        },
                    }
                ],
            },
        }


# --- the daemon ---------------------------------------------------------------------------


def fast_options(**overrides: Any) -> OperatorOptions:
    values: dict[str, Any] = {"request_timeout": 2.0, "watch_timeout": 30, "abort_scale_down_delay": 0.5}
    values.update(overrides)
    return OperatorOptions(**values)


def daemon_settings(env: KubeEnv, identity: str, **overrides: Any) -> DaemonSettings:
    values: dict[str, Any] = {
        "kubeconfig": str(env.kubeconfig),
        "namespace": env.namespace,
        "listen": f"127.0.0.1:{free_port()}",
        "leader_elect": True,
        "lease_namespace": env.namespace,
        "lease_duration": 2.0,
        "identity": identity,
        "log_format": "console",
        "measurement_timeout": 5.0,
    }
    values.update(overrides)
    return DaemonSettings(**values)


@contextlib.asynccontextmanager
async def running_daemon(
    env: KubeEnv,
    identity: str = "daemon-a",
    *,
    wait_leading: bool = True,
    options: OperatorOptions | None = None,
    **settings: Any,
) -> AsyncIterator[Operator]:
    operator = Operator(daemon_settings(env, identity, **settings), options or fast_options())
    task = asyncio.create_task(operator.run(), name=f"daemon:{identity}")
    try:
        ready = asyncio.create_task(operator.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=HANG_GUARD, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped it
        assert ready in done, f"{identity} did not become ready"
        if wait_leading:
            await asyncio.wait_for(operator.leader.wait(), HANG_GUARD)
        yield operator
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def own_namespace(env: KubeEnv, api: client.ApiClient) -> AsyncIterator[None]:
    """On a real cluster, the scenario's namespace exists only while it runs (kmock has any)."""
    if not env.real:
        yield
        return
    core: Any = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": env.namespace, "labels": {"meshshift.io/e2e": "true"}}})
    try:
        yield
    finally:
        await core.delete_namespace(env.namespace)


@dataclass
class World:
    env: KubeEnv
    cluster: Cluster
    observer: Observer
    sim: DeploymentStatusSim
    metrics: MetricServer


@contextlib.asynccontextmanager
async def world(env: KubeEnv) -> AsyncIterator[World]:
    """The cluster around the daemon: a client, the observer, the Deployment controller, a metric source."""
    async with api_client(env) as api, own_namespace(env, api):
        cluster = Cluster(env, api)
        observer = Observer(cluster)
        sim = DeploymentStatusSim(cluster)
        metrics = MetricServer()
        await metrics.start()
        tasks = [asyncio.create_task(observer.run(), name="observer")]
        if env.simulate:
            tasks.append(asyncio.create_task(sim.run(), name="deployment-status"))
        try:
            yield World(env, cluster, observer, sim, metrics)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await metrics.stop()


@contextlib.asynccontextmanager
async def daemon_process(
    env: KubeEnv, identity: str, *settings: str, log: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`run_operator` in a child process (tests/kube/daemon_process.py); killed at the end if alive.

    `settings` are SETTING=VALUE overrides (`shards=6`); `log` gets the daemon's output."""
    output = log.open("w") if log is not None else None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.kube.daemon_process",
        str(env.kubeconfig),
        env.namespace,
        identity,
        *settings,
        cwd=str(REPO_ROOT),
        stdout=output or asyncio.subprocess.DEVNULL,
        stderr=output or asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if output is not None:
            output.close()


def lease_holder(observer: Observer, name: str = "meshshift-leader") -> str | None:
    lease = observer.get("Lease", name)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")
