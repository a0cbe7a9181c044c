"""A real Prometheus scrapes the daemon during `meshshift demo`: the tutorial's queries and
every query of the shipped Grafana dashboard return series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from meshshift.demo.prometheus import find_prometheus
from meshshift.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "grafana" / "dashboard.json"
ROLLOUT = "demo"
HANG_GUARD = 150.0  # the demo decides well within a minute; this only catches a hang

# The tutorial's queries (Part 7), with its rollout's name replaced by the demo's.
TUTORIAL = {
    "info": f'argo_rollouts_info{{rollout="{ROLLOUT}"}}',
    "info by namespace": f'argo_rollouts_info{{namespace="standalone",rollout="{ROLLOUT}"}}',
    "phase": f'argo_rollouts_phase{{namespace="standalone",rollout="{ROLLOUT}"}}',
    "metric phase": "argo_rollouts_analysis_run_metric_phase",
    "metric phase, one metric": (
        f'argo_rollouts_analysis_run_metric_phase{{namespace="standalone",rollout="{ROLLOUT}",metric="success-rate"}}'
    ),
    "duration": f'argo_rollouts_rollout_duration_seconds{{namespace="standalone",rollout="{ROLLOUT}"}}',
    "analysis status panel": f'argo_rollouts_analysis_run_phase{{rollout="{ROLLOUT}"}}',
    "success rate panel, canary": 'sum(rate(http_requests_total{version="canary",status!~"5.."}[5m])) '
    '/ sum(rate(http_requests_total{version="canary"}[5m]))',
    "success rate panel, stable": 'sum(rate(http_requests_total{version="stable",status!~"5.."}[5m])) '
    '/ sum(rate(http_requests_total{version="stable"}[5m]))',
}
# Grafana's variables, as Grafana would substitute them for this demo.
VARIABLES = {"$namespace": ".*", "$rollout": ROLLOUT, "$__rate_interval": "30s", "$__range": "5m"}


# Flagger's Envoy dashboard (tests/data/dashboards), as Grafana fills its variables for the demo:
# no Kubernetes namespace label on a standalone Envoy (`=~""` matches its absence), $target the
# rollout. Its panels on cAdvisor's container_* series need a kubelet and are not queried.
FLAGGER_ENVOY = ROOT / "tests" / "data" / "dashboards" / "flagger-envoy.json"
FLAGGER_VARIABLES = {"$namespace": "", "$target": ROLLOUT}


def flagger_envoy_queries() -> dict[str, str]:
    dashboard = json.loads(FLAGGER_ENVOY.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "envoy_cluster_" not in expr:
                continue
            for name, value in FLAGGER_VARIABLES.items():
                expr = expr.replace(name, value)
            queries[f"flagger envoy: {panel['title']} ({panel['id']})"] = expr
    return queries


def dashboard_queries() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            queries[f"dashboard: {panel['title']} {target['refId']}"] = expr
    return queries


@contextlib.asynccontextmanager
async def demo(
    listen: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str], list[str]]]:
    """`meshshift demo --hold` as a user runs it; yields the process, the URLs it printed and
    its output so far (lines are added as they come).

    The hold keeps Prometheus up after the decision: on a slow machine the rollout was decided
    before every query had answered, and the demo's Prometheus went with it.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        "demo",
        "--scenario",
        "healthy",
        "--router",
        "envoy",
        "--listen",
        listen,
        "--hold",
        str(HANG_GUARD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    output: list[str] = []
    drain: asyncio.Task[None] | None = None

    async def read_on() -> None:  # keeps the pipe from filling up
        assert process.stdout is not None
        while line := await process.stdout.readline():
            output.append(line.decode())

    try:
        while "prometheus" not in urls:
            line = (await asyncio.wait_for(process.stdout.readline(), HANG_GUARD)).decode()
            assert line, "the demo ended before printing its URLs:\n" + "".join(output)
            output.append(line)
            if match := re.match(r"\s*(dashboard|metrics|prometheus):\s+(http://\S+)", line):
                urls[match[1]] = match[2].rstrip("/")
        drain = asyncio.create_task(read_on())
        yield process, urls, output
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # the demo stops every child it started
            await asyncio.wait_for(process.wait(), 60)
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


async def series(
    http: aiohttp.ClientSession, prometheus: str, query: str, since: float
) -> list[dict[str, object]]:
    """The query over the demo so far, as a Grafana panel of its time range would show it."""
    params = {"query": query, "start": f"{since:.3f}", "end": f"{time.time():.3f}", "step": "1"}
    async with http.get(f"{prometheus}/api/v1/query_range", params=params) as response:
        body = await response.json()
    assert body["status"] == "success", f"{query}: {body}"
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


async def test_prometheus_scrapes_the_daemon_during_a_demo(http: aiohttp.ClientSession) -> None:
    assert find_prometheus() is not None, "prometheus is missing: apt-get install prometheus (make test does)"
    queries = {
        **{f"tutorial: {k}": v for k, v in TUTORIAL.items()},
        **dashboard_queries(),
        **flagger_envoy_queries(),
    }
    assert len(flagger_envoy_queries()) == 6  # request volume and success rate of both, traffic of both
    found: dict[str, list[dict[str, object]]] = {}
    since = time.time()
    async with demo(f"127.0.0.1:{free_port()}") as (process, urls, output):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while len(found) < len(queries):
            assert process.returncode is None, (
                f"the demo ended first, hold included; never answered: {set(queries) - set(found)}"
            )
            assert loop.time() < deadline, f"never answered: {sorted(set(queries) - set(found))}"
            for name, query in queries.items():
                try:
                    result = [] if name in found else await series(http, urls["prometheus"], query, since)
                except aiohttp.ClientConnectorError:  # the demo ended meanwhile, and its Prometheus
                    await process.wait()
                    break
                if result:
                    found[name] = result
            await asyncio.sleep(1.0)
        while not any(line.startswith("holding for") for line in output):  # decided: the hold began
            assert process.returncode is None, "the demo ended without holding:\n" + "".join(output)
            assert loop.time() < deadline, "the demo never decided:\n" + "".join(output)
            await asyncio.sleep(0.5)
        process.send_signal(signal.SIGINT)  # Ctrl-C in the hold: the decision's exit code, not 130
        assert await asyncio.wait_for(process.wait(), 60) == 0, "".join(output)

    info = found["tutorial: info"]
    assert len(info) == 1
    labels = info[0]["metric"]
    assert isinstance(labels, dict)
    assert labels["job"] == "argo-rollouts-metrics"  # scraped from the daemon, as Argo's dashboard selects
    assert (labels["namespace"], labels["rollout"], labels["strategy"], labels["traffic_router"]) == (
        "standalone",
        ROLLOUT,
        "canary",
        "Envoy",
    )
    metrics = {s["metric"]["metric"] for s in found["tutorial: metric phase"]}  # type: ignore[index]
    assert metrics >= {"success-rate", "latency-p95"}


def test_the_dashboard_reads_only_what_the_daemon_serves() -> None:
    """Every metric name in the dashboard's queries is one the daemon exposes."""
    from meshshift.observe.metrics import RolloutMetrics
    from meshshift.runtime.registry import RolloutRegistry

    served = set()
    for family in RolloutMetrics(RolloutRegistry()).collect():
        served.add(family.name)
    served |= {f"{name}_{suffix}" for name in served for suffix in ("bucket", "count", "sum")}
    words = set()
    for query in dashboard_queries().values():
        query = re.sub(r'"[^"]*"', "", query)  # label values
        query = re.sub(r"\{[^}]*\}", "", query)  # matchers
        query = re.sub(r"\[[^\]]*\]", "", query)  # ranges
        query = re.sub(r"by \([^)]*\)", "", query)
        words |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", query))
    functions = {"sum", "rate", "increase", "histogram_quantile"}
    assert words - functions <= served, words - functions - served
    assert {"meshshift_rollout_desired_weight", "meshshift_analysis_metric_value"} <= words
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Weights over time", "Step over time", "Phase over time", "Analysis values"} <= titles
    assert any("rollback" in title.lower() for title in titles)
