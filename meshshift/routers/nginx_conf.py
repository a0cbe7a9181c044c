"""NGINX as a standalone router: a generated nginx.conf, applied with a checked reload.

The whole configuration is rendered from the desired routes on every change:

- the weighted split is `split_clients "${request_id}"` (a random draw per request);
  0 % is written `* stable;` and 100 % `* canary;` (NGINX rejects `0%`);
- each header-route match entry is one `map` on `$http_<header>`, chained in order, the
  first match sending the request to `canary` (entries of one setHeaderRoute are ORed, as
  Argo Rollouts does on Istio). `exact` and `prefix` become anchored, escaped regexes, so
  matching is case-sensitive as in Envoy and Istio (a plain `map` string ignores case);
  `regex` must match the whole value, as in Envoy;
- with spec.preview.listen, a preview server sends every request to `canary` while a new
  revision is up, and to `stable` otherwise;
- a second, internal server answers `/meshshift/applied` with the generation and the routes
  of the configuration its worker runs: after a reload the router polls it until the new
  generation answers, which proves the new workers serve the new configuration.

A change is written to a fresh temp file, checked with `nginx -t`, renamed over
`nginx.conf` and applied with SIGHUP to the master (what `nginx -s reload` sends). A
configuration NGINX rejects never reaches the master, which keeps serving the old one.

Not expressible here, and refused with a clear error before anything changes: header
names NGINX cannot expose as `$http_*` variables (only letters, digits and `-`), and
setMirrorRoute (NGINX's `mirror` cannot take a percentage of a matched subset of requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from meshshift.files import staged_file
from meshshift.ports import AppliedRoutes
from meshshift.processes import ManagedProcess
from meshshift.routers.listen_ports import ensure_free
from meshshift.routers.proxy_process import (
    OwnedProxy,
    ProxyInstance,
    ProxyProcess,
    child_pids,
    client_url,
    control_address,
    find_nginx,
    last_log_line,
    new_connection_session,
    process_alive,
    process_command_line,
)
from meshshift.routers.proxy_routes import (
    DesiredRoutes,
    ModelRouter,
    RouterApplyError,
    RouterConfigError,
    UpstreamNames,
    whole_value_regex,
)
from meshshift.spec.errors import SpecIssue
from meshshift.spec.model import (
    NginxRouterConfig,
    SetHeaderRoute,
    SetMirrorRoute,
    Step,
    StringMatch,
)

log = structlog.get_logger(__name__)

APPLY_TIMEOUT = 10.0
STATUS_PATH = "/meshshift/applied"
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_STATUS_MARK = re.compile(r"^# meshshift-status: (\S+)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True, slots=True)
class NginxFiles:
    root: Path  # NGINX's prefix

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    @property
    def output(self) -> Path:
        return self.root / "nginx.out"


# --- what NGINX can express ----------------------------------------------------------


def header_name_problem(name: str) -> str | None:
    if not _HEADER_NAME.fullmatch(name):
        return (
            f'the nginx router cannot match header "{name}": NGINX exposes request headers as '
            "$http_* variables, which only name headers made of letters, digits and '-'"
        )
    return None


def value_problem(value: str) -> str | None:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return f"the nginx router cannot match {value!r}: control characters cannot be written in nginx.conf"
    return None


MIRROR_UNSUPPORTED = (
    "the nginx router does not support setMirrorRoute (NGINX's mirror directive cannot "
    "mirror a percentage of the requests a match selects); use the envoy router"
)


def unsupported_steps(steps: Sequence[Step], path: str = "spec.steps") -> list[SpecIssue]:
    """Steps this router cannot carry out, as findings naming the field and the reason."""
    issues = []
    for index, step in enumerate(steps):
        where = f"{path}[{index}]"
        if isinstance(step, SetMirrorRoute) and not step.removes:
            issues.append(SpecIssue(f"{where}.setMirrorRoute", MIRROR_UNSUPPORTED))
        elif isinstance(step, SetHeaderRoute):
            for position, match in enumerate(step.match):
                at_match = f"{where}.setHeaderRoute.match[{position}]"
                problem = header_name_problem(match.header_name)
                if problem:
                    issues.append(SpecIssue(f"{at_match}.headerName", problem))
                problem = value_problem(match.value.value)
                if problem:
                    issues.append(SpecIssue(f"{at_match}.headerValue", problem))
    return issues


# --- rendering -----------------------------------------------------------------------


def quoted(text: str) -> str:
    """A double-quoted nginx.conf string (the parser unescapes \\\\ and \\")."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pcre_literal(text: str) -> str:
    return re.escape(text)


def header_regex(match: StringMatch) -> str:
    """A case-sensitive, anchored PCRE for a map key: `~^...$`."""
    return "~" + whole_value_regex(match, pcre_literal)


def header_variable(name: str) -> str:
    return "$http_" + name.lower().replace("-", "_")


def split_clients_body(canary_weight: int, names: UpstreamNames) -> str:
    if canary_weight <= 0:
        return f"* {names.stable};"  # `0%` is rejected by NGINX
    if canary_weight >= 100:
        return f"* {names.canary};"
    return f"{canary_weight}% {names.canary}; * {names.stable};"


def status_body(desired: DesiredRoutes, generation: str) -> str:
    """The JSON the status server returns, as a single-quoted nginx.conf string."""
    document = {
        "generation": generation,
        "canaryWeight": desired.canary_weight,
        "headerRoutes": [r.name for r in desired.header_routes],
        "mirrorRoutes": [r.name for r in desired.mirror_routes],
        "stable": list(desired.stable),
        "canary": list(desired.canary),
        "preview": desired.preview_target,
    }
    # `$` would start a variable and `'` end the string; JSON's \\u escapes avoid both,
    # and the backslashes are doubled because the nginx.conf parser unescapes them once.
    text = json.dumps(document, ensure_ascii=True).replace("$", "\\u0024").replace("'", "\\u0027")
    return "'" + text.replace("\\", "\\\\") + "'"


def render_nginx_conf(
    desired: DesiredRoutes,
    *,
    root: Path,
    listen: str,
    status: str,
    generation: str,
    preview: str | None = None,
) -> str:
    header_maps: list[str] = []
    entries = [match for route in desired.header_routes for match in route.match]
    for index, match in enumerate(entries):
        following = f"$ms_route_{index + 1}" if index + 1 < len(entries) else "$ms_split"
        header_maps.append(
            f"    map {header_variable(match.header_name)} $ms_route_{index} {{\n"
            f"        {quoted(header_regex(match.value))} {desired.names.canary};\n"
            f"        default {following};\n"
            "    }\n"
        )
    target = "$ms_route_0" if entries else "$ms_split"
    upstreams = "".join(
        f"    upstream {name} {{\n"
        + "".join(f"        server {endpoint};\n" for endpoint in endpoints)
        + "        keepalive 16;\n    }\n"
        for name, endpoints in (
            (desired.names.stable, desired.stable),
            (desired.names.canary, desired.canary),
        )
    )
    temp = root / "tmp"
    preview_server = ""
    if preview is not None:
        upstream = desired.names.canary if desired.preview_canary else desired.names.stable
        preview_server = f"""
    server {{
        listen {preview};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
"""
    return f"""# Generated by meshshift; rewritten on every change: do not edit.
# meshshift-status: {status}
daemon off;
master_process on;
worker_processes auto;
pid {root / "nginx.pid"};
error_log {root / "error.log"} notice;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    log_format meshshift escape=json '{{"time":"$msec","status":$status,"route":"{target}",'
        '"upstream":"$upstream_addr","upstream_time":"$upstream_response_time","request_time":$request_time,'
        '"generation":"{generation}"}}';
    access_log {root / "access.log"} meshshift;

{upstreams}
    split_clients "${{request_id}}" $ms_split {{ {split_clients_body(desired.canary_weight, desired.names)} }}
{"".join(header_maps)}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://{target};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
{preview_server}
    server {{
        listen {status};
        access_log off;
        location = {STATUS_PATH} {{
            default_type application/json;
            return 200 {status_body(desired, generation)};
        }}
    }}
}}
"""


# --- the router ----------------------------------------------------------------------


class NginxRouter(ModelRouter):
    """Drives one NGINX master through its generated nginx.conf; verifies through its status server."""

    name = "nginx"

    def __init__(
        self,
        files: NginxFiles,
        *,
        binary: str,
        listen: str,
        status: str,
        desired: DesiredRoutes,
        preview: str | None = None,
    ) -> None:
        super().__init__(desired)
        self.files = files
        self.binary = binary
        self.listen = listen
        self.preview = preview  # the preview server's address (spec.preview.listen)
        self.status = status
        self.master_pid: int | None = None
        self._generation = int(time.time() * 1000)  # grows across daemon restarts

    @property
    def status_url(self) -> str:
        return client_url(self.status) + STATUS_PATH

    def render(self, desired: DesiredRoutes, generation: str) -> str:
        return render_nginx_conf(
            desired,
            root=self.files.root,
            listen=self.listen,
            status=self.status,
            generation=generation,
            preview=self.preview,
        )

    def check(self, desired: DesiredRoutes) -> None:
        super().check(desired)
        if desired.mirror_routes:
            raise RouterConfigError(MIRROR_UNSUPPORTED)
        for route in desired.header_routes:
            for match in route.match:
                problem = header_name_problem(match.header_name) or value_problem(match.value.value)
                if problem:
                    raise RouterConfigError(f"header route {route.name}: {problem}")

    def _next_generation(self) -> str:
        self._generation += 1
        return f"g{self._generation}"

    async def write_checked(self, desired: DesiredRoutes) -> str:
        """Write nginx.conf for `desired` once `nginx -t` accepts it; returns its generation."""
        self.check(desired)
        generation = self._next_generation()
        (self.files.root / "tmp").mkdir(parents=True, exist_ok=True)
        # Checked under a fresh name (never a predictable one), then renamed over nginx.conf.
        with staged_file(self.files.conf, self.render(desired, generation)) as staged:
            await self._test_config(staged)
        return generation

    async def apply(self, desired: DesiredRoutes) -> None:
        generation = await self.write_checked(desired)
        if self.master_pid is None:
            raise RouterApplyError("NGINX is not running")
        retiring = child_pids(self.master_pid)
        try:
            os.kill(self.master_pid, signal.SIGHUP)  # what `nginx -s reload` sends
        except ProcessLookupError:
            raise RouterApplyError(f"the NGINX master (pid {self.master_pid}) is gone") from None
        await self.wait_for_generation(generation, retiring=retiring)
        log.debug("nginx routes applied", generation=generation, canary_weight=desired.canary_weight)

    async def read_back(self) -> AppliedRoutes:
        status = await self._status()
        if status is None:
            raise RouterApplyError(f"the NGINX status server {self.status_url} does not answer")
        return AppliedRoutes(
            canary_weight=int(status["canaryWeight"]),
            header_routes=tuple(status.get("headerRoutes", ())),
            mirror_routes=tuple(status.get("mirrorRoutes", ())),
            preview=str(status.get("preview")) if self.preview is not None else None,
        )

    async def wait_for_generation(
        self, generation: str, process: ProxyProcess | None = None, *, retiring: Sequence[int] = ()
    ) -> None:
        """Until a new worker answers with `generation` and no old worker accepts connections.

        After SIGHUP the master starts new workers before it tells the old ones to stop;
        until then both accept connections. An old worker retitles itself "shutting down"
        as it closes its listening sockets.
        """
        deadline = time.monotonic() + APPLY_TIMEOUT
        while True:
            status = await self._status()
            if status is not None and status.get("generation") == generation and not _accepting(retiring):
                return
            if process is not None:
                process.check_alive()
            if time.monotonic() > deadline:
                raise RouterApplyError(
                    f"NGINX did not apply configuration {generation} within {APPLY_TIMEOUT:g}s; "
                    f"its error log says: {last_log_line(self.files.error_log)}"
                )
            await asyncio.sleep(0.005)

    async def _status(self) -> dict[str, Any] | None:
        try:
            async with (
                new_connection_session() as session,  # only new connections reach new workers
                session.get(self.status_url) as response,
            ):
                if response.status != 200:
                    return None
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def command(self, *args: str, conf: Path | None = None) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.files.root}/",
            "-c",
            str(conf or self.files.conf),
            "-e",
            str(self.files.error_log),
            *args,
        ]

    async def _test_config(self, conf: Path) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.command("-t", "-q", conf=conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            message = " ".join(output.decode(errors="replace").split())
            raise RouterApplyError(f"NGINX rejected the generated configuration: {message}")


def _accepting(workers: Sequence[int]) -> list[int]:
    """The workers of `workers` still accepting connections (alive, not shutting down)."""
    return [
        pid
        for pid in workers
        if process_alive(pid) and "shutting down" not in " ".join(process_command_line(pid))
    ]


# --- running NGINX -------------------------------------------------------------------


@dataclasses.dataclass
class NginxInstance(ProxyInstance):
    router: NginxRouter
    process: ProxyProcess


def _existing_status(files: NginxFiles) -> str | None:
    try:
        found = _STATUS_MARK.search(files.conf.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def nginx_process(files: NginxFiles) -> OwnedProxy:
    return OwnedProxy(
        "nginx",
        root=files.root,
        pid_file=files.pid,
        config_file=files.conf,
        log_path=files.error_log,
        output_path=files.output,
        writes_own_pid=True,  # the `pid` of nginx.conf
    )


@contextlib.asynccontextmanager
async def running_nginx(
    config: NginxRouterConfig, desired: DesiredRoutes, *, config_dir: Path
) -> AsyncIterator[NginxInstance]:
    """Start (or adopt) NGINX serving `desired`; stop it when the block ends."""
    files = NginxFiles(Path(config.config_dir) if config.config_dir else config_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    proxy = nginx_process(files)
    router = NginxRouter(
        files,
        binary=find_nginx(config.binary),
        listen=config.listen,
        status=control_address(proxy, None, existing=lambda: _existing_status(files)),
        desired=desired,
        preview=config.preview_listen,
    )
    process = await _start_or_adopt(proxy, router, desired)
    try:
        yield NginxInstance(
            router=router, process=process, listen=config.listen, preview=config.preview_listen
        )
    finally:
        await proxy.stop(process)


async def _start_or_adopt(proxy: OwnedProxy, router: NginxRouter, desired: DesiredRoutes) -> ProxyProcess:
    async def take_over(pid: int) -> None:
        router.master_pid = pid
        await router.apply(desired)

    # Every change reloads the whole nginx.conf: any NGINX of ours can take the new one.
    adopted = await proxy.adopt(fits=True, take_over=take_over)
    if adopted is not None:
        return adopted
    router.master_pid = None
    ensure_free(router.listen, "spec.router.nginx.listen")  # before it starts: the error names the field
    if router.preview is not None:
        ensure_free(router.preview, "spec.preview.listen")
    generation = await router.write_checked(desired)

    async def until_serving(process: ManagedProcess) -> None:
        assert process.process is not None
        router.master_pid = process.process.pid  # with `daemon off` the process we started is the master
        await router.wait_for_generation(generation, process)

    return await proxy.start(
        router.command(),
        until_serving=until_serving,
        details={"listen": router.listen, "pid_file": str(proxy.pid_file)},
    )
