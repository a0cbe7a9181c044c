"""The floor under bench/scale.py's cores: what the requests alone cost a Python client.

Against bench/fake_kube.py (in its own process), sends R JSON merge patches of one ConfigMap
(each about 1 KiB, nested as a primary Deployment's),
C at a time, six ways, and prints the client's CPU seconds per 1,000 requests (user + system,
this process): a bare aiohttp session; the kubernetes-asyncio client's REST layer with its
authentication, as KubeApi sends a request; `ApiClient.call_api`, as KubeApi sent them before
(the generated client's walk over bodies and answers on top); and KubeApi.merge_patch whole
(its request counters, retries and errors on top of the REST layer); and KubeApi.merge_patch
on the daemon's own connections (meshshift/kube/transport.py, as `connect` sets it up); and the
floor under all of them, a bare asyncio protocol on ten connections writing prepared bytes and
parsing the answer with httptools (no timeouts, headers, errors or counting). A rollout
costs bench/scale.py's requests per rollout (24) times that, before any of meshshift's own work.

Run: .venv/bin/python bench/http_floor.py [--requests 6000] [--concurrency 100] [--runs 3]
                                          [--event-loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from meshshift.kube.client import with_lean_requests, without_environment_lookups
from meshshift.kube.resources import CONFIG_MAPS, KubeApi
from meshshift.processes import free_port
from meshshift.runtime.lifecycle import event_loop_factory, run_daemon
from meshshift.settings import EVENT_LOOPS

HERE = Path(__file__).resolve().parent
NAMESPACE = "bench"
NAME = "floor"


def body_of(number: int) -> dict[str, Any]:
    """A patch the size and shape of a primary Deployment's (labels, annotations, a pod template)."""
    labels = {"app": "app-0001-primary", "meshshift.io/revision": f"{number:010x}"}
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                "meshshift.io/revision": f"{number:010x}",
                "meshshift.io/managed-by": "meshshift",
            },
        },
        "data": {
            "spec": json.dumps(
                {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "app-0001-primary"}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": f"app:v{number}",
                                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                    "env": [{"name": f"VAR_{i}", "value": str(i)} for i in range(8)],
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                }
            )
        },
        "nested": {
            "template": {
                "spec": {"containers": [{"name": "app", "env": [{"name": f"V{i}"} for i in range(8)]}]}
            }
        },
    }


