"""The `meshshift` command run in its own process, as a user or a script runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HANG_GUARD = 300.0  # seconds; only ever reached when something hangs


@dataclass(frozen=True, slots=True)
class CommandResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def meshshift(*args: str | Path, env: dict[str, str] | None = None) -> CommandResult:
    """`meshshift ARGS` (without blocking the event loop, so exporters in it keep ticking)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=HANG_GUARD)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CommandResult(process.returncode, stdout.decode(), stderr.decode())


def signal_state(pid: int) -> str:
    """A process's blocked, ignored and caught signals (/proc), and what Python runs (py-spy)."""
    lines: list[str] = []
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        wanted = ("SigBlk", "SigIgn", "SigCgt", "State")
        lines += [line for line in status.splitlines() if line.startswith(wanted)]
    except OSError as error:
        lines.append(f"/proc/{pid}/status: {error}")
    spy = Path(sys.executable).with_name("py-spy")
    if spy.exists():
        dump = subprocess.run(
            [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30, check=False
        )
        lines.append(dump.stdout.strip() or dump.stderr.strip())
    return "\n".join(lines)


async def exit_code_after(process: asyncio.subprocess.Process, within: float) -> int:
    """The code a process exits with within `within` seconds; else a failure that says why it did not."""
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        state = signal_state(process.pid)
        process.kill()
        await process.wait()
        raise AssertionError(f"pid {process.pid} did not exit within {within} s:\n{state}") from None
