"""`meshshift get rollout` and the control verbs against a daemon's HTTP API (--server)."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable

import pytest
import yaml
from rich.cells import cell_len

from meshshift.cli.rollouts import render_text
from meshshift.observe.api import rollout_view
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import (
    AnalysisTemplate,
)
from tests.observe.conftest import TOKEN
from tests.support.command import exit_code_after
from tests.support.inmemory import (
    PAUSING_SPEC,
    Harness,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)

SPEC = PAUSING_SPEC
ALPHA = "\N{GREEK SMALL LETTER ALPHA}"  # Argo's AnalysisRun mark
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
async def paused(registry: RolloutRegistry) -> AsyncIterator[Harness]:
    values = iter([[0.97], [0.42], [0.99]])  # one failed measurement: the run shows ✔ 2,✖ 1
    template = tolerant(success_rate_template(interval="50ms", count=3))
    harness = make_controller(registry, SPEC, templates=[template], answer=lambda m: next(values))
    async with running(harness):
        await release_until_paused(harness, 3)
        yield harness


def tolerant(template: AnalysisTemplate) -> AnalysisTemplate:
    """The template with failureLimit 1, so one failed measurement does not fail the run."""
    metrics = tuple(dataclasses.replace(m, failure_limit=1) for m in template.metrics)
    raw = tuple({**raw, "failureLimit": 1} for raw in template.raw_metrics)
    return dataclasses.replace(template, metrics=metrics, raw_metrics=raw)


def columns(header: str, line: str) -> list[str]:
    """A table line cut at the header's column starts."""
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return [line[start:end].strip() for start, end in zip(starts, ends, strict=True)]


