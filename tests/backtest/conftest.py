"""One real Prometheus serving the synthetic week of history.py, for the backtests of this package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from meshshift.demo.prometheus import PrometheusServer, prometheus_server
from tests.backtest.history import write_tsdb


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def history(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("history")
    await write_tsdb(workdir / "data")
    # Retention counts back from the newest block, not from today; keep everything anyway.
    async with prometheus_server([], workdir=workdir, retention="3650d") as prometheus:
        await prometheus.wait_for_data('count_over_time(http_requests_total{service="myapp"}[40d])')
        yield prometheus
