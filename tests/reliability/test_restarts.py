"""Traffic stays right across daemon restarts and proxy crashes (issue 12.2).

Real daemons (`meshshift run --config` subprocesses), real Envoy and NGINX, real requests
counted per version. The long version of the kill test is `bench/chaos.py`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from meshshift.demo.load import NO_ANSWER, count_versions
from meshshift.processes import free_port, group_members
from meshshift.routers.proxy_process import orphans_of, process_alive, read_pid
from tests.reliability.chaos import (
    HEADER,
    QA_ROUTE,
    Apps,
    Daemon,
    chaos_run,
    read_state,
    rollout_document,
    running_apps,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def apps() -> AsyncIterator[Apps]:
    async with running_apps() as started:
        yield started


def share(counts: Counter[str]) -> float:
    return 100.0 * counts["canary"] / max(1, sum(counts.values()))


@pytest.mark.parametrize("router", ["envoy", "nginx"])
async def test_kill_9_at_random_moments_misroutes_no_request(router: str, apps: Apps, tmp_path: Path) -> None:
    outcome = await chaos_run(router, apps, tmp_path, kills=4, rng=random.Random(router))
    assert outcome.survived, outcome.summary()
    assert outcome.misrouted == 0
    assert outcome.around_restarts["header:canary"] > 0  # header requests were sent around restarts
    assert outcome.around_restarts["header:stable"] == 0


def write_rollout(workdir: Path, router: str, apps: Apps, steps: list[dict[str, Any]]) -> tuple[Path, str]:
    listen = f"127.0.0.1:{free_port()}"
    document = rollout_document(router, listen, apps)
    document["spec"]["steps"] = steps
    config = workdir / "rollout.yaml"
    config.write_text(yaml.safe_dump(document))
    return config, f"http://{listen}/"


PAUSED_AT_40: list[dict[str, Any]] = [
    {"setHeaderRoute": QA_ROUTE},
    {"setWeight": 40},
    {"pause": {}},
]


async def wait_paused(daemon: Daemon) -> None:
    for _ in range(600):
        status, view = await daemon.api("GET", "/rollouts/standalone/shop")
        if status == 200 and view["phase"] == "Paused" and view["weights"]["applied"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never paused: {view}")


async def assert_serves_paused_split(url: str) -> None:
    assert await count_versions(url, 100, headers=HEADER) == Counter(canary=100)
    assert abs(share(await count_versions(url, 1000)) - 40) <= 7


async def test_a_dead_nginx_master_takes_its_workers_with_it(apps: Apps, tmp_path: Path) -> None:
    config, url = write_rollout(tmp_path, "nginx", apps, PAUSED_AT_40)
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_paused(daemon)
        master = read_pid(tmp_path / "proxy" / "nginx.pid")
        assert master is not None and group_members(master)
        os.kill(master, signal.SIGKILL)
        # The daemon notices, stops what is left of the proxy's group, and exits with an error.
        assert daemon.process is not None and daemon.process.process is not None
        code = await asyncio.wait_for(daemon.process.process.wait(), 30)
        assert code == 1, daemon.output()
        assert group_members(master) == []  # no orphaned worker keeps serving the old split
        assert await count_versions(url, 20) == Counter({NO_ANSWER: 20})

        await daemon.start()  # whoever restarts it gets a proxy serving the state's routes
        await assert_serves_paused_split(url)

        # The same when the master was adopted from an earlier daemon (not our child).
        await daemon.kill_hard()
        await daemon.start()
        adopted = read_pid(tmp_path / "proxy" / "nginx.pid")
        assert adopted is not None and adopted != master and group_members(adopted)
        os.kill(adopted, signal.SIGKILL)
        assert daemon.process is not None and daemon.process.process is not None
        assert await asyncio.wait_for(daemon.process.process.wait(), 30) == 1
        assert group_members(adopted) == []
    finally:
        await daemon.terminate()


async def test_on_start_the_orphans_of_our_earlier_proxy_are_stopped(apps: Apps, tmp_path: Path) -> None:
    config, url = write_rollout(tmp_path, "nginx", apps, PAUSED_AT_40)
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_paused(daemon)
        await daemon.kill_hard()
        master = read_pid(tmp_path / "proxy" / "nginx.pid")
        assert master is not None
        os.kill(master, signal.SIGKILL)  # both gone: the workers are orphans, still serving
        await asyncio.sleep(0.2)
        workers = group_members(master)
        assert workers and orphans_of(tmp_path / "proxy" / "nginx.pid", tmp_path / "proxy") == workers
        assert NO_ANSWER not in await count_versions(url, 20)

        await daemon.start()  # binds the ports the orphans held: they were stopped first
        assert group_members(master) == []
        await assert_serves_paused_split(url)
    finally:
        await daemon.terminate()


async def test_orphans_are_only_processes_holding_files_of_the_proxy(tmp_path: Path) -> None:
    root = tmp_path / "proxy"
    root.mkdir()
    outside = tmp_path / "outside.log"
    # A group leader that exits at once, leaving two children: one writing into the proxy's
    # directory, one elsewhere (the same process name).
    script = f"sleep 300 > {root / 'worker.log'} & sleep 300 > {outside} & echo $$ > {root / 'leader.pid'}"
    leader = await asyncio.create_subprocess_exec("sh", "-c", script, start_new_session=True)
    await leader.wait()
    try:
        pgid = read_pid(root / "leader.pid")
        assert pgid == leader.pid and not process_alive(pgid)
        for _ in range(100):
            if len(group_members(pgid)) == 2:
                break
            await asyncio.sleep(0.02)
        members = group_members(pgid)
        assert len(members) == 2
        orphans = orphans_of(root / "leader.pid", root)
        assert len(orphans) == 1
        assert os.readlink(f"/proc/{orphans[0]}/fd/1") == str(root / "worker.log")
        assert orphans_of(tmp_path / "missing.pid", root) == []
    finally:
        for pid in group_members(leader.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("router", ["envoy", "nginx"])
async def test_a_restart_from_another_directory_adopts_the_same_proxy(
    router: str, apps: Apps, tmp_path: Path
) -> None:
    config, url = write_rollout(tmp_path, router, apps, PAUSED_AT_40)  # configDir: proxy (relative)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_paused(daemon)
        pid_file = tmp_path / "proxy" / f"{router}.pid"
        proxy = read_pid(pid_file)
        assert proxy is not None
        await daemon.kill_hard()
        await daemon.start(cwd=elsewhere)
        await wait_paused(daemon)
        assert read_pid(pid_file) == proxy  # adopted: the same proxy, found through the rollout file
        assert not (elsewhere / "proxy").exists()
        state = read_state(tmp_path / "shop.state.json")
        assert state is not None and state["rollout"]["desiredWeight"] == 40
        await assert_serves_paused_split(url)
    finally:
        await daemon.terminate()
    assert not process_alive(proxy)
