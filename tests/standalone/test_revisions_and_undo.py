"""Standalone revisions people can read, and `undo` that puts the previous endpoints back; on a
real Envoy, real apps and a real Prometheus:

- `spec.stable.version` / `spec.canary.version` label the endpoint sets: `get` shows each set's
  endpoints and label, and {{args.canary-hash}} / {{args.stable-hash}} are those labels, so the
  tutorial's `version="{{args.canary-hash}}"` selects the canary's series without hard-coding;
- `undo` mid-rollout puts the stable's endpoints back (the rollout is cancelled); after a
  promotion it rolls the endpoints the promotion replaced out again; it survives a restart and
  gives way when the file names new canary endpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from meshshift.demo.prometheus import PrometheusServer
from meshshift.engine.state import RolloutPhase
from meshshift.processes import free_port
from meshshift.standalone.daemon import follow_rollout_file, load_rollout_file, standalone_runtime
from meshshift.standalone.workloads import endpoints_revision
from tests.standalone.conftest import Apps, assert_share, versions
from tests.standalone.test_status_truth import TOKEN, get, phase_is, settings, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

MESHSHIFT = [sys.executable, "-m", "meshshift.cli"]


def by_version_template(prometheus_url: str) -> dict[str, Any]:
    """Passes when the canary's and the stable's series exist under their version labels."""

    def count(hash_arg: str) -> str:
        return f'count(http_requests_total{{service="shop", version="{{{{args.{hash_arg}}}}}"}})'

    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "by-version"},
        "spec": {
            "args": [{"name": "canary-hash"}, {"name": "stable-hash"}],
            "metrics": [
                {
                    "name": name,
                    "count": 1,
                    "successCondition": "result[0] >= 1",
                    "provider": {"prometheus": {"address": prometheus_url, "query": count(arg)}},
                }
                for name, arg in (("canary-series", "canary-hash"), ("stable-series", "stable-hash"))
            ],
        },
    }


def write_file(
    path: Path, stable: dict[str, Any], canary: dict[str, Any], steps: list[Any], *docs: Any
) -> Path:
    rollout = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": "shop"},
        "spec": {
            "router": {"envoy": {"listen": f"127.0.0.1:{free_port()}"}},
            "stable": stable,
            "canary": canary,
            "steps": steps,
            "abortScaleDownDelay": "0s",
        },
    }
    path.write_text(yaml.safe_dump_all([rollout, *docs], sort_keys=False))
    return path


async def meshshift(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *MESHSHIFT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def hit(endpoint: str, times: int = 5) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(times):
            async with session.get(f"http://{endpoint}/") as response:
                await response.read()


async def test_version_labels_fill_the_hash_args_and_show_in_get(
    apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    await hit(apps.other.endpoint)
    await hit(apps.stable.endpoint)
    await prometheus.wait_for_data('http_requests_total{service="shop", version="canary-2"}', wait_seconds=60)
    steps = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "by-version"}]}}, {"pause": {}}]
    path = write_file(
        tmp_path / "rollout.yaml",
        {"endpoints": [apps.stable.endpoint], "version": "stable"},
        {"endpoints": [apps.other.endpoint], "version": "canary-2"},
        steps,
        by_version_template(prometheus.url),
    )
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        base = runtime.http_url
        assert base is not None
        await wait_until(runtime, phase_is(RolloutPhase.PAUSED, step_index=2))
        _, view = await get(f"{base}/api/v1/rollouts/standalone/shop")
        (run,) = view["analysisRuns"]
        queries = {m["name"]: (m["phase"], m["query"]) for m in run["metrics"]}
        assert queries == {
            "canary-series": ("Successful", 'count(http_requests_total{service="shop", version="canary-2"})'),
            "stable-series": ("Successful", 'count(http_requests_total{service="shop", version="stable"})'),
        }
        assert view["endpoints"] == {"stable": [apps.stable.endpoint], "canary": [apps.other.endpoint]}
        assert view["versions"] == {"stable": "stable", "canary": "canary-2"}
        code, out, err = await meshshift("get", "rollout", "shop", "--server", base.removeprefix("http://"))
        assert code == 0, err
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("Endpoints:"))
        shown = [lines[start].removeprefix("Endpoints:").strip(), lines[start + 1].strip()]
        assert shown == sorted(
            [
                f"{apps.stable.endpoint} (stable, version stable)",
                f"{apps.other.endpoint} (canary, version canary-2)",
            ]
        )

        # undo mid-rollout: the stable's endpoints back, the rollout cancelled, all traffic on the stable.
        code, out, err = await meshshift("undo", "shop", "--server", base, "--token", TOKEN)
        assert code == 0, err
        assert out.strip() == (
            f"rollout 'shop' undone: the canary is the stable's endpoints ['{apps.stable.endpoint}'] again: "
            f"the rollout of revision {endpoints_revision([apps.other.endpoint])} is cancelled"
        )
        done = await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, canary_revision=None))
        assert done.state is not None and done.state.history[-1].outcome == "Undone"
        assert_share(await versions(runtime.proxy_url + "/", 100), 0)
        state = json.loads((tmp_path / "shop.state.json").read_text())
        assert state["workloads"]["undo"] == {
            "fileCanary": [apps.other.endpoint],
            "canary": [apps.stable.endpoint],
            "canaryVersion": "stable",
        }


async def test_undo_after_a_promotion_rolls_the_previous_endpoints_out_again(
    apps: Apps, tmp_path: Path
) -> None:
    quick = [{"setWeight": 50}, {"pause": {"duration": "0.2s"}}]
    stable = {"endpoints": [apps.stable.endpoint], "version": "stable"}
    path = write_file(tmp_path / "rollout.yaml", stable, {"endpoints": [apps.canary.endpoint]}, quick)
    first, second = endpoints_revision([apps.stable.endpoint]), endpoints_revision([apps.canary.endpoint])
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        base = runtime.http_url
        assert base is not None
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=second))
        code, out, err = await meshshift("undo", "shop", "--server", base, "--token", TOKEN)
        assert code == 0, err
        assert out.strip() == (
            f"rollout 'shop' undone: rolling out the previous endpoints ['{apps.stable.endpoint}'] "
            f"(revision {first}) again"
        )
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=first, canary_revision=None))
        assert_share(await versions(runtime.proxy_url + "/", 100), 0)  # all on the old stable again
        _, view = await get(f"{base}/api/v1/rollouts/standalone/shop")
        assert view["versions"] == {"stable": "stable", "canary": "stable"}  # the label came back with them
        assert view["history"][-1]["outcome"] == "Promoted"

    # A restart keeps the undo: the file still names the undone canary, nothing rolls out.
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=first, canary_revision=None))
        assert runtime.workloads.revision == first
        assert_share(await versions(runtime.proxy_url + "/", 100), 0)
        # The file names new canary endpoints: the undo gives way, they roll out.
        follower = asyncio.create_task(follow_rollout_file(runtime, path))
        try:
            await asyncio.sleep(0.1)  # the follower has read the file as it is
            document = yaml.safe_load(path.read_text())
            document["spec"]["canary"] = {"endpoints": [apps.other.endpoint]}
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            third = endpoints_revision([apps.other.endpoint])
            await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=third))
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        assert await versions(runtime.proxy_url + "/", 100) == {"canary-2": 100}
        assert "undo" not in json.loads((tmp_path / "shop.state.json").read_text())["workloads"]


async def test_nothing_to_undo_on_a_first_stable(apps: Apps, tmp_path: Path) -> None:
    endpoints = {"endpoints": [apps.stable.endpoint]}
    path = write_file(tmp_path / "rollout.yaml", endpoints, endpoints, [{"setWeight": 50}])
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY))
        code, _, err = await meshshift("undo", "shop", "--server", runtime.http_url, "--token", TOKEN)
    assert code == 1
    assert "not undone: nothing to undo: no endpoints before the stable's are recorded" in err
