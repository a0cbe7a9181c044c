"""How fast a weight change applies on a standalone Envoy and NGINX.

For each proxy, 20 flips between 0 % and 100 % canary, and for each flip:
- `confirmed`: `router.set_weight()` from start to return, i.e. until the proxy confirmed
  the change (Envoy: write + rename, until the admin stats report the new RDS version;
  NGINX: render, `nginx -t`, rename, SIGHUP, until new workers answer with the new
  generation and no old worker accepts connections);
- `traffic`: from the start of the change until a new request reaches the new target.

Run: .venv/bin/python bench/standalone.py     (prints the medians; starts its own upstreams)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from meshshift.demo.app import VERSION_HEADER, AppConfig, DemoApp
from meshshift.logs import configure_logging
from meshshift.processes import free_port
from meshshift.routers.envoy import running_envoy
from meshshift.routers.nginx_conf import running_nginx
from meshshift.routers.proxy_routes import DesiredRoutes, ModelRouter
from meshshift.spec.model import EnvoyRouterConfig, NginxRouterConfig

FLIPS = 20


async def serve(version: str) -> tuple[web.AppRunner, str]:
    port = free_port()
    runner = web.AppRunner(DemoApp(AppConfig(version)).build())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


async def answered_by(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        await response.read()
        return response.headers.get(VERSION_HEADER, "?")


async def flips(router: ModelRouter, url: str) -> tuple[list[float], list[float]]:
    confirmed, traffic = [], []
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request, as new clients
    async with aiohttp.ClientSession(connector=connector) as session:
        for flip in range(FLIPS):
            weight, target = (100, "canary") if flip % 2 == 0 else (0, "stable")
            started = time.perf_counter()
            change = asyncio.create_task(router.set_weight(weight))
            seen = None
            while seen is None:
                if await answered_by(session, url) == target:
                    seen = time.perf_counter() - started
            await change
            confirmed.append(time.perf_counter() - started)
            traffic.append(seen)
    return confirmed, traffic


def report(name: str, confirmed: list[float], traffic: list[float]) -> None:
    def ms(values: list[float]) -> str:
        low, middle, high = (value * 1000 for value in (min(values), statistics.median(values), max(values)))
        return f"median {middle:6.1f} ms (min {low:.1f}, max {high:.1f})"

    print(f"{name:6} confirmed: {ms(confirmed)}")
    print(f"{name:6} traffic:   {ms(traffic)}")


class Instance(Protocol):
    @property
    def router(self) -> ModelRouter: ...

    @property
    def proxy_url(self) -> str: ...


Start = Callable[[DesiredRoutes, Path], AbstractAsyncContextManager[Instance]]


async def bench(name: str, start: Start) -> None:
    stable, stable_endpoint = await serve("stable")
    canary, canary_endpoint = await serve("canary")
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
            desired = DesiredRoutes((stable_endpoint,), (canary_endpoint,))
            async with start(desired, Path(workdir)) as instance:
                report(name, *await flips(instance.router, instance.proxy_url + "/"))
    finally:
        await stable.cleanup()
        await canary.cleanup()


def envoy(desired: DesiredRoutes, workdir: Path) -> AbstractAsyncContextManager[Instance]:
    return running_envoy(EnvoyRouterConfig(listen=f"127.0.0.1:{free_port()}"), desired, config_dir=workdir)


def nginx(desired: DesiredRoutes, workdir: Path) -> AbstractAsyncContextManager[Instance]:
    return running_nginx(NginxRouterConfig(listen=f"127.0.0.1:{free_port()}"), desired, config_dir=workdir)


async def main() -> None:
    print(f"{FLIPS} flips 0 % <-> 100 % each")
    await bench("envoy", envoy)
    await bench("nginx", nginx)


if __name__ == "__main__":
    configure_logging("console", "WARNING")  # the figures, not the proxies' chatter
    asyncio.run(main())
