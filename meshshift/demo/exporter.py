"""An HTTP service's metrics at known rates, for Prometheus to scrape (tests and benchmarks).

It exposes the series the tutorial's templates query, with the tutorial's names and labels:

    http_requests_total{service, version, status}
    http_request_duration_seconds_bucket{service, version, le}   (and _sum, _count)
    revenue_total{service}, conversions_total{service}, page_views_total{service}

Each `tick` a background task adds one tick's worth of traffic for every service and
version, as described by a `ServiceTraffic`. Every request of a version takes the same
time, so quantiles and ratios are known in advance (ratios exactly: all series move at
the same instants, and every series exists, at 0, from the start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from meshshift.processes import free_port


@dataclass(frozen=True, slots=True)
class VersionTraffic:
    """One tick of traffic to one version of a service."""

    requests: int
    errors: int = 0  # how many of `requests` answer 500
    latency_seconds: float = 0.04


@dataclass(frozen=True, slots=True)
class ServiceTraffic:
    versions: Mapping[str, VersionTraffic]
    revenue_per_request: float = 1.0
    page_views: int = 0  # per tick
    conversions: int = 0  # per tick


@dataclass
class TrafficExporter:
    """The metrics of `services`, advanced every `tick` seconds once started."""

    services: Mapping[str, ServiceTraffic]
    tick: float = 0.25
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "http_requests_total", "Requests served", ["service", "version", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Request duration",
            ["service", "version"],
            registry=self.registry,
        )
        self.revenue = Counter("revenue", "Revenue", ["service"], registry=self.registry)
        self.conversions = Counter("conversions", "Conversions", ["service"], registry=self.registry)
        self.page_views = Counter("page_views", "Page views", ["service"], registry=self.registry)
        for service, traffic in self.services.items():
            # Create every series at 0 now, so every rate() starts from the same scrape.
            for version in traffic.versions:
                self.requests.labels(service, version, "200")
                self.requests.labels(service, version, "500")
                self.duration.labels(service, version)
            self.revenue.labels(service)
            self.conversions.labels(service)
            self.page_views.labels(service)
        self.ticks = 0

    def advance(self) -> None:
        """Add one tick of traffic."""
        for service, traffic in self.services.items():
            served = 0
            for version, load in traffic.versions.items():
                self.requests.labels(service, version, "200").inc(load.requests - load.errors)
                self.requests.labels(service, version, "500").inc(load.errors)
                histogram = self.duration.labels(service, version)
                for _ in range(load.requests):
                    histogram.observe(load.latency_seconds)
                served += load.requests
            self.revenue.labels(service).inc(served * traffic.revenue_per_request)
            self.conversions.labels(service).inc(traffic.conversions)
            self.page_views.labels(service).inc(traffic.page_views)
        self.ticks += 1

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), content_type="text/plain", charset="utf-8")

    async def _run(self) -> None:
        while True:
            self.advance()
            await asyncio.sleep(self.tick)

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """Serve /metrics and advance the traffic; yields host:port."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port(host)
        site = web.TCPSite(runner, host, port)
        await site.start()
        task = asyncio.create_task(self._run(), name="exporter-traffic")
        try:
            yield f"{host}:{port}"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.cleanup()