class BareConnection(asyncio.Protocol):
    """The floor: one keep-alive connection that writes prepared bytes and parses the answer with
    httptools, with no timeouts, headers, errors or counting."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[bytes] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.answer is not None
        self.answer.set_result(b"".join(self.body))
        self.body = []

    def send(self, data: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.answer


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed(requests: int, concurrency: int, send: Callable[[int], Awaitable[None]]) -> float:
    """CPU seconds of this process per 1,000 requests."""
    numbers = iter(range(requests))

    async def worker() -> None:
        for number in numbers:
            await send(number)

    before = cpu()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (cpu() - before) * 1000 / requests


async def main_async(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "fake_kube.py"), "--port", str(port), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as bare:
            for _ in range(200):
                try:
                    async with bare.get(f"{url}/_bench/count") as response:
                        await response.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            body = [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NAMESPACE}}
            ]
            async with bare.post(f"{url}/_bench/load", data=json.dumps(body)) as response:
                await response.read()
            with tempfile.TemporaryDirectory() as workdir:
                kubeconfig = Path(workdir) / "kubeconfig"
                kubeconfig.write_text(
                    yaml.safe_dump(
                        {
                            "apiVersion": "v1",
                            "kind": "Config",
                            "clusters": [{"name": "b", "cluster": {"server": url}}],
                            "users": [{"name": "b", "user": {"token": "bench-token"}}],
                            "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b"}}],
                            "current-context": "b",
                        }
                    )
                )
                configuration = k8s_client.Configuration()
                await k8s_config.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
                )
                async with (
                    k8s_client.ApiClient(configuration) as api_client,
                    k8s_client.ApiClient(configuration) as lean_client,
                ):
                    without_environment_lookups(api_client)
                    without_environment_lookups(lean_client)
                    with_lean_requests(lean_client)  # as `connect` sets the daemon's client up
                    api = KubeApi(api_client, request_timeout=30.0)
                    lean_api = KubeApi(lean_client, request_timeout=30.0)
                    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
                    patch_url = f"{url}{path}"
                    headers = {
                        "Content-Type": "application/merge-patch+json",
                        "Authorization": "Bearer bench-token",
                    }

                    loop = asyncio.get_running_loop()
                    free: list[BareConnection] = []
                    for _ in range(10):  # kubernetes-asyncio's pool on two cores: 5 per CPU
                        free.append((await loop.create_connection(BareConnection, "127.0.0.1", port))[1])
                    turns: list[asyncio.Future[None]] = []

                    async def send_protocol(number: int) -> None:
                        while not free:
                            turn = loop.create_future()
                            turns.append(turn)
                            await turn
                        connection = free.pop()
                        data = json.dumps(body_of(number)).encode()
                        head = (
                            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Content-Type: application/merge-patch+json\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n"
                        ).encode()
                        try:
                            json.loads(await connection.send(head + data))
                        finally:
                            free.append(connection)
                            if turns:
                                turns.pop(0).set_result(None)

                    async def send_bare(number: int) -> None:
                        data = json.dumps(body_of(number))
                        async with bare.patch(patch_url, data=data, headers=headers) as response:
                            json.loads(await response.read())

                    async def send_kube_api(number: int) -> None:
                        await api.merge_patch(CONFIG_MAPS, NAME, body_of(number), NAMESPACE)

                    async def send_lean(number: int) -> None:
                        await lean_api.merge_patch(CONFIG_MAPS, NAME, body_of(number), NAMESPACE)

                    async def send_rest_layer(number: int) -> None:
                        await api._request(  # the request alone, without KubeApi's counting
                            "PATCH", path, None, body_of(number), "application/merge-patch+json"
                        )

                    async def send_call_api(number: int) -> None:
                        await api_client.call_api(
                            f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}",
                            "PATCH",
                            header_params={
                                "Accept": "application/json",
                                "Content-Type": "application/merge-patch+json",
                            },
                            body=body_of(number),
                            response_types_map={200: "object"},
                            auth_settings=["BearerToken"],
                            _return_http_data_only=False,
                            _request_timeout=30.0,
                        )

                    ways: dict[str, Callable[[int], Awaitable[None]]] = {
                        "bare aiohttp session": send_bare,
                        "client's REST layer": send_rest_layer,
                        "ApiClient.call_api": send_call_api,
                        "KubeApi.merge_patch": send_kube_api,
                        "KubeApi, own transport": send_lean,
                        "bare asyncio protocol": send_protocol,
                    }
                    results: dict[str, list[float]] = {way: [] for way in ways}
                    await timed(500, args.concurrency, send_bare)  # warm the connections up
                    for _ in range(args.runs):
                        for way, send in ways.items():
                            results[way].append(await timed(args.requests, args.concurrency, send))
    finally:
        server.terminate()
        await server.wait()
    load = os.getloadavg()[0]
    print(
        f"bench/http_floor.py: {args.requests} PATCH requests, {args.concurrency} at a time, "
        f"median of {args.runs}, load average {load:.1f}"
    )
    for way, values in results.items():
        per_thousand = statistics.median(values)
        print(
            f"  {way:<24} {per_thousand:.2f} CPU-s per 1,000 requests; "
            f"24 requests x 1,000 rollouts: {per_thousand * 24:.1f} CPU-s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--event-loop", choices=EVENT_LOOPS, default="uvloop", help="as `meshshift run --event-loop`"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"  on {event_loop_factory(args.event_loop)[0]}'s event loop")
    run_daemon(main_async(args), args.event_loop)
    print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