async def meshshift(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_the_text_block_and_tree(registry: RolloutRegistry) -> None:
    """Rendering alone, from a view of a paused rollout (see the live tests below)."""
    view = {
        "namespace": "default",
        "name": "myapp",
        "phase": "Paused",
        "message": "step 4/6: paused until promoted",
        "pauseReason": "CanaryPauseStep",
        "step": {"current": 4, "total": 6, "label": "4/6"},
        "weights": {
            "desired": 20,
            "applied": {"envoy": 20},
            "actual": 20,
            "appliedAgree": True,
            "setWeight": 20,
        },
        "revisions": {"stable": "v1", "canary": "v2"},
        "images": {"stable": ["example/app:v1"], "canary": ["example/app:v2"]},
        "headerRoutes": [],
        "replicas": {"desired": 4, "updated": 4, "available": 8, "unavailable": 0},
        "rolloutStartedAt": 1000.0,
        "analysisRuns": [
            {
                "name": "v2-1-step2",
                "phase": "Successful",
                "startedAt": 1001.0,
                "superseded": False,
                "metrics": [{"counts": {"successful": 2, "failed": 1, "error": 0, "inconclusive": 0}}],
            }
        ],
    }
    text = render_text(view, width=80, now=1300.0)
    assert text.splitlines()[:13] == [
        "Name:            myapp",
        "Namespace:       default",
        "Status:          ॥ Paused",
        "Message:         CanaryPauseStep (step 4/6: paused until promoted)",
        "Strategy:        Canary",
        "  Step:          4/6",
        "  SetWeight:     20",
        "  ActualWeight:  20",
        "Images:          example/app:v1 (stable)",
        "                 example/app:v2 (canary)",
        "Replicas:",
        "  Desired:       4",
        "  Updated:       4",
    ]
    tree = text.split("\n\n")[1].splitlines()
    assert [columns(tree[0], line) for line in tree] == [
        ["NAME", "KIND", "STATUS", "AGE", "INFO"],
        ["⟳ myapp", "Rollout", "॥ Paused", "5m", ""],
        ["├──# revision:v2", "", "", "", ""],
        ["│  ├──⧉ v2", "Revision", "✔ Healthy", "", "canary"],
        [f"│  └──{ALPHA} v2-1-step2", "AnalysisRun", "✔ Successful", "4m", "✔ 2,✖ 1"],
        ["└──# revision:v1", "", "", "", ""],
        ["└──⧉ v1", "Revision", "✔ Healthy", "", "stable"],  # under the last revision
    ]
    # Long names are cut to fit, never wrapped.
    long = dict(view, name="a-rollout-with-a-name-far-too-long-for-an-eighty-column-terminal-and-then-some")
    for width in (80, 60):
        assert all(
            cell_len(line) <= width for line in render_text(long, width=width, now=1300.0).splitlines()
        )


async def test_get_through_the_api(daemon: str, paused: Harness) -> None:
    code, out, err = await meshshift("get", "rollout", "myapp", "--server", daemon)
    assert code == 0, err
    lines = out.splitlines()
    assert "Status:          ॥ Paused" in lines
    assert "  Step:          4/6" in lines
    assert "  SetWeight:     20" in lines
    assert "  ActualWeight:  20" in lines
    assert "HeaderRoutes:    canary-by-header (X-Canary exact 'true')" in lines
    header = next(line for line in lines if line.startswith("NAME "))
    run_line = next(line for line in lines if "AnalysisRun" in line)
    assert columns(header, run_line)[1:3] == ["AnalysisRun", "✔ Successful"]
    assert columns(header, run_line)[4] == "✔ 2,✖ 1"
    assert all(cell_len(line) <= 80 for line in lines)

    code, out, _ = await meshshift(
        "get", "rollout", "myapp", "-n", "default", "--server", daemon, "-o", "json"
    )
    assert code == 0
    view = json.loads(out)
    assert view == rollout_view(paused.registry.get(paused.key)) | {"updatedAt": view["updatedAt"]}
    code, out, _ = await meshshift("get", "ro", "myapp", "--server", daemon, "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["step"]["label"] == "4/6"

    code, out, _ = await meshshift("get", "rollouts", "--server", daemon)
    assert code == 0
    listing = out.splitlines()
    assert columns(listing[0], listing[1]) == ["myapp", "default", "॥ Paused", "4/6", "20", "20"]

    code, _, err = await meshshift("get", "rollout", "nope", "--server", daemon)
    assert code == 1 and "no rollout named 'nope'" in err
    code, _, err = await meshshift("get", "rollout", "--server", daemon)
    assert code == 1 and "a rollout name is needed" in err
    code, _, err = await meshshift("get", "rollout", "myapp", "--server", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach meshshift at http://127.0.0.1:9" in err


async def test_control_through_the_api(daemon: str, paused: Harness) -> None:
    code, _, err = await meshshift("promote", "myapp", "--server", daemon)
    assert code == 1 and "--token (or MESHSHIFT_TOKEN) is needed" in err
    code, _, err = await meshshift("promote", "myapp", "--server", daemon, "--token", "wrong")
    assert code == 1 and "promote refused (403): wrong token" in err
    assert paused.state_is(step_index=3, phase="Paused")

    code, out, err = await meshshift("promote", "myapp", "--server", daemon, env={"MESHSHIFT_TOKEN": TOKEN})
    assert code == 0, err
    assert out.strip() == "rollout 'myapp' promoted: resumed after the pause at step 4/6"
    await paused.wait_for(lambda: paused.state_is(step_index=5, phase="Paused"), what="the next pause")

    code, _, err = await meshshift("retry", "myapp", "--server", daemon, "--token", TOKEN)
    assert code == 1 and err.startswith("rollout 'myapp' not retried: nothing to retry")

    code, out, _ = await meshshift("promote", "myapp", "--full", "--server", daemon, "--token", TOKEN)
    assert code == 0 and out.startswith("rollout 'myapp' fully promoted: promoting now")
    await paused.wait_for(lambda: paused.state_is(phase="Healthy", stable_revision="v2"), what="promotion")


async def test_abort_and_undo_through_the_api(daemon: str, paused: Harness) -> None:
    code, out, _ = await meshshift("undo", "myapp", "--server", daemon, "--token", TOKEN)
    assert code == 0 and out.startswith("rollout 'myapp' undone: undone: traffic is back on the stable")
    assert paused.state_is(phase="Degraded") and paused.router.weight == 0
    code, _, err = await meshshift("abort", "myapp", "--server", daemon, "--token", TOKEN)
    assert code == 1 and "not aborted: nothing to abort" in err
    code, out, _ = await meshshift("retry", "myapp", "--server", daemon, "--token", TOKEN)
    assert code == 0 and "restarting the rollout at step 1" in out


async def test_get_watch_in_an_80_column_terminal(daemon: str, paused: Harness) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        "get",
        "rollout",
        "myapp",
        "--watch",
        "--server",
        daemon,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm"},
    )
    os.close(follower)
    screen = Terminal(leader)
    try:
        first = await screen.wait_for_frame(lambda frame: "  Step:          4/6" in frame)
        assert "Status:          ॥ Paused" in first
        promote = await meshshift("promote", "myapp", "--server", daemon, "--token", TOKEN)
        assert promote[0] == 0
        second = await screen.wait_for_frame(lambda frame: "  Step:          6/6" in frame)
        assert "  ActualWeight:  50" in second
        assert "CanaryPauseStep (step 6/6: paused until promoted)" in second
    finally:
        process.send_signal(signal.SIGINT)
        code = await exit_code_after(process, 30)
        os.close(leader)
    assert code == 130  # Ctrl-C, as a shell counts it
    assert screen.frames >= 2
    wide = [line for line in screen.lines() if cell_len(line) > 80]
    assert wide == [], wide


class Terminal:
    """Reads what a program writes to its pseudo-terminal, frame by frame (a frame starts with a clear)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.frames = 0

    async def wait_for_frame(self, predicate: Callable[[str], bool], hang_guard: float = 30.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hang_guard
        while True:
            frames = self.text.split("\x1b[H\x1b[2J")
            self.frames = len(frames) - 1
            complete = frames[1:-1] if len(frames) > 2 else []
            if len(frames) > 1 and self.text.endswith("\n"):
                complete = frames[1:]
            for frame in reversed(complete):
                clean = ANSI.sub("", frame).replace("\r\n", "\n")
                if predicate(clean):
                    return clean
            assert loop.time() < deadline, f"no matching frame in:\n{ANSI.sub('', self.text)[-2000:]}"
            await self.read(deadline - loop.time())

    async def read(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self.fd, ready.set)
        try:
            await asyncio.wait_for(ready.wait(), max(0.05, within))
            self.text += os.read(self.fd, 65536).decode(errors="replace")
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(self.fd)

    def lines(self) -> list[str]:
        return [ANSI.sub("", line) for line in self.text.replace("\r\n", "\n").split("\n")]


async def test_get_says_why_an_analysis_failed(registry: RolloutRegistry, daemon: str) -> None:
    """The metric, its value, its condition and the limit it crossed, as the dashboard shows them."""
    harness = make_controller(
        registry,
        SPEC,
        templates=[success_rate_template(interval="50ms", count=2)],
        answer=lambda metric: [0.42],
    )
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
        harness.workloads.release("v2")
        await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        code, out, err = await meshshift("get", "rollout", "myapp", "--server", daemon)
    assert code == 0, err
    section = out.split("Analysis:\n", 1)[1].splitlines()
    assert section[0] == f"  {ALPHA} v2-1-step2 (step 2): ✖ Failed"
    why = " ".join(line.strip() for line in section[1:3])  # wrapped at 80 columns, not cut
    assert why == (
        "✖ success-rate = 0.42, successCondition: result[0] >= 0.95; failed (1) > failureLimit (0)"
    )
    assert all(cell_len(line) <= 80 for line in out.splitlines())
