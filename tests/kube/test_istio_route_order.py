"""Istio: a header route sits right before the managed route it shadows, so it only catches what that
route would have caught. The VirtualService the router writes (against kmock, through the real
client) is routed by a real Envoy.

There is no Istio here, so the test turns the VirtualService into the Envoy routes istiod would
make of it, as `BuildHTTPRoutesForVirtualService` (istio/istio, pilot/pkg/networking/core/route/
route.go) does: one Envoy route per match block, in the order of `http`, a route without a match
matching everything; Envoy then takes the first route that matches, as Istio documents. Each
route answers with the name of the destination that gets its traffic.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from meshshift.kube.resources import KubeApi, virtual_services
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.istio import IstioRouter
from meshshift.routers.proxy_process import find_envoy
from meshshift.spec.model import HeaderMatch, StringMatch
from tests.kube.harness import KubeEnv, api_client
from tests.kube.scenarios import deployment

VS = virtual_services("v1beta1")
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def envoy_match(block: Mapping[str, Any]) -> dict[str, Any]:
    uri = block.get("uri") or {}
    match: dict[str, Any] = {"prefix": "/"}
    if "prefix" in uri:
        match = {"prefix": uri["prefix"]}
    elif "exact" in uri:
        match = {"path": uri["exact"]}
    elif "regex" in uri:
        match = {"safe_regex": {"regex": uri["regex"]}}
    headers = []
    for name, condition in (block.get("headers") or {}).items():
        ((kind, value),) = condition.items()
        string_match = {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}
        headers.append({"name": name, "string_match": string_match})
    if headers:
        match["headers"] = headers
    return match


def destination(route: Mapping[str, Any]) -> str:
    """The one destination that gets every request of this route (the test uses no split)."""
    receiving = [d for d in route["route"] if len(route["route"]) == 1 or d.get("weight") == 100]
    assert len(receiving) == 1, f"route {route.get('name')} splits its traffic: {route['route']}"
    return str(receiving[0]["destination"]["host"])


def envoy_routes(virtual_service: Mapping[str, Any]) -> list[dict[str, Any]]:
    routes = []
    for http in virtual_service["spec"]["http"]:
        answer = {"status": 200, "body": {"inline_string": destination(http)}}
        for block in http.get("match") or [{}]:
            routes.append(
                {"name": http.get("name", ""), "match": envoy_match(block), "direct_response": answer}
            )
    return routes


@contextlib.asynccontextmanager
async def envoy_routing(tmp_path: Path, virtual_service: Mapping[str, Any]) -> AsyncIterator[str]:
    listen, admin = free_port(), free_port()
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "mesh",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "mesh",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "web",
                                                    "domains": ["*"],
                                                    "routes": envoy_routes(virtual_service),
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": ROUTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    process = ManagedProcess(
        "envoy-istio-order",
        [find_envoy(), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        tmp_path / "envoy.log",
    )
    await process.start()
    try:
        await wait_until_http_ready(f"http://127.0.0.1:{admin}/ready", process=process, wait_seconds=30)
        yield f"http://127.0.0.1:{listen}"
    finally:
        await process.stop()


LEGACY_FIRST = {
    "apiVersion": "networking.istio.io/v1beta1",
    "kind": "VirtualService",
    "metadata": {"name": "web"},
    "spec": {
        "hosts": ["web"],
        "http": [
            {
                "name": "legacy",
                "match": [{"uri": {"prefix": "/legacy"}}],
                "route": [{"destination": {"host": "legacy-checkout"}}],
            },
            {
                "name": "primary",
                "match": [{"uri": {"prefix": "/"}}],
                "route": [
                    {"destination": {"host": "web-primary"}, "weight": 100},
                    {"destination": {"host": "web-canary"}, "weight": 0},
                ],
            },
        ],
    },
}


async def test_a_header_route_catches_only_what_its_route_would(kube_env: KubeEnv, tmp_path: Path) -> None:
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=5.0)
        await api.create(VS, LEGACY_FIRST, kube_env.namespace)
        owner = deployment("web")
        owner["metadata"].update(uid="uid-web", namespace=kube_env.namespace)
        router = IstioRouter(
            api, namespace=kube_env.namespace, virtual_service="web", service="web", owner=owner
        )
        await router.set_header_route("qa", [HeaderMatch("X-Canary", StringMatch("exact", "true"))])
        applied = await router.read_back()
        assert applied.header_routes == ("qa",)
        written = await api.get(VS, "web", kube_env.namespace)
    assert written is not None
    assert [r["name"] for r in written["spec"]["http"]] == ["legacy", "qa", "primary"]
    async with envoy_routing(tmp_path, written) as url, aiohttp.ClientSession() as session:

        async def reached(path: str, **headers: str) -> str:
            async with session.get(url + path, headers=headers) as response:
                assert response.status == 200
                return await response.text()

        assert await reached("/legacy/x", **{"X-Canary": "true"}) == "legacy-checkout"
        assert await reached("/legacy/x") == "legacy-checkout"
        assert await reached("/checkout", **{"X-Canary": "true"}) == "web-canary"
        assert await reached("/checkout", **{"X-Canary": "false"}) == "web-primary"
        assert await reached("/checkout") == "web-primary"
        # What the same header route did when it was put on top of the list (as before, and as
        # Argo Rollouts orders it): /legacy with the header went to the canary.
        on_top = {
            **written,
            "spec": {**written["spec"], "http": [written["spec"]["http"][i] for i in (1, 0, 2)]},
        }
    (tmp_path / "on-top").mkdir()
    async with (
        envoy_routing(tmp_path / "on-top", on_top) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/legacy/x", headers={"X-Canary": "true"}) as response,
    ):
        assert await response.text() == "web-canary"
