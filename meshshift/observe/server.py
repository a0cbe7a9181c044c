"""The daemon's one HTTP listener: /metrics, /healthz, /readyz, /api/v1 and the dashboard.

`serve()` runs the whole observability surface for the block it wraps: the listener,
the rollout metrics, and the notifications configured in the settings.

The listener resists slow, greedy and DNS-rebinding clients (meshshift.observe.guard):
request-head and body deadlines, a connection limit, and a check of the Host header.

/readyz is leader-aware: 503 until the first listing has been seen, and while a watch has
heard nothing past its bound (the answer says which); then 200, saying
`ok` on the leader and `ok (standby)` on a standby (header `X-Meshshift-Leader`).
`/readyz?role=leader` answers 503 on a standby, for a Service that must reach the
leader only (the API and dashboard of a replicated daemon).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from meshshift.observe import api
from meshshift.observe.guard import ConnectionGuard, guarded_listener, host_check
from meshshift.observe.metrics import CONTENT_TYPE, RolloutMetrics, process_collectors, render_off_loop
from meshshift.observe.notifications import Notifier
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings, split_host_port

REGISTRY_KEY = web.AppKey("registry", RolloutRegistry)
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)
ROLLOUT_METRICS_KEY = web.AppKey("rollout_metrics", list[RolloutMetrics])
STATIC_DIR = Path(__file__).parent / "static"

# The dashboard loads only its own files: no CDN, no inline script.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    leader = {"X-Meshshift-Leader": "true" if registry.is_leader else "false"}
    reason = registry.not_ready_reason()
    if reason is not None:
        return web.Response(status=503, text=reason, headers=leader)
    if not registry.is_leader and request.query.get("role") == "leader":
        return web.Response(status=503, text="standby", headers=leader)
    return web.Response(text="ok" if registry.is_leader else "ok (standby)", headers=leader)


async def metrics(request: web.Request) -> web.Response:
    ours: list[RolloutMetrics] = request.app[ROLLOUT_METRICS_KEY]
    body = await render_off_loop(request.app[METRICS_KEY], ours)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def favicon(request: web.Request) -> web.Response:
    """/favicon.ico, asked for by browsers and bookmarks that do not read the page's icon link."""
    raise web.HTTPMovedPermanently("/static/favicon.svg")


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if not request.path.startswith(("/api/", "/metrics")):
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def create_app(
    registry: RolloutRegistry,
    settings: DaemonSettings,
    metrics_registry: CollectorRegistry,
    *,
    command_timeout: float = 10.0,
    rollout_metrics: RolloutMetrics | None = None,
    guard: ConnectionGuard | None = None,
) -> web.Application:
    """The application; `guard` (the listener's) adds the request-head and body deadlines."""
    middlewares = [] if guard is None else [guard.middleware]
    middlewares += [
        host_check(settings.allowed_hosts, lambda request: api.has_valid_token(request, settings.token)),
        _security_headers,
    ]
    app = web.Application(middlewares=middlewares)
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics_registry
    app[ROLLOUT_METRICS_KEY] = [rollout_metrics] if rollout_metrics is not None else []
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    api.add_routes(app, registry, token=settings.token, command_timeout=command_timeout)
    app.router.add_get("/", dashboard)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


@contextlib.asynccontextmanager
async def serve(
    registry: RolloutRegistry,
    settings: DaemonSettings,
    metrics_registry: CollectorRegistry | None = None,
    *,
    rollout_metrics: RolloutMetrics | None = None,
    notifier: Notifier | None = None,
    command_timeout: float = 10.0,
) -> AsyncIterator[str]:
    """Serve the HTTP listener while the block runs; yields the base URL actually bound.

    Rollout metrics go into `metrics_registry` (a new one by default); pass your own
    `rollout_metrics` to wire its `event_sink(key)` into each controller's events.
    Notifications go to the receivers in `settings.notifications`, or through `notifier`.
    """
    host, port = split_host_port(settings.listen, default_host="0.0.0.0")  # noqa: S104 - a daemon listens widely
    collectors = metrics_registry if metrics_registry is not None else CollectorRegistry(auto_describe=False)
    async with contextlib.AsyncExitStack() as stack:
        if rollout_metrics is None:
            rollout_metrics = RolloutMetrics(registry)
            stack.callback(rollout_metrics.close)
        for collector in (rollout_metrics, *process_collectors()):
            collectors.register(collector)
            stack.callback(collectors.unregister, collector)
        if notifier is None:
            notifier = Notifier.from_settings(settings.notifications)
            stack.push_async_callback(notifier.close)
        notifier.attach(registry)
        stack.callback(notifier.detach, registry)
        notifier.listeners.append(rollout_metrics.count_notification)
        stack.callback(notifier.listeners.remove, rollout_metrics.count_notification)
        await notifier.start()
        guard = ConnectionGuard()
        runner = web.AppRunner(
            create_app(
                registry,
                settings,
                collectors,
                command_timeout=command_timeout,
                rollout_metrics=rollout_metrics,
                guard=guard,
            ),
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=guard.head_timeout,
            lingering_time=guard.body_timeout,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        bound_host, bound_port = await stack.enter_async_context(guarded_listener(runner, host, port, guard))
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
