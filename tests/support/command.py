"""The `meshshift` command run in its own process, as a user or a script runs it."""

from __future__ import annotations

import asyncio
import os
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
