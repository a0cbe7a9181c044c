"""The standalone daemon end to end: real proxies, real Prometheus, real HTTP traffic, counted.

The daemon runs in this process (`standalone_runtime`, as `meshshift run --config` does);
rollouts hold on `pause: {}` steps while the test measures the split over 2000 requests,
then resume with a promote command, as a user would give it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.demo.load import LoadGenerator, running_load
from meshshift.demo.prometheus import PrometheusServer, ScrapeTarget, prometheus_server
from meshshift.engine.machine import CommandKind
from meshshift.engine.state import RolloutPhase
from meshshift.processes import free_port
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.settings import DaemonSettings
from meshshift.spec.model import AnalysisPhase
from meshshift.standalone.daemon import (
    StandaloneRuntime,
    follow_rollout_file,
    load_rollout_file,
    parse_rollout_text,
    standalone_runtime,
)
from tests.standalone.conftest import App, Apps, assert_share, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

QA: dict[str, Any] = {
    "setHeaderRoute": {"name": "qa", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "true"}}]}
}
HOLD: dict[str, Any] = {"pause": {}}


def success_rate_template(prometheus_url: str) -> dict[str, Any]:
    """The tutorial's success rate on the apps' own metrics, with a short window."""
    selector = 'service="{{args.service-name}}", version="{{args.canary-hash}}"'
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate"},
        "spec": {
            "args": [{"name": "service-name"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "1s",
                    "count": 3,
                    "successCondition": "result[0] >= 0.95",
                    "provider": {
                        "prometheus": {
                            "address": prometheus_url,
                            "query": f'sum(rate(http_requests_total{{{selector}, status!~"5.."}}[5s])) '
                            f"/ sum(rate(http_requests_total{{{selector}}}[5s]))",
                        }
                    },
                }
            ],
        },
    }


def analysis(service: str) -> dict[str, Any]:
    return {
        "analysis": {
            "templates": [{"templateName": "success-rate"}],
            "args": [{"name": "service-name", "value": service}],
        }
    }


def rollout_text(
    router: str,
    stable: App,
    canary: App,
    steps: Sequence[dict[str, Any]],
    *,
    prometheus: PrometheusServer | None = None,
    name: str = "shop",
) -> str:
    rollout = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": name},
        "spec": {
            "router": {router: {"listen": f"127.0.0.1:{free_port()}"}},
            "stable": {"endpoints": [stable.endpoint]},
            "canary": {"endpoints": [canary.endpoint]},
            "steps": list(steps),
            "abortScaleDownDelay": "0s",
        },
    }
    documents = [rollout] + ([success_rate_template(prometheus.url)] if prometheus else [])
    return yaml.safe_dump_all(documents, sort_keys=False)


def settings(prometheus: PrometheusServer | None = None) -> DaemonSettings:
    return DaemonSettings(
        listen=f"127.0.0.1:{free_port()}", prometheus_address=prometheus.url if prometheus else None
    )


async def wait_until(
    runtime: StandaloneRuntime, check: Callable[[RolloutSnapshot], bool], *, within: float = 60.0
) -> RolloutSnapshot:
    """Poll the rollout's snapshot until `check` holds (a hang guard, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        snapshot = runtime.registry.snapshots.get(runtime.key)
        if snapshot is not None and check(snapshot):
            return snapshot
        if loop.time() > deadline:
            state = snapshot.state if snapshot else None
            raise AssertionError(
                f"rollout never got there; now: {state}, error: {snapshot and snapshot.last_error}"
            )
        await asyncio.sleep(0.05)


def paused_at(index: int, weight: int) -> Callable[[RolloutSnapshot], bool]:
    def check(snapshot: RolloutSnapshot) -> bool:
        state = snapshot.state
        return (
            state is not None
            and state.phase == RolloutPhase.PAUSED
            and state.step_index == index
            and all(applied.canary_weight == weight for applied in snapshot.applied.values())
        )

    return check


def finished(outcome: str) -> Callable[[RolloutSnapshot], bool]:
    def check(snapshot: RolloutSnapshot) -> bool:
        state = snapshot.state
        return (
            state is not None
            and bool(state.history)
            and state.history[-1].outcome == outcome
            and (state.phase in (RolloutPhase.HEALTHY, RolloutPhase.DEGRADED))
        )

    return check


