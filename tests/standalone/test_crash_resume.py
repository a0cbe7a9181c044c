"""`meshshift run --config` killed with SIGKILL at any moment resumes where it was.

The daemon runs as a real subprocess. Its proxy outlives a SIGKILL (it is in its own
process group) and keeps serving the split; the restarted daemon adopts it, resumes the
rollout from the state file, and the rollout ends promoted exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.proxy_process import process_alive, read_pid
from tests.standalone.conftest import Apps, assert_share, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")


class Daemon:
    def __init__(self, config: Path, listen: str, token: str) -> None:
        self.config, self.listen, self.token = config, listen, token
        self.runs = 0
        self.process: ManagedProcess | None = None

    async def start(self) -> None:
        self.runs += 1
        argv = [
            MESHSHIFT,
            "run",
            "--config",
            str(self.config),
            "--listen",
            self.listen,
            "--token",
            self.token,
        ]
        self.process = ManagedProcess("meshshift", argv, self.config.parent / f"daemon-{self.runs}.log")
        await self.process.start()
        await wait_until_http_ready(f"http://{self.listen}/readyz", process=self.process)

    async def kill_hard(self) -> None:
        assert self.process is not None and self.process.process is not None
        os.kill(self.process.process.pid, signal.SIGKILL)  # the daemon only, not its proxy
        await self.process.process.wait()

    async def terminate(self) -> int:
        assert self.process is not None and self.process.process is not None
        self.process.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.process.wait(), 30)

    async def api(self, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"http://{self.listen}/api/v1{path}", headers=headers) as response,
        ):
            return response.status, await response.json()

    async def wait_for_view(self, check: Any, within: float = 60.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            status, view = await self.api("GET", "/rollouts/standalone/shop")
            if status == 200 and check(view):
                return dict(view)
            if loop.time() > deadline:
                raise AssertionError(f"the rollout never got there: {view}")
            await asyncio.sleep(0.05)


def state(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())  # never partial: it is replaced atomically
    return document


async def wait_for_state(path: Path, check: Any, within: float = 60.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        current = state(path)  # the daemon wrote it before this is called
        if check(current["rollout"]):
            return current
        if loop.time() > deadline:
            raise AssertionError(f"state never got there: {current['rollout']}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("router", ["envoy", "nginx", "traefik"])
async def test_sigkill_at_any_moment_resumes(router: str, apps: Apps, tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 30}, {"pause": {}}]
    for weight in (40, 50, 60, 70, 80, 90):
        steps += [{"setWeight": weight}, {"pause": {"duration": "0.4s"}}]
    config = tmp_path / "rollout.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "meshshift.io/v1alpha1",
                "kind": "StandaloneRollout",
                "metadata": {"name": "shop"},
                "spec": {
                    "router": {router: {"listen": f"127.0.0.1:{free_port()}"}},
                    "stable": {"endpoints": [apps.stable.endpoint]},
                    "canary": {"endpoints": [apps.canary.endpoint]},
                    "steps": steps,
                },
            }
        )
    )
    state_file = tmp_path / "shop.state.json"
    pid_file = tmp_path / ".meshshift" / "shop" / router / f"{router}.pid"
    daemon = Daemon(config, f"127.0.0.1:{free_port()}", secrets.token_hex(8))
    await daemon.start()
    try:
        # The state is saved before the weight is applied: wait for the router's read-back.
        await daemon.wait_for_view(
            lambda v: v["phase"] == "Paused" and v["weights"]["applied"].get(router) == 30
        )
        assert state(state_file)["rollout"]["stepIndex"] == 1
        proxy = read_pid(pid_file)
        assert proxy is not None
        url = f"http://{yaml.safe_load(config.read_text())['spec']['router'][router]['listen']}/"
        assert_share(await versions(url), 30)

        await daemon.kill_hard()
        assert process_alive(proxy)
        assert_share(await versions(url), 30)  # the orphaned proxy keeps serving the split

        await daemon.start()
        status, view = await daemon.api("GET", "/rollouts/standalone/shop")  # ready: the state is read
        assert status == 200 and view["phase"] == "Paused" and view["step"]["current"] == 2
        assert view["weights"]["applied"] == {router: 30}
        assert read_pid(pid_file) == proxy  # adopted, not restarted
        status, outcome = await daemon.api("POST", "/rollouts/standalone/shop/promote")
        assert status == 200 and outcome["applied"], outcome

        rng = random.Random(5)
        seen = state(state_file)["rollout"]["stepIndex"]
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.1, 0.9))
            await daemon.kill_hard()
            rollout = state(state_file)["rollout"]
            assert rollout["stepIndex"] >= seen  # persisted before acting: never behind
            seen = rollout["stepIndex"]
            await daemon.start()

        final = await wait_for_state(state_file, lambda r: r["phase"] == "Healthy" and r["history"])
        assert [record["outcome"] for record in final["rollout"]["history"]] == ["Promoted"]
        assert final["workloads"]["stableEndpoints"] == [apps.canary.endpoint]
        assert await versions(url, 300) == {"canary": 300}
        assert read_pid(pid_file) == proxy
    finally:
        code = await daemon.terminate()
    assert code == 0
    assert not process_alive(proxy)  # the daemon stops the proxy it runs, and says so
    last_log = (tmp_path / f"daemon-{daemon.runs}.log").read_text()
    assert f"stopping the {router} meshshift started for this rollout" in last_log
    hint = "a proxy you run keeps serving" if router != "nginx" else "the nginx router has no attach mode"
    assert hint in last_log


async def test_an_invalid_rollout_file_stops_the_daemon_with_the_field(tmp_path: Path) -> None:
    config = tmp_path / "rollout.yaml"
    config.write_text(
        "apiVersion: meshshift.io/v1alpha1\nkind: StandaloneRollout\nmetadata: {name: shop}\n"
        "spec:\n  router: {envoy: {listen: '127.0.0.1:1'}}\n  stable: {endpoints: ['127.0.0.1:2']}\n"
        "  canary: {endpoints: ['127.0.0.1:3']}\n  steps: [{setWeight: 120}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        MESHSHIFT, "run", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert f"meshshift: {config}: spec.steps[0].setWeight" in stderr.decode()
    assert stderr.decode().count("spec.steps[0].setWeight") == 1  # said once, not logged and printed
    assert not (tmp_path / ".meshshift").exists()  # no proxy was started


async def test_the_daemon_stops_when_its_proxy_dies(apps: Apps, tmp_path: Path) -> None:
    config = tmp_path / "rollout.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "meshshift.io/v1alpha1",
                "kind": "StandaloneRollout",
                "metadata": {"name": "shop"},
                "spec": {
                    "router": {"envoy": {"listen": f"127.0.0.1:{free_port()}"}},
                    "stable": {"endpoints": [apps.stable.endpoint]},
                    "canary": {"endpoints": [apps.stable.endpoint]},  # nothing to roll out
                },
            }
        )
    )
    daemon = Daemon(config, f"127.0.0.1:{free_port()}", "token")
    await daemon.start()
    proxy = read_pid(tmp_path / ".meshshift" / "shop" / "envoy" / "envoy.pid")
    assert proxy is not None
    os.kill(proxy, signal.SIGKILL)
    assert daemon.process is not None and daemon.process.process is not None
    code = await asyncio.wait_for(daemon.process.process.wait(), 30)
    assert code == 1
    assert "envoy exited" in daemon.process.output_tail(5)
