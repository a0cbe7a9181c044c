"""Traefik as a standalone router: the file provider, verified through Traefik's API.

Layout of the config directory:

    traefik.yml            static configuration: entry points `web` (listen) and `traefik`
                           (API, ping, Prometheus metrics), the file provider below
    dynamic/dynamic.yml    dynamic configuration (routers, services, middlewares), watched
    traefik.pid, traefik.log   the Traefik process meshshift runs (not in attach mode)

The whole dynamic configuration is rendered from the desired routes on every change and
replaced by rename (Traefik's watcher then reads one complete file):

- services `<name>-primary` and `<name>-canary` (load balancers over the endpoints, named as
  Flagger's dashboards select them; the analysis queries read
  `traefik_service_requests_total{service="<name>-canary@file"}`), `meshshift-split`
  (`weighted` over the two: Traefik's weighted round robin ignores a weight of 0), and one
  `mirroring` service per mirror route (the split, plus a percentage copied to `canary`);
- routers on the `web` entry point, highest priority first: one per header-route match
  entry (`PathPrefix(`/`) && Header(...)` or `HeaderRegexp(...)`, to `canary`; entries of
  one setHeaderRoute are ORed, as Argo Rollouts does on Istio), then one per mirror match
  entry, then `meshshift-default` (priority 1) to the split;
- with spec.preview.listen, the entry point `preview` and its router `meshshift-preview`, to
  `canary` while a new revision is up and to `stable` otherwise;
- a probe router that only a request carrying this configuration's generation matches,
  answered by Traefik's own `ping@internal` with the generation as a response header.

After each write the router polls `/api/http/routers`, `/api/http/services` and
`/api/http/middlewares` until they show the new generation, and checks that every router
and service it wrote is enabled; then it sends the probe through the `web` entry point,
which proves the entry point serves the new routes. A configuration Traefik disables (a
regex Go cannot compile, say) is replaced by the previous one before the error is raised,
so a rejected change leaves Traefik where it was.

`HeaderRegexp` and `PathRegexp` match anywhere in the value (Go's `regexp.MatchString`):
meshshift anchors them, so `exact` and `prefix` are literal and `regex` must match the
whole value, as on Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import structlog
import yaml

from meshshift.ports import AppliedRoutes
from meshshift.processes import ManagedProcess, wait_until_http_ready
from meshshift.routers.proxy_process import (
    ConfigVersions,
    ControlSession,
    OwnedProxy,
    ProxyInstance,
    ProxyProcess,
    client_url,
    control_address,
    find_traefik,
    last_log_line,
    new_connection_session,
    replace_file,
)
from meshshift.routers.proxy_routes import (
    DesiredRoutes,
    ModelRouter,
    RouterApplyError,
    RouterConfigError,
    UpstreamNames,
    whole_value_regex,
)
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch, TraefikRouterConfig

log = structlog.get_logger(__name__)

PROVIDER = "file"
WEB_ENTRY_POINT = "web"
PREVIEW_ENTRY_POINT = "preview"
PREVIEW_ROUTER = "meshshift-preview"
API_ENTRY_POINT = "traefik"  # the name `api.insecure` serves the API on
SPLIT = "meshshift-split"
DEFAULT_ROUTER = "meshshift-default"
HEADER_ROUTER_PREFIX = "meshshift-header-"
MIRROR_ROUTER_PREFIX = "meshshift-mirror-"
MIRROR_SERVICE_PREFIX = "meshshift-mirror-"
PROBE_ROUTER = "meshshift-probe"
GENERATION_MIDDLEWARE = "meshshift-generation"
PROBE_HEADER = "X-Meshshift-Probe"
GENERATION_HEADER = "X-Meshshift-Generation"
HEADER_PRIORITY = 3_000_000  # minus the position: the first header route set wins
MIRROR_PRIORITY = 2_000_000
PROBE_PRIORITY = 4_000_000
APPLY_TIMEOUT = 15.0
ATTACH_WAIT = 60.0
# Request latency buckets (seconds) fine enough for a P99 around a few hundred milliseconds;
# Traefik's default (0.1, 0.3, 1.2, 5) is too coarse for the builtin request-duration.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


@dataclasses.dataclass(frozen=True, slots=True)
class TraefikFiles:
    root: Path

    @property
    def static(self) -> Path:
        return self.root / "traefik.yml"

    @property
    def dynamic(self) -> Path:
        return self.root / "dynamic" / "dynamic.yml"

    @property
    def pid(self) -> Path:
        return self.root / "traefik.pid"

    @property
    def log(self) -> Path:
        return self.root / "traefik.log"


# --- rules ---------------------------------------------------------------------------


def go_string(text: str) -> str:
    """A double-quoted string of Traefik's rule syntax (Go's string literal)."""
    return json.dumps(text, ensure_ascii=False)


def go_regex_literal(text: str) -> str:
    """`text` matched literally by Go's regexp (RE2 rejects Python's escaped spaces)."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)