def promotions(snapshot: RolloutSnapshot) -> int:
    if snapshot.state is None or not finished("Promoted")(snapshot):
        return 0
    return sum(1 for record in snapshot.state.history if record.outcome == "Promoted")


async def promote(runtime: StandaloneRuntime) -> None:
    outcome = await asyncio.wait_for(runtime.registry.command(runtime.key, CommandKind.PROMOTE), 10)
    assert outcome.applied, outcome.message


async def test_envoy_healthy_rollout_promotes(
    apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    steps = [QA, {"setWeight": 10}, HOLD, {"setWeight": 25}, HOLD, analysis("shop"), {"setWeight": 50}, HOLD]
    steps += [{"setWeight": 100}, HOLD]
    loaded = parse_rollout_text(
        rollout_text("envoy", apps.stable, apps.canary, steps, prometheus=prometheus), "r"
    )
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime:
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=25)) as load:  # feeds Prometheus
            for index, weight in [(2, 10), (4, 25), (7, 50), (9, 100)]:
                snapshot = await wait_until(runtime, paused_at(index, weight))
                assert_share(await versions(url), weight)
                assert await versions(url, 50, X_Canary="true") == {"canary": 50}
                if index == 7:  # the analysis between 25 and 50 % passed on real metrics
                    assert snapshot.state is not None
                    assert [r.phase for r in snapshot.state.analysis_runs] == [AnalysisPhase.SUCCESSFUL]
                await promote(runtime)
            await wait_until(runtime, finished("Promoted"))
        assert load.stats.failed == 0, load.stats.as_dict()  # no request failed across the route changes
        # Promoted: everything goes to the canary's endpoints, now the stable; the header route is gone.
        assert await versions(url, 300) == {"canary": 300}
        assert await versions(url, 50, X_Canary="true") == {"canary": 50}
        applied = await runtime.router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())
        document = json.loads(runtime.state_file.path.read_text())
        assert document["workloads"]["stableEndpoints"] == [apps.canary.endpoint]


async def test_envoy_rolls_back_a_canary_that_fails_analysis(
    apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, analysis("shop-bad")]
    loaded = parse_rollout_text(
        rollout_text("envoy", apps.stable, apps.bad, steps, prometheus=prometheus), "r"
    )
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime:
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=25)):
            snapshot = await wait_until(runtime, finished("Aborted"))
        assert snapshot.state is not None and snapshot.state.abort_reason == "AnalysisRunFailed"
        assert await versions(url, 300) == {"stable": 300}
        assert (await runtime.router.read_back()).canary_weight == 0


async def test_nginx_split_header_route_and_rollback(
    apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    steps = [QA, {"setWeight": 30}, HOLD, {"setWeight": 60}, HOLD, analysis("shop-bad")]
    loaded = parse_rollout_text(
        rollout_text("nginx", apps.stable, apps.bad, steps, prometheus=prometheus), "r"
    )
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime:
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=25)):
            for index, weight in [(2, 30), (4, 60)]:
                await wait_until(runtime, paused_at(index, weight))
                assert_share(await versions(url), weight)
                assert await versions(url, 50, X_Canary="true") == {"canary": 50}
                await promote(runtime)
            snapshot = await wait_until(runtime, finished("Aborted"))
        assert snapshot.state is not None and snapshot.state.abort_reason == "AnalysisRunFailed"
        assert await versions(url, 300) == {"stable": 300}
        assert await versions(url, 50, X_Canary="true") == {"stable": 50}  # the header route went with it
        applied = await runtime.router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())


