"""The daemon's one HTTP listener: /metrics, /healthz, /readyz (more in later modules)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings, split_host_port

REGISTRY_KEY = web.AppKey("registry", RolloutRegistry)
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    if not registry.ready:
        return web.Response(status=503, text="not ready")
    return web.Response(text="ok" if registry.is_leader else "ok (standby)")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    registry: RolloutRegistry, settings: DaemonSettings, metrics_registry: CollectorRegistry
) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics_registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve(
    registry: RolloutRegistry, settings: DaemonSettings, metrics_registry: CollectorRegistry | None = None
) -> AsyncIterator[str]:
    """Serve the HTTP listener while the block runs; yields the base URL actually bound."""
    host, port = split_host_port(settings.listen, default_host="0.0.0.0")  # noqa: S104 - a daemon listens widely
    app = create_app(registry, settings, metrics_registry or CollectorRegistry())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()
