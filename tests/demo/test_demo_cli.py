"""`meshshift demo` as a user runs it: a subprocess, real children, Ctrl-C, full scenarios.

Order matters in this module: the stop tests come first, so the full runs after them show
that a second demo run right after an interrupted one works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from meshshift.processes import ManagedProcess, free_port, running
from meshshift.routers.proxy_process import process_alive, process_command_line
from tests.support.receivers import receiver

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
        # The demo keeps its working directory: under the test's tmp_path, which pytest removes.
        self.env = {**os.environ, "TMPDIR": str(tmp_path), **(env or {})}
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
    # Once promoted, the new revision serves everything, and the progress line says so.
    assert re.search(r"Healthy .*weight desired 100% applied 100%", output), output


async def test_nginx_demo_rolls_back_bad_errors(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--scenario", "bad-errors", "--router", "nginx")
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Aborted, as expected" in output
    assert re.search(r"failed requests:    [1-9]\d* \(canary \d+\)", output)
    assert re.search(r"after the decision: stable \d+\n", output)
    assert re.search(r"Degraded .*weight desired 0% applied 0%", output), output


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
    # One failed canary request is never enough: the evidence one can give is at most
    # 1 / theta0, about 10 at a 10 % split. Two are enough when the canary's share of the looks
    # they fell in was under about 7 % (0.5 / theta0**2 >= 100), as happens by chance.
    assert int(found.group(1)) >= 2
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


async def test_a_busy_listen_port_is_said_with_a_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = DemoRun(tmp_path, "--scenario", "healthy")
        demo.argv[demo.argv.index("--listen") + 1] = f"127.0.0.1:{port}"
        await demo.start()
        assert await demo.wait(within=30) == 1, demo.output
    output = demo.output
    assert f"--listen 127.0.0.1:{port}: port {port} is in use" in output
    assert re.search(r"pick a free port: --listen 127\.0\.0\.1:\d+", output)
    assert "meshshift.demo.app" not in " ".join(descendants(os.getpid()).values())


ROUTING_KEY = "R0ut1ngKeyForDemo0123456789abcde"  # 32 characters, as PagerDuty's integration keys


def kept_workdir(output: str) -> Path:
    found = re.search(r"working directory kept: (\S+)", output)
    assert found is not None, output
    return Path(found.group(1))


async def test_pagerduty_hears_the_bad_demo_and_the_healthy_rollout_after_it(tmp_path: Path) -> None:
    """`meshshift demo --scenario bad-errors` with MESHSHIFT_PAGERDUTY_ROUTING_KEY and _EVENTS_URL
    triggers an incident; `meshshift run` on the rollout.yaml the demo kept, with a healthy canary
    and the same variables, resolves it once promoted. The key appears nowhere but in the events."""
    async with receiver(pagerduty=True) as pd:
        env = {
            "MESHSHIFT_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "MESHSHIFT_PAGERDUTY_EVENTS_URL": pd.url,
        }
        demo = DemoRun(tmp_path, "--scenario", "bad-errors", "--router", "envoy", env=env)
        await demo.start()
        assert await demo.wait() == 0, demo.output
        assert "outcome:            Aborted, as expected" in demo.output
        assert pd.refused == [] and pd.received, demo.output
        triggers = [e for e in pd.received if e["event_action"] == "trigger"]
        (dedup,) = {e["dedup_key"] for e in triggers}
        assert re.fullmatch(r"meshshift/standalone/demo/ep-[0-9a-f]{10}", dedup)
        payload = triggers[0]["payload"]
        assert payload["severity"] == "error"
        assert "rollout standalone/demo revision ep-" in payload["summary"]
        assert re.search(
            r"success-rate = 0\.\d+, successCondition: result\[0\] >= 0\.95; failed", payload["summary"]
        )
        (failed,) = [f for f in payload["custom_details"]["failedMetrics"] if f["metric"] == "success-rate"]
        assert failed["measurements"] and failed["limit"].startswith("failed (")

        workdir = kept_workdir(demo.output)
        rollout_file = workdir / "rollout.yaml"
        documents = list(yaml.safe_load_all(rollout_file.read_text()))
        spec = documents[0]["spec"]
        stable_port = int(spec["stable"]["endpoints"][0].rsplit(":", 1)[1])
        canary_port = free_port()
        spec["canary"]["endpoints"] = [f"127.0.0.1:{canary_port}"]  # a new, healthy canary
        spec["steps"] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
        rollout_file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        apps = [demo_app("stable", stable_port, tmp_path), demo_app("canary", canary_port, tmp_path)]
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(running(app, ready_url=f"http://{app_address(app)}/healthz"))
            daemon = ManagedProcess(
                "meshshift-run",
                [MESHSHIFT, "run", "--config", str(rollout_file), "--listen", f"127.0.0.1:{free_port()}"],
                tmp_path / "run.log",
                env=env,
            )
            await stack.enter_async_context(running(daemon))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while "resolve" not in pd.events():
                daemon.check_alive()
                assert loop.time() < deadline, daemon.output_tail(40)
                await asyncio.sleep(0.2)
        resolve = pd.received[-1]
        assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", dedup)
        assert pd.refused == []
    for path in (
        workdir / "meshshift.log",
        workdir / "demo.state.json",
        tmp_path / "run.log",
        demo.output_path,
    ):
        assert ROUTING_KEY not in path.read_text(errors="replace"), f"the routing key is in {path}"


def demo_app(version: str, port: int, where: Path) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "meshshift.demo.app",
        f"--version={version}",
        "--service=demo",
        f"--port={port}",
    ]
    return ManagedProcess(f"app-{version}-{port}", argv, where / f"app-{version}.log")


def app_address(app: ManagedProcess) -> str:
    port = next(a.removeprefix("--port=") for a in app.argv if a.startswith("--port="))
    return f"127.0.0.1:{port}"