def anchored(match: StringMatch) -> str:
    """The whole-value regex for one Argo string match."""
    return whole_value_regex(match, go_regex_literal)


def header_rule(match: HeaderMatch) -> str:
    name = go_string(match.header_name)
    if match.value.kind == "exact":
        return f"Header({name}, {go_string(match.value.value)})"
    return f"HeaderRegexp({name}, {go_string(anchored(match.value))})"


def path_rule(match: StringMatch) -> str:
    if match.kind == "exact":
        return f"Path({go_string(match.value)})"
    if match.kind == "prefix":
        return f"PathPrefix({go_string(match.value)})"
    return f"PathRegexp({go_string(anchored(match))})"


def mirror_rule(match: MirrorMatch) -> str:
    parts = [path_rule(match.path) if match.path is not None else "PathPrefix(`/`)"]
    if match.method is not None:
        parts.append(f"Method({go_string(match.method.value)})")
    parts.extend(header_rule(h) for h in match.headers)
    return " && ".join(parts)


def method_problem(match: MirrorMatch) -> str | None:
    if match.method is not None and match.method.kind != "exact":
        return (
            f"the traefik router matches methods exactly (Traefik's Method rule); "
            f"got a {match.method.kind} match {match.method.value!r}"
        )
    return None


def encode_name(name: str) -> str:
    """A route name inside a Traefik router name (`@` separates the provider there)."""
    return quote(name, safe="-_.~")


def decode_name(text: str) -> str:
    return unquote(text)


# --- rendering -----------------------------------------------------------------------


def _servers(endpoints: Sequence[str]) -> dict[str, Any]:
    return {"loadBalancer": {"servers": [{"url": f"http://{e}"} for e in endpoints], "passHostHeader": True}}


def _router(rule: str, service: str, priority: int, **extra: Any) -> dict[str, Any]:
    return {"entryPoints": [WEB_ENTRY_POINT], "rule": rule, "priority": priority, "service": service, **extra}


def render_dynamic(desired: DesiredRoutes, generation: str, *, preview: bool = False) -> dict[str, Any]:
    names = desired.names
    services: dict[str, Any] = {
        names.stable: _servers(desired.stable),
        names.canary: _servers(desired.canary),
        SPLIT: {
            "weighted": {
                "services": [
                    {"name": names.stable, "weight": 100 - desired.canary_weight},
                    {"name": names.canary, "weight": desired.canary_weight},
                ]
            }
        },
    }
    routers: dict[str, Any] = {}
    position = 0
    for route in desired.header_routes:
        for index, match in enumerate(route.match):
            name = f"{HEADER_ROUTER_PREFIX}{encode_name(route.name)}-{index}"
            routers[name] = _router(
                f"PathPrefix(`/`) && {header_rule(match)}", names.canary, HEADER_PRIORITY - position
            )
            position += 1
    position = 0
    for mirror in desired.mirror_routes:
        service = MIRROR_SERVICE_PREFIX + encode_name(mirror.name)
        percent = 100 if mirror.percentage is None else mirror.percentage
        services[service] = {
            "mirroring": {"service": SPLIT, "mirrors": [{"name": names.canary, "percent": percent}]}
        }
        for index, mirror_match in enumerate(mirror.match):
            name = f"{MIRROR_ROUTER_PREFIX}{encode_name(mirror.name)}-{index}"
            routers[name] = _router(mirror_rule(mirror_match), service, MIRROR_PRIORITY - position)
            position += 1
    routers[DEFAULT_ROUTER] = _router("PathPrefix(`/`)", SPLIT, 1)
    if preview:
        target = names.canary if desired.preview_canary else names.stable
        routers[PREVIEW_ROUTER] = {
            "entryPoints": [PREVIEW_ENTRY_POINT],
            "rule": "PathPrefix(`/`)",
            "priority": 1,
            "service": target,
        }
    routers[PROBE_ROUTER] = _router(
        f"Header(`{PROBE_HEADER}`, {go_string(generation)})",
        "ping@internal",
        PROBE_PRIORITY,
        middlewares=[GENERATION_MIDDLEWARE],
    )
    middlewares = {
        GENERATION_MIDDLEWARE: {"headers": {"customResponseHeaders": {GENERATION_HEADER: generation}}}
    }
    return {"http": {"routers": routers, "services": services, "middlewares": middlewares}}