async def test_a_new_canary_in_the_file_starts_the_next_rollout(apps: Apps, tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "0.2s"}}]
    path.write_text(rollout_text("envoy", apps.stable, apps.canary, steps))
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        follower = asyncio.create_task(follow_rollout_file(runtime, path))
        try:
            await wait_until(runtime, finished("Promoted"))
            url = runtime.proxy_url + "/"
            assert await versions(url, 200) == {"canary": 200}

            text = path.read_text()
            path.write_text(text.replace("setWeight: 50", "setWeight: 150"))  # invalid: nothing changes
            snapshot = await wait_until(runtime, lambda s: s.spec_error is not None)
            assert "spec.steps[0].setWeight" in str(snapshot.spec_error)
            assert await versions(url, 100) == {"canary": 100}

            path.write_text(text.replace(apps.canary.endpoint, apps.other.endpoint))  # the next version
            await wait_until(runtime, lambda s: s.spec_error is None and promotions(s) == 2)
            assert await versions(url, 200) == {"canary-2": 200}
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    # A restarted daemon keeps the promoted stable, though the file's spec.stable names the first one.
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        snapshot = await wait_until(
            runtime, lambda s: s.state is not None and s.state.phase == RolloutPhase.HEALTHY
        )
        assert snapshot.state is not None and len(snapshot.state.history) == 2
        assert await versions(runtime.proxy_url + "/", 200) == {"canary-2": 200}


async def test_traefik_healthy_rollout_promotes(
    apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    steps = [QA, {"setWeight": 10}, HOLD, {"setWeight": 25}, HOLD, analysis("shop"), {"setWeight": 50}, HOLD]
    steps += [{"setWeight": 75}, HOLD, {"setWeight": 100}, HOLD]
    loaded = parse_rollout_text(
        rollout_text("traefik", apps.stable, apps.canary, steps, prometheus=prometheus), "r"
    )
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime:
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=25)) as load:
            for index, weight in [(2, 10), (4, 25), (7, 50), (9, 75), (11, 100)]:
                snapshot = await wait_until(runtime, paused_at(index, weight))
                assert_share(await versions(url), weight)  # 2000 requests, within 5 points
                assert await versions(url, 100, X_Canary="true") == {"canary": 100}
                if index == 7:
                    assert snapshot.state is not None
                    assert [r.phase for r in snapshot.state.analysis_runs] == [AnalysisPhase.SUCCESSFUL]
                await promote(runtime)
            await wait_until(runtime, finished("Promoted"))
        assert load.stats.failed == 0, load.stats.as_dict()  # no request failed across the changes
        assert await versions(url, 300) == {"canary": 300}
        applied = await runtime.router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())


async def test_traefik_rolls_back_on_the_builtin_success_rate_of_traefiks_own_metrics(
    apps: Apps, tmp_path: Path
) -> None:
    """The builtin request-success-rate on `traefik_service_requests_total` of `shop-canary@file`."""
    api = f"127.0.0.1:{free_port()}"
    steps: list[dict[str, Any]] = [
        QA,
        {"setWeight": 30},
        {"pause": {"duration": "2s"}},
        {
            "analysis": {
                "templates": [{"templateName": "request-success-rate"}],
                "args": [{"name": "interval", "value": "5s"}, {"name": "count", "value": "2"}],
            }
        },
        {"setWeight": 60},
    ]
    text = rollout_text("traefik", apps.stable, apps.bad, steps)
    document = yaml.safe_load(text)
    document["spec"]["router"]["traefik"]["api"] = api
    loaded = parse_rollout_text(yaml.safe_dump(document), "r")
    targets = [ScrapeTarget("traefik", api)]
    async with (
        prometheus_server(targets, workdir=tmp_path / "prometheus") as prometheus,
        standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime,
    ):
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=25)):
            snapshot = await wait_until(runtime, finished("Aborted"), within=120)
        assert snapshot.state is not None and snapshot.state.abort_reason == "AnalysisRunFailed"
        run = snapshot.state.analysis_runs[-1]
        assert run.phase == AnalysisPhase.FAILED
        measured = [m for r in snapshot.analysis_runs.values() for res in r.results for m in res.measurements]
        assert measured and all('service=~"shop-canary@file"' in m.query for m in measured)
        assert any(m.phase == AnalysisPhase.FAILED and m.value[0] < 99 for m in measured), measured
        assert await versions(url, 300) == {"stable": 300}  # all of it back on the stable
        assert await versions(url, 50, X_Canary="true") == {"stable": 50}  # the header route is gone
        applied = await runtime.router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())
