"""The alias bomb, in an annotation and in a rollout file, against a real daemon process (12.6).

Acceptance: /healthz keeps answering, the daemon's peak RSS grows by less than 50 MB, the
bad Deployment gets an InvalidSpec Event naming the bound, and the other rollouts go on.
(`bench/chaos.py` prints how the other rollouts' step timing compares with a quiet run.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from tests.kube.harness import HANG_GUARD, KubeEnv, world
from tests.kube.scenarios import STATE, deployment, given, promote, release_and_pause, wait_state
from tests.reliability.chaos import MESHSHIFT, Daemon, promoted, read_state, rollout_document, running_apps
from tests.reliability.hostile import alias_bomb

pytestmark = pytest.mark.e2e
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
BOMB = "bomb"


def memory(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of `pid`, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


@dataclass
class HealthProbe:
    """GETs /healthz every 50 ms while it runs; counts what did not answer 200 within 5 s."""

    url: str
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    slowest: float = 0.0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HealthProbe]:
        task = asyncio.create_task(self._probe())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                started = time.monotonic()
                try:
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            self.answered += 1
                        else:
                            self.failed.append(f"HTTP {response.status}")
                except (aiohttp.ClientError, TimeoutError) as error:
                    self.failed.append(repr(error))
                self.slowest = max(self.slowest, time.monotonic() - started)
                await asyncio.sleep(0.05)


def bombed(levels: int = 6) -> dict[str, str]:
    return {STATE: "true", "meshshift.io/router": "istio", "meshshift.io/steps": alias_bomb(levels)}


async def test_an_alias_bomb_in_an_annotation_stops_nothing(kube_env: KubeEnv, tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    argv = [MESHSHIFT, "run", "--kubeconfig", str(kube_env.kubeconfig), "-n", kube_env.namespace]
    argv += ["--listen", listen, "--no-leader-elect", "--log-format", "json"]
    env = {"MESHSHIFT_REQUEST_TIMEOUT": "2"}
    async with world(kube_env) as w:
        await given(w, "istio")
        daemon = ManagedProcess("meshshift", argv, tmp_path / "daemon.log", env=env)
        await daemon.start()
        try:
            await wait_until_http_ready(f"http://{listen}/readyz", process=daemon, wait_seconds=HANG_GUARD)
            assert daemon.process is not None
            pid = daemon.process.pid
            await wait_state(w, "initialization", phase="Healthy", stage="Idle")
            baseline, _ = memory(pid)
            async with HealthProbe(f"http://{listen}").running() as probe:
                await w.cluster.create_deployment(deployment(BOMB, annotations=bombed(6)))
                invalid = await w.observer.wait_for(
                    lambda o: next((e for e in o.events(BOMB) if e["reason"] == "InvalidSpec"), None),
                    what="the bomb's InvalidSpec Event",
                )
                assert "more than 20000 values once its aliases are expanded" in invalid["message"]
                # The other rollout goes on while the bomb is edited again and again.
                release = asyncio.create_task(release_and_pause(w))
                for levels in (7, 6, 8, 7, 9):
                    await w.cluster.annotate(BOMB, **{"meshshift.io/steps": alias_bomb(levels)})
                    await asyncio.sleep(0.2)
                await release
                await promote(w, "1")
                state = await wait_state(
                    w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None
                )
                assert state["history"][-1]["outcome"] == "Promoted"
            _, peak = memory(pid)
            assert daemon.running, daemon.output_tail()
        finally:
            await daemon.stop()
    assert probe.failed == [] and probe.answered > 10
    assert peak - baseline < RSS_GROWTH_LIMIT, f"peak RSS grew by {(peak - baseline) / 2**20:.1f} MB"
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


async def test_an_alias_bomb_in_the_rollout_file_stops_nothing(tmp_path: Path) -> None:
    async with running_apps() as apps:
        config = tmp_path / "rollout.yaml"
        document = rollout_document("envoy", f"127.0.0.1:{free_port()}", apps)
        document["spec"]["steps"] = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 60}]
        good = yaml.safe_dump(document)

        # At start: refused at once, with the bound named.
        config.write_text(good + "---\n" + alias_bomb(7))
        process = await asyncio.create_subprocess_exec(
            MESHSHIFT, "run", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), HANG_GUARD)
        assert process.returncode == 1
        assert (
            stderr.decode()
            .strip()
            .splitlines()[-1]
            .endswith("more than 20000 values once its aliases are expanded (meshshift's limit)")
        )

        # While running: the bomb changes nothing, and the fixed file goes on.
        config.write_text(good)
        daemon = Daemon(config)
        await daemon.start()
        try:
            assert daemon.pid is not None
            baseline, _ = memory(daemon.pid)
            async with HealthProbe(f"http://{daemon.listen}").running() as probe:
                for levels in (6, 7, 8):
                    config.write_text(good + "---\n" + alias_bomb(levels))
                    await asyncio.sleep(1.5)  # the file is re-read every second
                status, view = await daemon.api("GET", "/rollouts/standalone/shop")
                assert status == 200 and "more than 20000 values" in view["specError"]
                _, peak = memory(daemon.pid)
                config.write_text(good + "# fixed\n")
                async with asyncio.timeout(HANG_GUARD):
                    while not promoted(read_state(tmp_path / "shop.state.json")):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        finally:
            await daemon.terminate()
    assert probe.failed == [] and probe.answered > 10
    assert peak - baseline < RSS_GROWTH_LIMIT, f"peak RSS grew by {(peak - baseline) / 2**20:.1f} MB"
