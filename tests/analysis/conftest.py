"""One real Prometheus for the tests of this package, scraping the test exporters and a real Envoy.

Prometheus first scrapes a new target about 5.5 s after it starts, and a rate() needs two
scrapes, so it starts once for the package. Its exporters and the Envoy traffic are tasks
in the package's event loop, so every async test here runs in that loop
(`pytest.mark.asyncio(loop_scope="package")`): the traffic never pauses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from meshshift.demo.exporter import TrafficExporter
from meshshift.demo.prometheus import ScrapeTarget, prometheus_server
from tests.analysis.stack import SERVICES, MeshExporter, Stack, envoy_stack


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("analysis-stack")
    exporter = TrafficExporter(SERVICES)
    async with contextlib.AsyncExitStack() as exits:
        app_address = await exits.enter_async_context(exporter.serving())
        mesh_address = await exits.enter_async_context(MeshExporter().serving())
        envoy = await exits.enter_async_context(envoy_stack(workdir / "envoy"))
        targets = [
            ScrapeTarget("app", app_address),
            ScrapeTarget("mesh", mesh_address),
            ScrapeTarget("envoy", envoy.admin_url.removeprefix("http://"), metrics_path="/stats/prometheus"),
        ]
        prometheus = await exits.enter_async_context(
            prometheus_server(targets, workdir=workdir / "prometheus")
        )
        # Two scrapes of every target, so that every rate() below has data.
        for query in (
            'rate(http_requests_total{service="healthy"}[5s])',
            "rate(istio_requests_total[5s])",
            'rate(envoy_cluster_upstream_rq_time_count{envoy_cluster_name="canary_bad"}[5s]) > 0',
        ):
            await prometheus.wait_for_data(query)
        yield Stack(prometheus=prometheus, exporter=exporter, envoy=envoy)
