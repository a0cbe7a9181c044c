"""Success rate and latency from successive reads of a real Envoy's /stats/prometheus."""

from __future__ import annotations

import math
import re

import pytest

from meshshift.analysis.providers import EnvoyAdminProvider
from meshshift.analysis.providers.envoy_admin import (
    ClusterReading,
    bucket_increase,
    histogram_quantile,
    parse_cluster_stats,
    success_rate,
)
from meshshift.ports import ProviderError
from meshshift.processes import free_port
from tests.analysis.helpers import measure
from tests.analysis.stack import Stack

# Async tests run in the shared stack's loop (conftest.py); the plain ones need no loop.
in_stack_loop = pytest.mark.asyncio(loop_scope="package")

# Real lines of Envoy 1.40's /stats/prometheus, trimmed.
STATS = """\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="canary"} 162
envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="canary"} 10
envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="canary"} 16
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="stable"} 300
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="canary"} 188
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="canary",le="10"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="canary",le="25"} 184
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="canary",le="+Inf"} 184
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="canary"} 3783.7636599128209127229638397694
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="canary"} 184
"""


def test_a_reading_keeps_one_cluster_and_ignores_totals() -> None:
    reading = parse_cluster_stats(STATS, "canary", at=1.0)
    assert reading == ClusterReading(
        1.0, {"200": 162, "404": 10, "503": 16}, ((10.0, 0.0), (25.0, 184.0), (math.inf, 184.0))
    )
    assert parse_cluster_stats(STATS, "nope", at=1.0) is None


def test_success_rate_counts_only_5xx_as_failures_between_readings() -> None:
    before = ClusterReading(0.0, {"200": 100, "503": 10}, ())
    now = ClusterReading(60.0, {"200": 190, "404": 5, "503": 15}, ())
    assert success_rate(now, before) == pytest.approx((95.0, 100.0))  # 5 503s in 100 requests
    assert success_rate(before, before) == (None, 0.0)  # no traffic: no value
    restarted = ClusterReading(90.0, {"200": 9, "503": 1}, ())  # Envoy restarted: counters reset
    assert success_rate(restarted, now) == pytest.approx((90.0, 10.0))


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(10.0, 0.0), (25.0, 184.0), (math.inf, 184.0)]
    assert histogram_quantile(0.99, buckets) == pytest.approx(10 + 15 * 0.99)
    assert histogram_quantile(0.5, [(1.0, 50.0), (2.0, 100.0), (math.inf, 100.0)]) == pytest.approx(1.0)
    assert (
        histogram_quantile(0.99, [(1.0, 0.0), (5.0, 0.0), (math.inf, 10.0)]) == 5.0
    )  # beyond the last bound
    assert histogram_quantile(0.99, [(1.0, 0.0), (math.inf, 0.0)]) is None
    before = ClusterReading(0.0, {}, ((10.0, 5.0), (25.0, 100.0), (math.inf, 100.0)))
    now = ClusterReading(1.0, {}, ((10.0, 5.0), (25.0, 150.0), (math.inf, 150.0)))
    assert bucket_increase(now, before) == [(10.0, 0.0), (25.0, 50.0), (math.inf, 50.0)]


@in_stack_loop
async def test_successive_reads_measure_the_window_between_them(stack: Stack) -> None:
    provider = EnvoyAdminProvider(
        admin_url=stack.envoy.admin_url, cluster="canary_bad", first_sample_wait=1.0
    )
    options = {"builtin": "request-success-rate", "window": "1s"}
    first = await measure(provider, "meshshift", options)  # no earlier reading: reads twice, 1 s apart
    second = await measure(provider, "meshshift", options)  # reuses the last reading as its start
    for result in (first, second):
        assert 60 < result.value[0] < 95
        over = re.search(r"to Envoy cluster canary_bad over ([0-9.]+)s", result.query)
        assert over is not None and float(over.group(1)) >= 1.0  # at least the window
    good = await measure(provider, "meshshift", {**options, "cluster": "canary"})
    assert good.value == [100.0]


@in_stack_loop
async def test_envoy_admin_errors_are_actionable(stack: Stack) -> None:
    provider = EnvoyAdminProvider(admin_url=stack.envoy.admin_url, first_sample_wait=0.1)
    with pytest.raises(ProviderError, match="no upstream requests stats for cluster 'nope'"):
        await measure(provider, "meshshift", {"builtin": "request-success-rate", "cluster": "nope"})
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderError, match=f"cannot reach envoy admin at {dead}"):
        await measure(provider, "meshshift", {"builtin": "request-duration", "adminUrl": dead})
    with pytest.raises(ProviderError, match="source: 'nginx-log' is not known"):
        await measure(provider, "meshshift", {"builtin": "request-duration", "source": "nginx-log"})
    with pytest.raises(ProviderError, match="no Envoy admin address"):
        await measure(EnvoyAdminProvider(), "meshshift", {"builtin": "request-duration"})


@in_stack_loop
async def test_the_earlier_reading_is_about_one_window_old(stack: Stack) -> None:
    # Each reading asks the clock once: these are the times the provider sees.
    times = iter([0.0, 1.0, 1000.0, 1001.0, 1030.0, 1070.0])
    provider = EnvoyAdminProvider(
        admin_url=stack.envoy.admin_url, clock=lambda: next(times), first_sample_wait=0.01
    )
    options = {"builtin": "request-success-rate", "window": "60s"}

    async def covered() -> str:
        query = (await measure(provider, "meshshift", options)).query
        found = re.search(r"over ([0-9.]+)s", query)
        assert found is not None
        return found.group(1)

    assert await covered() == "1.0"  # no earlier reading: two reads (0 and 1)
    assert await covered() == "1.0"  # readings from long ago are forgotten: two fresh reads
    assert await covered() == "30.0"  # less than a window since the first: from 1000
    assert await covered() == "69.0"  # the newest reading at least a window old: 1001