def render_static(
    files: TraefikFiles, *, listen: str, api: str, preview: str | None = None
) -> dict[str, Any]:
    static = _render_static(files, listen=listen, api=api)
    if preview is not None:
        static["entryPoints"][PREVIEW_ENTRY_POINT] = {"address": preview}
    return static


def _render_static(files: TraefikFiles, *, listen: str, api: str) -> dict[str, Any]:
    return {
        # No version check, no usage statistics: Traefik reaches nothing outside this machine.
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {WEB_ENTRY_POINT: {"address": listen}, API_ENTRY_POINT: {"address": api}},
        "api": {"insecure": True, "dashboard": False},
        "ping": {"entryPoint": API_ENTRY_POINT},
        "metrics": {
            "prometheus": {
                "entryPoint": API_ENTRY_POINT,
                "addEntryPointsLabels": True,
                "addRoutersLabels": True,
                "addServicesLabels": True,
                "buckets": list(DURATION_BUCKETS),
            }
        },
        "providers": {
            # Traefik's default throttle (2 s) would delay every step; meshshift writes rarely.
            "providersThrottleDuration": "50ms",
            "file": {"filename": str(files.dynamic), "watch": True},
        },
        "log": {"level": "WARN", "noColor": True},
    }


def write_config(path: Path, document: Mapping[str, Any]) -> None:
    """Written as JSON, which YAML 1.2 reads exactly as written: PyYAML (YAML 1.1) leaves a
    string such as `12345e-1` unquoted, and Traefik's YAML reader takes that for a number."""
    replace_file(path, json.dumps(dict(document), indent=2) + "\n")


# --- reading back --------------------------------------------------------------------


