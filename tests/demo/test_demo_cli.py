"""`meshshift demo` as a user runs it: a subprocess, real children, Ctrl-C, full scenarios.

Order matters in this module: the stop tests come first, so the full runs after them show
that a second demo run right after an interrupted one works.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from meshshift.processes import free_port
from meshshift.routers.proxy_process import process_alive, process_command_line

pytestmark = pytest.mark.e2e

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")


def descendants(pid: int) -> dict[int, str]:
    """Every live process under `pid` (children, grandchildren...), with its command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = " ".join(process_command_line(child))
                frontier.append(child)
    return found


class DemoRun:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.listen = f"127.0.0.1:{free_port()}"
        self.argv = [MESHSHIFT, "demo", "--listen", self.listen, *args]
        self.output_path = tmp_path / "demo-output.txt"
        self.env = {**os.environ, **(env or {})}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.output_path.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, stdout=output, stderr=asyncio.subprocess.STDOUT, env=self.env
            )

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    async def wait_for_output(self, pattern: str, within: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not re.search(pattern, self.output):
            assert self.process is not None
            if self.process.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"no {pattern!r} in the demo's output:\n{self.output}")
            await asyncio.sleep(0.1)

    async def wait(self, within: float = 150.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_signal_stops_every_child(stop_signal: signal.Signals, tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--scenario", "healthy", "--router", "envoy")
    await demo.start()
    assert demo.process is not None
    try:
        await demo.wait_for_output(r"step \d+/13")  # apps, Prometheus, Envoy and the rollout all running
        children = descendants(demo.process.pid)
        commands = " ".join(children.values())
        assert "meshshift.demo.app --version=stable" in commands
        assert "meshshift.demo.app --version=canary" in commands
        assert "envoy" in commands and "prometheus" in commands
        demo.process.send_signal(stop_signal)
        code = await demo.wait(within=60)
    finally:
        if demo.process.returncode is None:
            demo.process.kill()
    assert code == 130, demo.output
    assert "interrupted: every process the demo started is stopped" in demo.output
    assert [pid for pid in children if process_alive(pid)] == []


async def test_healthy_demo_promotes_and_serves_metrics(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--scenario", "healthy", "--router", "envoy")
    await demo.start()
    await demo.wait_for_output(r"step \d+/13")
    async with aiohttp.ClientSession() as session, session.get(f"http://{demo.listen}/metrics") as response:
        metrics = await response.text()
    assert 'rollout_info{namespace="standalone",name="demo"' in metrics
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Promoted, as expected" in output
    assert re.search(r"time to decision:   \d+\.\d s after the first canary request", output)
    assert re.search(r"X-Canary: true:     canary \d+\n", output)  # every header request reached the canary
    assert re.search(r"after the decision: canary \d+\n", output)
    assert "failed requests:    0" in output


async def test_nginx_demo_rolls_back_bad_errors(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--scenario", "bad-errors", "--router", "nginx")
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Aborted, as expected" in output
    assert re.search(r"failed requests:    [1-9]\d* \(canary \d+\)", output)
    assert re.search(r"after the decision: stable \d+\n", output)


async def test_without_prometheus_envoy_admin_measures(tmp_path: Path) -> None:
    demo = DemoRun(
        tmp_path, "--scenario", "bad-latency", "--router", "envoy", env={"MESHSHIFT_DEMO_NO_PROMETHEUS": "1"}
    )
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "no Prometheus (MESHSHIFT_DEMO_NO_PROMETHEUS is set)" in output
    assert "outcome:            Aborted, as expected" in output
    assert "analysis metrics:   Envoy's admin endpoint" in output
    assert re.search(r"after the decision: stable \d+\n", output)


async def test_the_sequential_judge_rolls_back_and_shows_its_evidence(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--scenario", "bad-errors", "--router", "envoy", "--judge", "sequential")
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "analysis by the sequential judge" in output
    assert "outcome:            Aborted, as expected" in output
    assert "the apps' counters read raw by the sequential judge" in output
    found = re.search(
        r"judge at decision:  sequential-error-rate \(Failed\): worse after \d+\.\d s; "
        r"canary (\d+) errors in (\d+) \(.*%\), stable 0 errors in \d+ \(0%\); "
        r"evidence (\S+) of 100 needed \(alpha 0.01\)",
        output,
    )
    assert found is not None, output
    assert int(found.group(1)) >= 3  # at 10 % weight, three failed canary requests at the least
    assert found.group(3) == "inf" or float(found.group(3)) >= 100
    assert re.search(r"sequential-latency \(\w+\): undecided", output)  # its latency is fine
    assert re.search(r"after the decision: stable \d+\n", output)


@pytest.mark.parametrize(
    ("scenario", "outcome", "after"),
    [
        ("healthy", "Promoted", "canary"),
        ("bad-errors", "Aborted", "stable"),
        ("bad-latency", "Aborted", "stable"),
    ],
)
async def test_traefik_demo_reaches_each_scenarios_outcome(
    scenario: str, outcome: str, after: str, tmp_path: Path
) -> None:
    demo = DemoRun(tmp_path, "--scenario", scenario, "--router", "traefik")
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "proxy (traefik):" in output and "traefik api:" in output
    assert f"outcome:            {outcome}, as expected" in output
    assert re.search(r"X-Canary: true:     canary \d+\n", output)  # every header request reached the canary
    assert re.search(rf"after the decision: {after} \d+\n", output)
    if scenario != "bad-errors":
        assert "failed requests:    0" in output
