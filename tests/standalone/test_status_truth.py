"""What `meshshift get`, the API and /metrics say is what happened, on a real Envoy with real apps:

- after a promotion the new stable serves 100%: Argo's SetWeight and ActualWeight read 100, our
  weight gauges 100 (a rollback ends at 0: Grafana tells them apart);
- a rollout file turned invalid mid-rollout shows the held step and weight, with InvalidSpec and
  the reason;
- a state file that cannot be written makes the rollout Degraded and /readyz 503, naming
  spec.stateFile and the OS error, and changes no traffic until it can be written again;
- `rollout_info_replicas_*` count the endpoints that really accept connections.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from meshshift.engine.machine import CommandKind
from meshshift.engine.state import RolloutPhase
from meshshift.processes import free_port
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.settings import DaemonSettings
from meshshift.standalone.daemon import (
    StandaloneRuntime,
    follow_rollout_file,
    load_rollout_file,
    standalone_runtime,
)
from tests.observe.test_metrics import by_name, only, parse
from tests.standalone.conftest import Apps, assert_share, versions
from tests.support.ports import refusing_address

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

MESHSHIFT = [sys.executable, "-m", "meshshift.cli"]
TOKEN = "status-truth-token"


def rollout_file(
    path: Path, stable: list[str], canary: list[str], steps: list[dict[str, Any]], **spec: Any
) -> Path:
    document = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": "shop"},
        "spec": {
            "router": {"envoy": {"listen": f"127.0.0.1:{free_port()}"}},
            "stable": {"endpoints": stable},
            "canary": {"endpoints": canary},
            "steps": steps,
            "abortScaleDownDelay": "0s",
            **spec,
        },
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def settings() -> DaemonSettings:
    return DaemonSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN)


async def wait_until(runtime: StandaloneRuntime, check: Callable[[RolloutSnapshot], bool]) -> RolloutSnapshot:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        snapshot = runtime.registry.snapshots.get(runtime.key)
        if snapshot is not None and check(snapshot):
            return snapshot
        assert loop.time() < deadline, f"never got there: {snapshot}"
        await asyncio.sleep(0.05)


def phase_is(phase: RolloutPhase, **state: Any) -> Callable[[RolloutSnapshot], bool]:
    def check(snapshot: RolloutSnapshot) -> bool:
        current = snapshot.state
        return (
            current is not None
            and current.phase == phase
            and all(getattr(current, k) == v for k, v in state.items())
            and snapshot.reconcile_seconds is not None
        )

    return check


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def metrics(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, text = await get(f"{base}/metrics")
    assert status == 200
    return by_name(parse(text))


async def cli_get(base: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *MESHSHIFT,
        "get",
        "rollout",
        "shop",
        "-n",
        "standalone",
        "--server",
        base,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "120"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


def field(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith(f"{name}:"))
    return line.split(":", 1)[1].strip()


async def test_a_promotion_reads_100_and_a_rollback_0(apps: Apps, tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "0.2s"}}]
    path = rollout_file(tmp_path / "rollout.yaml", [apps.stable.endpoint], [apps.canary.endpoint], steps)
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        base = runtime.http_url
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=runtime.workloads.revision))
        assert await versions(runtime.proxy_url + "/", 100) == {"canary": 100}  # the new stable serves all
        _, view = await get(f"{base}/api/v1/rollouts/standalone/shop")
        weights = view["weights"]
        assert (weights["setWeight"], weights["actual"], weights["promoted"]) == (100, 100, True)
        assert (weights["canary"], weights["stable"], weights["desired"]) == (0, 100, 0)
        output = await cli_get(base)
        assert (field(output, "SetWeight"), field(output, "ActualWeight")) == ("100", "100")
        found = await metrics(base)
        assert only(found["meshshift_rollout_desired_weight"], rollout="shop") == [100]
        assert only(found["meshshift_rollout_applied_weight"], rollout="shop", router="envoy") == [100]
        assert only(found["flagger_canary_weight"], workload="shop-primary") == [100]

    # The next version is aborted: the weights end at 0, not at 100 as above.
    path = rollout_file(
        path, [apps.stable.endpoint], [apps.other.endpoint], [{"setWeight": 30}, {"pause": {}}]
    )
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        await wait_until(runtime, phase_is(RolloutPhase.PAUSED, step_index=1))
        assert (await runtime.registry.command(runtime.key, CommandKind.ABORT)).applied
        await wait_until(runtime, phase_is(RolloutPhase.DEGRADED))
        _, view = await get(f"{runtime.http_url}/api/v1/rollouts/standalone/shop")
        assert (view["weights"]["setWeight"], view["weights"]["actual"], view["weights"]["promoted"]) == (
            0,
            0,
            False,
        )
        output = await cli_get(runtime.http_url)
        assert (field(output, "SetWeight"), field(output, "ActualWeight")) == ("0", "0")
        found = await metrics(runtime.http_url)
        assert only(found["meshshift_rollout_desired_weight"], rollout="shop") == [0]


async def test_an_invalid_file_mid_rollout_shows_where_it_holds(apps: Apps, tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
    path = rollout_file(tmp_path / "rollout.yaml", [apps.stable.endpoint], [apps.canary.endpoint], steps)
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        follower = asyncio.create_task(follow_rollout_file(runtime, path))
        try:
            await wait_until(runtime, phase_is(RolloutPhase.PAUSED, step_index=1))
            path.write_text(path.read_text().replace("setWeight: 60", "setWeight: 160"))
            await wait_until(runtime, lambda s: s.spec_error is not None)
            _, view = await get(f"{runtime.http_url}/api/v1/rollouts/standalone/shop")
            assert view["phase"] == "InvalidSpec" and view["argoPhase"] == "InvalidSpec"
            assert view["step"]["label"] == "2/3"
            assert (view["weights"]["setWeight"], view["weights"]["actual"]) == (20, 20)
            assert "spec.steps[2].setWeight" in view["message"]
            output = await cli_get(runtime.http_url)
            assert "InvalidSpec" in field(output, "Status")
            assert (field(output, "Step"), field(output, "SetWeight"), field(output, "ActualWeight")) == (
                "2/3",
                "20",
                "20",
            )
            assert "spec.steps[2].setWeight" in field(output, "Message")
            found = await metrics(runtime.http_url)
            assert [labels["phase"] for labels, _ in found["rollout_info"]] == ["InvalidSpec"]
            assert only(found["meshshift_rollout_step"], rollout="shop") == [2]
            assert only(found["meshshift_rollout_desired_weight"], rollout="shop") == [20]
            assert_share(await versions(runtime.proxy_url + "/"), 20)  # the traffic holds
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


async def test_an_unwritable_state_file_is_degraded_and_not_ready(apps: Apps, tmp_path: Path) -> None:
    """The state file's directory is a symlink; pointing it at /sys/kernel (which nobody, root
    included, may create files in) makes every save fail with EACCES."""
    real = tmp_path / "state-dir"
    real.mkdir()
    link = tmp_path / "state"
    link.symlink_to(real)
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    path = rollout_file(
        tmp_path / "rollout.yaml",
        [apps.stable.endpoint],
        [apps.canary.endpoint],
        steps,
        stateFile=str(link / "shop.state.json"),
    )
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        base = runtime.http_url
        await wait_until(runtime, phase_is(RolloutPhase.PAUSED, step_index=1))
        assert (await get(f"{base}/readyz"))[0] == 200
        link.unlink()
        link.symlink_to("/sys/kernel")
        # The promotion cannot be recorded, so it waits: acted on once the state can be saved.
        promoted = asyncio.ensure_future(runtime.registry.command(runtime.key, CommandKind.PROMOTE))
        snapshot = await wait_until(runtime, lambda s: s.store_error is not None)
        assert "spec.stateFile" in str(snapshot.store_error) and "Permission denied (EACCES)" in str(
            snapshot.store_error
        )
        status, text = await get(f"{base}/readyz")
        assert status == 503
        assert "spec.stateFile: cannot write the state file" in text and "Permission denied (EACCES)" in text
        _, view = await get(f"{base}/api/v1/rollouts/standalone/shop")
        assert view["phase"] == "Degraded" and view["argoPhase"] == "Error"
        assert "spec.stateFile" in view["message"] and "EACCES" in view["message"]
        output = await cli_get(base)
        assert "Degraded" in field(output, "Status") and "spec.stateFile" in field(output, "Message")
        assert_share(await versions(runtime.proxy_url + "/"), 20)  # nothing it could not record was done

        assert not promoted.done()
        link.unlink()
        link.symlink_to(real)  # writable again: the rollout goes on where it was
        assert (await asyncio.wait_for(promoted, 60)).applied
        await wait_until(
            runtime, lambda s: s.store_error is None and s.state is not None and s.state.step_index == 3
        )
        assert (await get(f"{base}/readyz"))[0] == 200
        assert_share(await versions(runtime.proxy_url + "/"), 60)


async def test_replica_counts_are_the_endpoints_that_answer(apps: Apps, tmp_path: Path) -> None:
    with refusing_address() as dead:  # held: no server the runtime starts can take its port
        await _replica_counts_are_the_endpoints_that_answer(apps, tmp_path, dead)


async def _replica_counts_are_the_endpoints_that_answer(apps: Apps, tmp_path: Path, dead: str) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}]
    path = rollout_file(
        tmp_path / "rollout.yaml",
        [apps.stable.endpoint],
        [apps.canary.endpoint],
        steps,
        progressDeadline="10m",
    )
    async with standalone_runtime(load_rollout_file(path), base_dir=tmp_path, settings=settings()) as runtime:
        assert runtime.http_url is not None
        await wait_until(runtime, phase_is(RolloutPhase.PAUSED, step_index=1))
        found = await metrics(runtime.http_url)
        replicas = {
            kind: only(found[f"rollout_info_replicas_{kind}"], name="shop")
            for kind in ("desired", "available", "unavailable", "updated")
        }
        # Mid-rollout the stable endpoint and the canary's serve, and both answer.
        assert replicas == {"desired": [1], "available": [2], "unavailable": [0], "updated": [1]}
        assert (await runtime.registry.command(runtime.key, CommandKind.PROMOTE)).applied
        await wait_until(runtime, phase_is(RolloutPhase.HEALTHY, stable_revision=runtime.workloads.revision))
        found = await metrics(runtime.http_url)
        replicas = {
            kind: only(found[f"rollout_info_replicas_{kind}"], name="shop")
            for kind in ("desired", "available", "unavailable", "updated")
        }
        # Promoted: the canary's endpoint is the stable; all available, as an alert expects.
        assert replicas == {"desired": [1], "available": [1], "unavailable": [0], "updated": [1]}

    # A stable endpoint that does not answer is unavailable (and the rollout waits for it).
    path = rollout_file(path, [apps.canary.endpoint, dead], [apps.canary.endpoint, dead], steps)
    async with standalone_runtime(
        load_rollout_file(path), base_dir=tmp_path / "second", settings=settings()
    ) as runtime:
        assert runtime.http_url is not None
        await wait_until(runtime, lambda s: s.workloads is not None)
        found = await metrics(runtime.http_url)
        assert only(found["rollout_info_replicas_desired"], name="shop") == [2]
        assert only(found["rollout_info_replicas_available"], name="shop") == [1]
        assert only(found["rollout_info_replicas_unavailable"], name="shop") == [1]
