"""Child processes we start (Envoy, NGINX, Prometheus, demo apps) and always stop.

Each child gets its own process group, so stopping it also stops anything it forked,
and it is killed if it ignores SIGTERM for too long. The group is stopped even when its
leader is already gone: NGINX workers outlive a master killed with SIGKILL, and keep
serving the old configuration on the old sockets until someone stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

log = structlog.get_logger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, process group id) of a process (Linux /proc), None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name, which is in parentheses and may hold spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return fields[0], int(fields[2])
    except (IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        state = process_state(int(entry.name))
        if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


async def stop_processes(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM `pids`, and SIGKILL those still alive after `grace` seconds; wait until all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 30.0)
        while time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            if not pids:
                return
            await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state[0] not in ("Z", "X")


class ProcessFailedError(RuntimeError):
    """A child exited, or never became ready; carries the tail of its output."""


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    process: asyncio.subprocess.Process | None = field(default=None, init=False)

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        output = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: we stop the whole group
            )
        finally:
            output.close()
        log.debug("started", process=self.name, pid=self.process.pid, argv=" ".join(map(str, self.argv)))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def output_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise ProcessFailedError(
                f"{self.name} exited with code {self.process.returncode}:\n{self.output_tail()}"
            )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the child and everything left in its process group, even if the child is gone."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            log.debug("stopped", process=self.name, code=process.returncode)
        # The group id is the child's pid, which cannot be reused while the group has members.
        orphans = group_members(process.pid)
        if orphans:
            log.warning("stopping what the process left behind", process=self.name, pids=orphans)
            await stop_processes(orphans, grace)


async def wait_until_http_ready(
    url: str, *, process: ManagedProcess | None = None, wait_seconds: float = 30.0, expect_status: int = 200
) -> None:
    """Poll `url` until it answers `expect_status`; fail early if `process` dies."""
    deadline = time.monotonic() + wait_seconds
    last_error = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if process is not None:
                process.check_alive()
            try:
                async with session.get(url) as response:
                    if response.status == expect_status:
                        return
                    last_error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                last_error = str(error) or type(error).__name__
            await asyncio.sleep(0.05)
    tail = f"\n{process.output_tail()}" if process is not None else ""
    raise ProcessFailedError(f"{url} not ready after {wait_seconds:g}s ({last_error}){tail}")


@contextlib.asynccontextmanager
async def running(process: ManagedProcess, *, ready_url: str | None = None) -> AsyncIterator[ManagedProcess]:
    """Start `process`, wait for `ready_url` if given, and stop it when the block ends."""
    await process.start()
    try:
        if ready_url is not None:
            await wait_until_http_ready(ready_url, process=process)
        yield process
    finally:
        await process.stop()