def _ours(entries: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    suffix = "@" + PROVIDER
    return {
        str(e["name"]).removesuffix(suffix): e
        for e in entries
        if isinstance(e, Mapping) and str(e.get("name", "")).endswith(suffix)
    }


@dataclasses.dataclass(frozen=True, slots=True)
class TraefikView:
    """What Traefik's API reports of the file provider's configuration."""

    routers: Mapping[str, Mapping[str, Any]]
    services: Mapping[str, Mapping[str, Any]]
    middlewares: Mapping[str, Mapping[str, Any]]

    @property
    def generation(self) -> str | None:
        headers = (self.middlewares.get(GENERATION_MIDDLEWARE) or {}).get("headers") or {}
        value = (headers.get("customResponseHeaders") or {}).get(GENERATION_HEADER)
        return None if value is None else str(value)

    def errors(self) -> list[str]:
        """What Traefik says is wrong with the routers and services it read from the file."""
        problems = []
        for kind, entries in (("router", self.routers), ("service", self.services)):
            for name, entry in entries.items():
                if entry.get("status") not in (None, "enabled") or entry.get("error"):
                    problems.append(
                        f"{kind} {name}: {'; '.join(map(str, entry.get('error') or ['disabled']))}"
                    )
        return problems

    def applied(self, names: UpstreamNames) -> AppliedRoutes:
        weighted = (self.services.get(SPLIT) or {}).get("weighted") or {}
        weights = {str(s.get("name")): int(s.get("weight") or 0) for s in weighted.get("services") or []}
        stable, canary = names.stable, names.canary
        total = weights.get(stable, 0) + weights.get(canary, 0)
        weight = (
            round(100 * weights.get(canary, 0) / total)
            if total > 0 and set(weights) <= {stable, canary}
            else None
        )
        preview = None
        router = self.routers.get(PREVIEW_ROUTER)
        if router is not None and router.get("status", "enabled") == "enabled":
            service = str(router.get("service", "")).removesuffix("@" + PROVIDER)
            preview = {canary: "canary", stable: "stable"}.get(service)
        return AppliedRoutes(
            canary_weight=weight,
            header_routes=self._route_names(HEADER_ROUTER_PREFIX),
            mirror_routes=self._route_names(MIRROR_ROUTER_PREFIX),
            preview=preview,
        )

    def _route_names(self, prefix: str) -> tuple[str, ...]:
        found = [
            (-int(router.get("priority") or 0), name)
            for name, router in self.routers.items()
            if name.startswith(prefix) and router.get("status", "enabled") == "enabled"
        ]
        names: list[str] = []
        for _, name in sorted(found):
            step = decode_name(name.removeprefix(prefix).rsplit("-", 1)[0])
            if step not in names:
                names.append(step)
        return tuple(names)


# --- the router ----------------------------------------------------------------------


class TraefikRouter(ModelRouter):
    """Drives one Traefik through its file provider; verifies through its API and its entry point."""

    name = "traefik"

    def __init__(
        self,
        files: TraefikFiles,
        *,
        api_url: str,
        proxy_url: str,
        desired: DesiredRoutes,
        preview: bool = False,
    ) -> None:
        super().__init__(desired)
        self.files = files
        self.preview = preview  # the static configuration has the preview entry point
        self.api_url = api_url.rstrip("/")
        self.proxy_url = proxy_url.rstrip("/")
        self._generations = ConfigVersions()
        self._control = ControlSession()

    async def close(self) -> None:
        await self._control.close()

    def check(self, desired: DesiredRoutes) -> None:
        super().check(desired)
        for mirror in desired.mirror_routes:
            for match in mirror.match:
                problem = method_problem(match)
                if problem:
                    raise RouterConfigError(f"mirror route {mirror.name}: {problem}")

    def write_files(self, desired: DesiredRoutes) -> str:
        """The dynamic configuration for `desired`; returns its generation."""
        self.check(desired)
        generation = self._generations.next()
        write_config(self.files.dynamic, render_dynamic(desired, generation, preview=self.preview))
        return generation

    async def apply(self, desired: DesiredRoutes) -> None:
        generation = self.write_files(desired)
        view = await self.wait_for_generation(generation)
        problems = view.errors()
        if problems:
            # Traefik runs the rest of that file: put the last good configuration back first.
            restored = self.write_files(self.desired)
            with contextlib.suppress(RouterApplyError):
                await self.wait_for_generation(restored)
            raise RouterApplyError(
                "Traefik rejected part of the configuration; the previous one is back in place: "
                + "; ".join(problems)
            )
        log.debug("traefik routes applied", generation=generation, canary_weight=desired.canary_weight)

    async def read_back(self) -> AppliedRoutes:
        return (await self.view()).applied(self.desired.names)

    async def wait_for_generation(self, generation: str, process: ProxyProcess | None = None) -> TraefikView:
        """Until the API shows `generation` and the web entry point answers its probe."""
        deadline = time.monotonic() + APPLY_TIMEOUT
        view: TraefikView | None = None
        while True:
            if process is not None:
                process.check_alive()
            with contextlib.suppress(RouterApplyError):
                view = await self.view()
                if view.generation == generation and await self._probe(generation):
                    return view
            if time.monotonic() > deadline:
                seen = view.generation if view is not None else "no answer"
                raise RouterApplyError(
                    f"Traefik did not apply configuration {generation} within {APPLY_TIMEOUT:g}s "
                    f"(its API shows {seen}); its log ({self.files.log}) says: "
                    + last_log_line(self.files.log)
                )
            await asyncio.sleep(0.01)

    # --- Traefik's API -------------------------------------------------------------------

    async def _get_list(self, path: str) -> list[Any]:
        try:
            async with self._control.current().get(self.api_url + path) as response:
                if response.status != 200:
                    raise RouterApplyError(f"Traefik API {path} answered HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RouterApplyError(f"Traefik API {self.api_url} unreachable: {error!r}") from error
        return data if isinstance(data, list) else []

    async def view(self) -> TraefikView:
        # Large pages: Traefik's API paginates (default 100 per page).
        query = "?per_page=10000"
        routers, services, middlewares = await asyncio.gather(
            self._get_list("/api/http/routers" + query),
            self._get_list("/api/http/services" + query),
            self._get_list("/api/http/middlewares" + query),
        )
        return TraefikView(_ours(routers), _ours(services), _ours(middlewares))

    async def _probe(self, generation: str) -> bool:
        try:
            async with (
                new_connection_session() as session,
                session.get(self.proxy_url + "/", headers={PROBE_HEADER: generation}) as response,
            ):
                return response.headers.get(GENERATION_HEADER) == generation
        except (aiohttp.ClientError, TimeoutError):
            return False


# --- running Traefik -----------------------------------------------------------------


@dataclasses.dataclass
class TraefikInstance(ProxyInstance):
    router: TraefikRouter
    process: ProxyProcess | None  # None in attach mode
    api: str

    @property
    def api_url(self) -> str:
        return client_url(self.api)


def _existing_api(files: TraefikFiles) -> str | None:
    try:
        static = yaml.safe_load(files.static.read_text())
        return str(static["entryPoints"][API_ENTRY_POINT]["address"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def traefik_command(binary: str, files: TraefikFiles) -> list[str]:
    return [binary, f"--configFile={files.static}"]


def traefik_process(files: TraefikFiles) -> OwnedProxy:
    return OwnedProxy(
        "traefik",
        root=files.root,
        pid_file=files.pid,
        config_file=files.static,
        log_path=files.log,
    )


@contextlib.asynccontextmanager
async def running_traefik(
    config: TraefikRouterConfig, desired: DesiredRoutes, *, config_dir: Path
) -> AsyncIterator[TraefikInstance]:
    """Start (or adopt, or attach to) Traefik serving `desired`; stop what we started at the end."""
    files = TraefikFiles(Path(config.config_dir) if config.config_dir else config_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    proxy = traefik_process(files)
    api = control_address(
        proxy,
        config.api,
        existing=lambda: _existing_api(files),
        attach_field="spec.router.traefik.api" if config.attach else None,
    )
    preview = config.preview_listen
    static = render_static(files, listen=config.listen, api=api, preview=preview)
    router = TraefikRouter(
        files,
        api_url=client_url(api),
        proxy_url=client_url(config.listen),
        desired=desired,
        preview=preview is not None,
    )
    process: ProxyProcess | None = None
    try:
        if config.attach:
            write_config(files.static, static)  # for whoever runs that Traefik
            if not files.dynamic.exists():
                router.write_files(desired)
            await wait_until_http_ready(router.api_url + "/ping", wait_seconds=ATTACH_WAIT)
            await router.apply(desired)
        else:
            process = await _start_or_adopt(proxy, config, static, router, desired)
        yield TraefikInstance(router=router, process=process, listen=config.listen, api=api, preview=preview)
    finally:
        await router.close()
        if process is not None:
            await proxy.stop(process)


async def _start_or_adopt(
    proxy: OwnedProxy,
    config: TraefikRouterConfig,
    static: Mapping[str, Any],
    router: TraefikRouter,
    desired: DesiredRoutes,
) -> ProxyProcess:
    files = router.files
    ready_url = router.api_url + "/ping"
    adopted = await proxy.adopt(
        fits=_same_static(files, static), ready_url=ready_url, take_over=lambda _: router.apply(desired)
    )
    if adopted is not None:
        return adopted
    write_config(files.static, static)
    generation = router.write_files(desired)

    async def until_serving(process: ManagedProcess) -> None:
        view = await router.wait_for_generation(generation, process)
        if view.errors():
            raise RouterApplyError("Traefik rejected the configuration: " + "; ".join(view.errors()))

    return await proxy.start(
        traefik_command(find_traefik(config.binary), files),
        ready_url=ready_url,
        until_serving=until_serving,
        details={"listen": config.listen, "api": router.api_url},
    )


def _same_static(files: TraefikFiles, static: Mapping[str, Any]) -> bool:
    try:
        return bool(yaml.safe_load(files.static.read_text()) == static)
    except (OSError, yaml.YAMLError):
        return False
