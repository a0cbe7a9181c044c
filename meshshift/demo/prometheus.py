"""A throwaway Prometheus (Debian's `/usr/bin/prometheus`) for the tests and for `meshshift demo`.

Stable API (the demo imports it):

    find_prometheus() -> str | None
        The prometheus binary: `$PATH` first, then /usr/bin/prometheus.

    ScrapeTarget(job, address, metrics_path="/metrics")
        One static target: `address` is host:port.

    async with prometheus_server(targets, scrape_interval="1s", workdir=path) as server:
        server.url                       # http://127.0.0.1:<free port>
        await server.query("up")         # the JSON `data` of an instant query
        await server.wait_for_data("rate(x[5s])", wait_seconds=30)

The config and the TSDB live in `workdir`, the server listens on 127.0.0.1 only, the
block waits for `/-/ready`, and the process group is stopped when the block ends.
Prometheus scrapes a new target about 5.5 s after it starts whatever the interval
(its discovery cadence), so a `rate()` has data after about 7 s: `wait_for_data` is the
way to know (measured with Debian's Prometheus 2.42).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
import yaml

from meshshift.processes import ManagedProcess, ProcessFailedError, free_port, running

log = structlog.get_logger(__name__)

DEBIAN_PROMETHEUS = "/usr/bin/prometheus"


def find_prometheus() -> str | None:
    """The prometheus binary, or None when it is not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    return DEBIAN_PROMETHEUS if Path(DEBIAN_PROMETHEUS).is_file() else None


class PrometheusNotFoundError(ProcessFailedError):
    """No prometheus binary: `make test` / `make demo` install Debian's package."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    metrics_path: str = "/metrics"


@dataclass(frozen=True, slots=True)
class PrometheusServer:
    url: str
    process: ManagedProcess
    workdir: Path

    async def query(self, promql: str) -> Mapping[str, Any]:
        """The `data` of an instant query; raises ProcessFailedError on an error answer."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{self.url}/api/v1/query", data={"query": promql}) as response,
        ):
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            raise ProcessFailedError(f"prometheus rejected {promql!r}: {body.get('error')}")
        data: Mapping[str, Any] = body["data"]
        return data

    async def wait_for_data(self, promql: str, *, wait_seconds: float = 30.0) -> Mapping[str, Any]:
        """Poll `promql` until it returns a non-empty result (a fresh server has none for ~7 s)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            self.process.check_alive()
            data = await self.query(promql)
            if data.get("result"):
                return data
            if time.monotonic() > deadline:
                raise ProcessFailedError(f"{promql!r} still has no data after {wait_seconds:g}s")
            await asyncio.sleep(0.25)


def render_config(targets: Sequence[ScrapeTarget], scrape_interval: str) -> str:
    """prometheus.yml with one static job per target."""
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": target.job,
                "metrics_path": target.metrics_path,
                "static_configs": [{"targets": [target.address]}],
            }
            for target in targets
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def _write_config(workdir: Path, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "prometheus.yml"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def prometheus_server(
    scrape_targets: Sequence[ScrapeTarget],
    *,
    scrape_interval: str = "1s",
    workdir: Path,
    binary: str | None = None,
    retention: str = "1h",
) -> AsyncIterator[PrometheusServer]:
    """Run Prometheus scraping `scrape_targets` until the block ends."""
    executable = binary or find_prometheus()
    if executable is None:
        raise PrometheusNotFoundError(
            "prometheus is not installed: run `make test` (installs Debian's prometheus) "
            "or `apt-get install prometheus`"
        )
    config = render_config(scrape_targets, scrape_interval)
    config_path = await asyncio.to_thread(_write_config, workdir, config)
    port = free_port()
    process = ManagedProcess(
        name="prometheus",
        argv=[
            executable,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ],
        log_path=workdir / "prometheus.log",
        cwd=str(workdir),
    )
    url = f"http://127.0.0.1:{port}"
    async with running(process, ready_url=f"{url}/-/ready"):
        log.info("prometheus ready", url=url, targets=[t.address for t in scrape_targets])
        yield PrometheusServer(url=url, process=process, workdir=workdir)
