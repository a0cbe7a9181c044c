"""Real processes for the standalone tests: demo apps, Prometheus, and helpers to count traffic.

The apps run as `python -m meshshift.demo.app` subprocesses for the whole package (their
ports never change), so each test only starts what it exercises: a proxy, a daemon.
Tests share the package's event loop (`pytestmark = pytest.mark.asyncio(loop_scope="package")`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from meshshift.demo.load import count_versions
from meshshift.demo.prometheus import PrometheusServer, ScrapeTarget, prometheus_server
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.spec.model import HeaderMatch, StringMatch

SHARE_REQUESTS = 2000  # per measured split: the tolerance (+-5 points) is > 4 standard deviations
TOLERANCE = 5.0


@dataclass(frozen=True, slots=True)
class App:
    version: str
    service: str
    endpoint: str  # host:port
    process: ManagedProcess


@dataclass(frozen=True, slots=True)
class Apps:
    stable: App
    canary: App  # healthy, same service as the stable
    bad: App  # version "canary" of service "shop-bad": half its answers are HTTP 500
    other: App  # a second healthy canary (version "canary-2"), for endpoint changes


async def _start_app(version: str, service: str, workdir: Path, *, error_rate: float = 0.0) -> App:
    port = free_port()
    process = ManagedProcess(
        f"app-{service}-{version}",
        [
            sys.executable,
            "-m",
            "meshshift.demo.app",
            f"--version={version}",
            f"--service={service}",
            f"--port={port}",
            f"--error-rate={error_rate}",
            "--latency-ms=2",
        ],
        workdir / f"app-{service}-{version}.log",
    )
    await process.start()
    await wait_until_http_ready(f"http://127.0.0.1:{port}/healthz", process=process)
    return App(version, service, f"127.0.0.1:{port}", process)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Apps]:
    workdir = tmp_path_factory.mktemp("apps")
    started: list[App] = []
    try:
        for version, service, error_rate in [
            ("stable", "shop", 0.0),
            ("canary", "shop", 0.0),
            ("canary", "shop-bad", 0.5),
            ("canary-2", "shop", 0.0),
        ]:
            started.append(await _start_app(version, service, workdir, error_rate=error_rate))
        yield Apps(*started)
    finally:
        for app in started:
            await app.process.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def prometheus(apps: Apps, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrometheusServer]:
    targets = [
        ScrapeTarget(f"{app.service}-{app.version}", app.endpoint)
        for app in (apps.stable, apps.canary, apps.bad, apps.other)
    ]
    async with prometheus_server(targets, workdir=tmp_path_factory.mktemp("prometheus")) as server:
        await server.wait_for_data('up{job="shop-stable"} == 1', wait_seconds=60)
        yield server


async def versions(url: str, requests: int = SHARE_REQUESTS, **headers: str) -> Counter[str]:
    """Which versions answered `requests` requests through `url`."""
    return await count_versions(url, requests, headers={k.replace("_", "-"): v for k, v in headers.items()})


def canary_percent(counts: Counter[str], canary: str = "canary") -> float:
    total = sum(counts.values())
    assert total > 0
    return 100.0 * counts[canary] / total


def assert_share(counts: Counter[str], weight: int, canary: str = "canary", stable: str = "stable") -> None:
    """Every answer came from the stable or the canary, and the canary's share is the weight +-5."""
    assert set(counts) <= {canary, stable}, f"unexpected answers: {counts}"
    share = canary_percent(counts, canary)
    if weight in (0, 100):  # no randomness at the ends: every request goes one way
        assert share == weight, f"canary share {share:.1f}% for weight {weight}: {counts}"
    assert abs(share - weight) <= TOLERANCE, f"canary share {share:.1f}% for weight {weight}: {counts}"


def header(name: str, kind: str, value: str) -> HeaderMatch:
    """A header match as a setHeaderRoute step writes it."""
    return HeaderMatch(name, StringMatch(kind, value))  # type: ignore[arg-type]
