"""kubectl-argo-rollouts' verbs and habits: list, status, pause, version, --server host:port,
MESHSHIFT_SERVER / MESHSHIFT_TOKEN, help on every flag; against a real daemon's HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from meshshift import __version__
from meshshift.cli.main import build_parser
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import Pause, RolloutSpec, SetWeight
from tests.observe.conftest import TOKEN
from tests.observe.test_cli import columns, meshshift, tolerant
from tests.support.command import exit_code_after
from tests.support.inmemory import (
    PAUSING_SPEC,
    STEP_ANALYSIS,
    Harness,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)


def walk(parser: argparse.ArgumentParser, path: str = "meshshift") -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    found.append((f"{path} {name} (the command)", action))
                found += walk(sub, f"{path} {name}")
        else:
            found.append((path, action))
    return found


def test_every_flag_and_argument_has_help() -> None:
    actions = walk(build_parser())
    assert len(actions) > 100  # the whole tree was walked
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, action in actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    commands = {path.split()[1] for path, _ in actions if len(path.split()) > 1}
    assert {"list", "status", "pause", "set", "version", "get", "undo"} <= commands


@pytest.fixture
async def analysing(registry: RolloutRegistry) -> AsyncIterator[Harness]:
    """A rollout at step 2 (an analysis that keeps measuring): Progressing."""
    template = tolerant(success_rate_template(interval="30s", count=100))
    harness = make_controller(registry, PAUSING_SPEC, templates=[template])
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
        harness.workloads.release("v2")
        await harness.wait_for(
            lambda: harness.state_is(step_index=1, phase="Progressing"), what="the analysis step"
        )
        yield harness


async def test_server_without_a_scheme_and_the_environment_defaults(daemon: str, analysing: Harness) -> None:
    host_port = daemon.removeprefix("http://")
    code, out, err = await meshshift("get", "rollout", "myapp", "--server", host_port)
    assert code == 0, err
    assert "Status:          ◌ Progressing" in out
    env = {"MESHSHIFT_SERVER": host_port, "MESHSHIFT_TOKEN": TOKEN}
    code, out, err = await meshshift("pause", "myapp", env=env)
    assert code == 0, err
    assert out.strip() == "rollout 'myapp' paused: paused at step 2/6; promote resumes"
    assert analysing.state_is(phase="Paused", step_index=1)
    code, out, err = await meshshift("status", "myapp", "--watch=false", env=env)
    assert (code, out.strip()) == (0, "Paused - PausedByUser (step 2/6: manually paused; promote resumes)")
    code, _, err = await meshshift("pause", "myapp", env=env)
    assert code == 1 and "not paused: already paused" in err
    code, out, err = await meshshift("promote", "myapp", env=env)
    assert code == 0 and out.strip() == "rollout 'myapp' promoted: resumed at step 2/6", err
    assert analysing.state_is(phase="Progressing", step_index=1)
    code, _, err = await meshshift("get", "rollout", "myapp", "--server", "127.0.0.1:notaport")
    assert code == 1 and "--server '127.0.0.1:notaport'" in err


async def test_list_rollouts_shows_argos_columns(daemon: str, analysing: Harness) -> None:
    code, out, err = await meshshift("list", "rollouts", "--server", daemon)
    assert code == 0, err
    header, line = out.splitlines()
    assert header.split() == [
        "NAMESPACE", "NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE",
        "AVAILABLE",
    ]  # fmt: skip
    # READY counts the stable's and the canary's available pods against the desired count, as Argo's
    assert columns(header, line) == [
        "default",
        "myapp",
        "Canary",
        "Progressing",
        "2/6",
        "20",
        "8/4",
        "4",
        "4",
        "8",
    ]
    code, out, _ = await meshshift("list", "rollouts", "--server", daemon, "-n", "default")
    assert code == 0 and out.split()[0] == "NAME" and "myapp" in out
    code, out, _ = await meshshift("list", "rollouts", "--server", daemon, "-n", "elsewhere")
    assert (code, out) == (0, "No resources found.\n")


async def status_watch(daemon: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        "status",
        "myapp",
        "--server",
        daemon,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def first_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), 60)).decode().rstrip("\n")


async def line_with(process: asyncio.subprocess.Process, text: str) -> str:
    while text not in (line := await first_line(process)):
        assert line or process.returncode is None, f"the output ended before {text!r}"
    return line


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    reading = asyncio.ensure_future(process.communicate())
    await exit_code_after(process, 60)  # a hang says what the process was doing
    out, err = await asyncio.wait_for(reading, 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_watch_ends_healthy_with_0(daemon: str, registry: RolloutRegistry) -> None:
    harness = make_controller(registry, PAUSING_SPEC, templates=[success_rate_template("50ms", 2)])
    async with running(harness):
        await release_until_paused(harness, 3)
        process = await status_watch(daemon)
        assert await first_line(process) == "Paused - CanaryPauseStep (step 4/6: paused until promoted)"
        code, _, err = await meshshift("promote", "myapp", "--full", "--server", daemon, "--token", TOKEN)
        assert code == 0, err
        code, out, err = await finish(process)
    assert code == 0, err
    assert out.splitlines()[-1] == "Healthy"


async def test_status_watch_ends_degraded_with_1(daemon: str, registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    gate = asyncio.Event()

    def answer(_metric: object) -> list[float]:
        return [0.42] if gate.is_set() else [0.99]

    template = success_rate_template(interval="200ms", count=1000)
    harness = make_controller(registry, spec, templates=[template], answer=answer)
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
        harness.workloads.release("v2")
        await harness.wait_for(lambda: harness.state_is(step_index=1), what="the analysis step")
        process = await status_watch(daemon, "--timeout", "5m")
        assert (await first_line(process)).startswith("Progressing")
        gate.set()  # the canary goes bad: the analysis fails, the rollout aborts
        code, out, err = await finish(process)
    assert code == 1, (out, err)
    assert out.splitlines()[-1].startswith("Degraded - AnalysisRunFailed")
    assert "meshshift: rollout default/myapp is Degraded: AnalysisRunFailed" in err


async def test_status_watch_gives_up_after_the_timeout_with_3(daemon: str, registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), Pause()))
    harness = make_controller(registry, spec)
    async with running(harness):
        await release_until_paused(harness, 1)
        code, out, err = await meshshift("status", "myapp", "--server", daemon, "-t", "1s")
        assert harness.state_is(phase="Paused")
    assert code == 3, (out, err)
    assert out.strip() == "Paused - CanaryPauseStep (step 2/2: paused until promoted)"
    assert "the status watch exceeded --timeout 1s" in err
    code, _, err = await meshshift("status", "myapp", "--server", daemon, "--timeout", "soon")
    assert code == 1 and "--timeout 'soon'" in err


async def test_ctrl_c_on_a_watch_exits_130(daemon: str, analysing: Harness) -> None:
    for verb in (["get", "rollout"], ["status"]):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshshift.cli",
            *verb,
            "myapp",
            "--watch",
            "--server",
            daemon,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await line_with(process, "Progressing")
        process.send_signal(signal.SIGINT)
        code, _, err = await finish(process)
        assert code == 130, err
        assert "Traceback" not in err


async def test_version(daemon: str) -> None:
    code, out, _ = await meshshift("version")
    assert (code, out) == (0, f"meshshift: v{__version__}\n")
    code, out, _ = await meshshift("version", "--short")
    assert (code, out) == (0, f"{__version__}\n")
    code, out, _ = await meshshift("version", env={"MESHSHIFT_SERVER": daemon.removeprefix("http://")})
    assert code == 0 and out.splitlines() == [
        f"meshshift: v{__version__}",
        f"server ({daemon}): v{__version__}",
    ]


def test_set_image_is_for_kubernetes() -> None:
    env = {**os.environ, "MESHSHIFT_SERVER": "127.0.0.1:9"}
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "meshshift.cli", "set", "image", "myapp", "app=example/app:v3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "set image needs Kubernetes" in done.stderr


def test_status_waits_for_a_revision_the_state_does_not_know() -> None:
    from meshshift.cli.rollouts import status_line, status_phase

    view = {"phase": "Healthy", "message": "stable", "revisions": {"stable": "v1", "canary": None}}
    assert status_line({**view, "workloadRevision": "v1"}) == "Healthy"
    assert status_phase({**view, "workloadRevision": "v2"}) == (
        "Progressing",
        "waiting for rollout spec update to be observed",
    )
