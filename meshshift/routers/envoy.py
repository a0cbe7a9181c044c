"""Envoy as a standalone router: file-based CDS and RDS, applied by atomic rename.

Layout of the config directory (all JSON, which Envoy reads by the file extension):

    bootstrap.json          listener + admin; CDS and RDS come from the two files below
    clusters/clusters.json  the stable and canary clusters (CDS, a DiscoveryResponse), named
                            `<rollout>-primary` and `<rollout>-canary` by the standalone daemon
    routes/routes.json      route configuration `meshshift_routes` (RDS, a DiscoveryResponse)
    routes/preview.json     route configuration `meshshift_preview` of the preview listener (with
                            spec.preview.listen): everything to the canary cluster, or to the stable
    envoy.pid, envoy.log    the Envoy process meshshift runs (not in attach mode)

Envoy watches each directory and re-reads the file when something is moved into the
directory, so every change is written to a temp file in the same directory and renamed
over the old one (an in-place write is ignored). Envoy accepts or rejects each version
as a whole; the router waits until the admin endpoint's `config_dump` reports the version
it wrote, and reads weights and routes back from there.

Routes, first match wins: one route per header-route match entry (to the canary; entries of
one setHeaderRoute are ORed, as Argo Rollouts does on Istio), then one route per mirror
match entry (the weighted split, plus a request mirror to the canary), then the weighted split.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from meshshift.ports import AppliedRoutes
from meshshift.processes import ProcessFailedError, wait_until_http_ready
from meshshift.routers.listen_ports import bind_failure, ensure_free
from meshshift.routers.proxy_process import (
    ConfigVersions,
    ControlSession,
    OwnedProxy,
    ProxyInstance,
    ProxyProcess,
    client_url,
    control_address,
    find_envoy,
    last_log_line,
    replace_file,
)
from meshshift.routers.proxy_routes import (
    DesiredRoutes,
    ModelRouter,
    RouterApplyError,
    RouterConfigError,
    UpstreamNames,
)
from meshshift.settings import split_host_port
from meshshift.spec.model import EnvoyRouterConfig, HeaderMatch, MirrorMatch, StringMatch

log = structlog.get_logger(__name__)

ROUTE_CONFIG_NAME = "meshshift_routes"
LISTENER_STAT_PREFIX = "ingress"
PREVIEW_ROUTE_CONFIG_NAME = "meshshift_preview"
PREVIEW_STAT_PREFIX = "preview"
PREVIEW_ROUTE = "meshshift/preview"
DEFAULT_ROUTE = "meshshift/default"
HEADER_ROUTE_PREFIX = "meshshift/header/"
MIRROR_ROUTE_PREFIX = "meshshift/mirror/"
APPLY_TIMEOUT = 10.0
ATTACH_WAIT = 60.0  # attach mode: how long to wait for someone else's Envoy to answer
CDS_STATS = "cluster_manager.cds."
RDS_STATS = f"http.{LISTENER_STAT_PREFIX}.rds.{ROUTE_CONFIG_NAME}."
PREVIEW_RDS_STATS = f"http.{PREVIEW_STAT_PREFIX}.rds.{PREVIEW_ROUTE_CONFIG_NAME}."
_ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_ROUTER_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


@dataclasses.dataclass(frozen=True, slots=True)
class EnvoyFiles:
    root: Path

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap.json"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters" / "clusters.json"

    @property
    def routes(self) -> Path:
        return self.root / "routes" / "routes.json"

    @property
    def preview_routes(self) -> Path:
        return self.root / "routes" / "preview.json"

    @property
    def pid(self) -> Path:
        return self.root / "envoy.pid"

    @property
    def log(self) -> Path:
        return self.root / "envoy.log"


# --- rendering -----------------------------------------------------------------------


def socket_address(endpoint: str) -> dict[str, Any]:
    host, port = split_host_port(endpoint)
    return {"socket_address": {"address": host, "port_value": port}}


def listen_address(address: str, field: str) -> dict[str, Any]:
    """A listener or admin address: Envoy binds IP addresses only."""
    host, port = split_host_port(address)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RouterConfigError(f"{field}: Envoy listens on IP addresses only, not {host!r}") from None
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(endpoint: str) -> bool:
    try:
        ipaddress.ip_address(split_host_port(endpoint)[0])
    except ValueError:
        return False
    return True


def _http_listener(
    name: str, address: dict[str, Any], stat_prefix: str, route_config: str, path: Path
) -> dict[str, Any]:
    return {
        "name": name,
        "address": address,
        # No SO_REUSEPORT: a second Envoy on this port must fail to start, not take part of
        # the requests (see listen_ports.py).
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM_TYPE,
                            "stat_prefix": stat_prefix,
                            "rds": {
                                "route_config_name": route_config,
                                "config_source": {
                                    "resource_api_version": "V3",
                                    "path_config_source": {
                                        "path": str(path),
                                        "watched_directory": {"path": str(path.parent)},
                                    },
                                },
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": _ROUTER_FILTER_TYPE},
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def render_bootstrap(
    files: EnvoyFiles, *, listen: str, admin: str, node_id: str = "meshshift", preview: str | None = None
) -> dict[str, Any]:
    bootstrap = _render_bootstrap(files, listen=listen, admin=admin, node_id=node_id)
    if preview is not None:
        address = listen_address(preview, "spec.preview.listen")
        bootstrap["static_resources"]["listeners"].append(
            _http_listener(
                "preview", address, PREVIEW_STAT_PREFIX, PREVIEW_ROUTE_CONFIG_NAME, files.preview_routes
            )
        )
    return bootstrap


def _render_bootstrap(files: EnvoyFiles, *, listen: str, admin: str, node_id: str) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": "meshshift"},
        # Histograms reach /stats/prometheus on each flush; 1 s keeps latency analysis fresh.
        "stats_flush_interval": "1s",
        "admin": {"address": listen_address(admin, "spec.router.envoy.admin")},
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(files.clusters),
                    "watched_directory": {"path": str(files.clusters.parent)},
                },
            }
        },
        "static_resources": {
            "listeners": [
                _http_listener(
                    "ingress",
                    listen_address(listen, "spec.router.envoy.listen"),
                    LISTENER_STAT_PREFIX,
                    ROUTE_CONFIG_NAME,
                    files.routes,
                )
            ]
        },
    }


def render_cluster(name: str, endpoints: Sequence[str]) -> dict[str, Any]:
    return {
        "@type": _CLUSTER_TYPE,
        "name": name,
        # Host names need DNS; IP addresses are taken as they are.
        "type": "STATIC" if all(_is_ip(e) for e in endpoints) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(e)}} for e in endpoints]}
            ],
        },
    }


def render_clusters(desired: DesiredRoutes, version: str) -> dict[str, Any]:
    return {
        "version_info": version,
        "resources": [
            render_cluster(desired.names.stable, desired.stable),
            render_cluster(desired.names.canary, desired.canary),
        ],
    }


def string_match(match: StringMatch) -> dict[str, Any]:
    if match.kind == "regex":
        return {"safe_regex": {"regex": match.value}}
    return {match.kind: match.value}


def header_matcher(match: HeaderMatch) -> dict[str, Any]:
    return {"name": match.header_name.lower(), "string_match": string_match(match.value)}


def mirror_route_match(match: MirrorMatch) -> dict[str, Any]:
    route_match: dict[str, Any] = {"prefix": "/"}
    if match.path is not None:
        path = match.path
        route_match = (
            {"safe_regex": {"regex": path.value}}
            if path.kind == "regex"
            else {"path" if path.kind == "exact" else "prefix": path.value}
        )
    headers = [header_matcher(h) for h in match.headers]
    if match.method is not None:
        headers.append({"name": ":method", "string_match": string_match(match.method)})
    if headers:
        route_match["headers"] = headers
    return route_match


def weighted_split(canary_weight: int, names: UpstreamNames) -> dict[str, Any]:
    return {
        "weighted_clusters": {
            "clusters": [
                {"name": names.stable, "weight": 100 - canary_weight},
                {"name": names.canary, "weight": canary_weight},
            ]
        }
    }


def render_routes(desired: DesiredRoutes, version: str) -> dict[str, Any]:
    names = desired.names
    routes: list[dict[str, Any]] = []
    for header_route in desired.header_routes:
        for match in header_route.match:
            routes.append(
                {
                    "name": HEADER_ROUTE_PREFIX + header_route.name,
                    "match": {"prefix": "/", "headers": [header_matcher(match)]},
                    "route": {"cluster": names.canary},
                }
            )
    for mirror_route in desired.mirror_routes:
        percentage = 100 if mirror_route.percentage is None else mirror_route.percentage
        mirror = {
            "cluster": names.canary,
            "runtime_fraction": {"default_value": {"numerator": percentage, "denominator": "HUNDRED"}},
        }
        for mirror_match in mirror_route.match:
            routes.append(
                {
                    "name": MIRROR_ROUTE_PREFIX + mirror_route.name,
                    "match": mirror_route_match(mirror_match),
                    "route": {
                        **weighted_split(desired.canary_weight, names),
                        "request_mirror_policies": [mirror],
                    },
                }
            )
    routes.append(
        {
            "name": DEFAULT_ROUTE,
            "match": {"prefix": "/"},
            "route": weighted_split(desired.canary_weight, names),
        }
    )
    route_config = {
        "@type": _ROUTE_TYPE,
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    }
    return {"version_info": version, "resources": [route_config]}


def render_preview_routes(desired: DesiredRoutes, version: str) -> dict[str, Any]:
    """The preview listener's routes: every request to the canary cluster (or the stable one)."""
    cluster = desired.names.canary if desired.preview_canary else desired.names.stable
    route_config = {
        "@type": _ROUTE_TYPE,
        "name": PREVIEW_ROUTE_CONFIG_NAME,
        "virtual_hosts": [
            {
                "name": "preview",
                "domains": ["*"],
                "routes": [{"name": PREVIEW_ROUTE, "match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }
        ],
    }
    return {"version_info": version, "resources": [route_config]}


def write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Temp file in the same directory, then rename: the only change Envoy's watcher sees."""
    replace_file(path, json.dumps(document, indent=1))


# --- reading back --------------------------------------------------------------------


def applied_from_dump(dump: Mapping[str, Any], names: UpstreamNames) -> tuple[str | None, AppliedRoutes]:
    """(version, routes) of `meshshift_routes` in a `dynamic_route_configs` config dump
    (with where `meshshift_preview` sends the preview listener's requests, if it is there)."""
    preview = _applied_preview(dump, names)
    for config in dump.get("configs", []):
        route_config = config.get("route_config", {})
        if route_config.get("name") != ROUTE_CONFIG_NAME:
            continue
        routes = [r for host in route_config.get("virtual_hosts", []) for r in host.get("routes", [])]
        applied = dataclasses.replace(_applied_routes(routes, names), preview=preview)
        return config.get("version_info"), applied
    return None, AppliedRoutes(canary_weight=None, preview=preview)


def _applied_preview(dump: Mapping[str, Any], names: UpstreamNames) -> str | None:
    for config in dump.get("configs", []):
        route_config = config.get("route_config", {})
        if route_config.get("name") != PREVIEW_ROUTE_CONFIG_NAME:
            continue
        for host in route_config.get("virtual_hosts", []):
            for route in host.get("routes", []):
                cluster = (route.get("route") or {}).get("cluster")
                if cluster in (names.canary, names.stable):
                    return "canary" if cluster == names.canary else "stable"
    return None


def _applied_routes(routes: Sequence[Mapping[str, Any]], names: UpstreamNames) -> AppliedRoutes:
    weight = None
    headers: list[str] = []
    mirrors: list[str] = []
    for route in routes:
        name = str(route.get("name", ""))
        if name == DEFAULT_ROUTE:
            weight = _canary_weight(route.get("route", {}), names)
        elif name.startswith(HEADER_ROUTE_PREFIX):
            _append_once(headers, name.removeprefix(HEADER_ROUTE_PREFIX))
        elif name.startswith(MIRROR_ROUTE_PREFIX):
            _append_once(mirrors, name.removeprefix(MIRROR_ROUTE_PREFIX))
    return AppliedRoutes(canary_weight=weight, header_routes=tuple(headers), mirror_routes=tuple(mirrors))


def _canary_weight(action: Mapping[str, Any], names: UpstreamNames) -> int | None:
    if action.get("cluster") in (names.stable, names.canary):
        return 100 if action["cluster"] == names.canary else 0
    clusters = action.get("weighted_clusters", {}).get("clusters", [])
    # proto3 JSON leaves zero values out: a missing weight is 0.
    weights = {c.get("name"): int(c.get("weight", 0)) for c in clusters}
    total = sum(weights.values())
    if total <= 0 or set(weights) - {names.stable, names.canary}:
        return None
    return round(100 * weights.get(names.canary, 0) / total)


def _append_once(names: list[str], name: str) -> None:
    if name not in names:
        names.append(name)


# --- the router ----------------------------------------------------------------------


class EnvoyRouter(ModelRouter):
    """Drives one Envoy through its watched CDS/RDS files; verifies through its admin API."""

    name = "envoy"

    def __init__(
        self, files: EnvoyFiles, admin_url: str, desired: DesiredRoutes, *, preview: bool = False
    ) -> None:
        super().__init__(desired)
        self.files = files
        self.admin_url = admin_url.rstrip("/")
        self.preview = preview  # the bootstrap has a preview listener (spec.preview.listen)
        self._versions = ConfigVersions()
        self._applied_clusters: tuple[tuple[str, ...], tuple[str, ...], UpstreamNames] | None = None
        self._applied_preview: str | None = None
        self._control = ControlSession()

    async def close(self) -> None:
        await self._control.close()

    def write_files(self, desired: DesiredRoutes) -> None:
        """Initial files: Envoy refuses to start when a watched file is missing."""
        self.check(desired)
        write_atomically(self.files.clusters, render_clusters(desired, self._versions.next()))
        write_atomically(self.files.routes, render_routes(desired, self._versions.next()))
        if self.preview:
            write_atomically(self.files.preview_routes, render_preview_routes(desired, self._versions.next()))

    async def apply(self, desired: DesiredRoutes) -> None:
        clusters = (desired.stable, desired.canary, desired.names)
        if clusters != self._applied_clusters:
            version = self._versions.next()
            await self._write_and_wait(
                self.files.clusters, render_clusters(desired, version), version, CDS_STATS
            )
            self._applied_clusters = clusters
        version = self._versions.next()
        await self._write_and_wait(self.files.routes, render_routes(desired, version), version, RDS_STATS)
        if self.preview and desired.preview_target != self._applied_preview:
            version = self._versions.next()
            document = render_preview_routes(desired, version)
            await self._write_and_wait(self.files.preview_routes, document, version, PREVIEW_RDS_STATS)
            self._applied_preview = desired.preview_target
        log.debug("envoy routes applied", version=version, canary_weight=desired.canary_weight)

    async def read_back(self) -> AppliedRoutes:
        dump = await self._get_json("/config_dump?resource=dynamic_route_configs")
        return applied_from_dump(dump, self.desired.names)[1]

    # --- admin API -------------------------------------------------------------------------

    async def _get_json(self, path: str) -> dict[str, Any]:
        try:
            async with self._control.current().get(self.admin_url + path) as response:
                if response.status != 200:
                    raise RouterApplyError(f"Envoy admin {path} answered HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RouterApplyError(f"Envoy admin {self.admin_url} unreachable: {error!r}") from error
        return data if isinstance(data, dict) else {}

    async def _update_stats(self, prefix: str) -> tuple[str | None, int]:
        """(version_text, rejections) of one xDS subscription (`http.ingress.rds.meshshift_routes.`).

        `version_text` moves on every accepted update, even one identical to the last
        (which config_dump does not show); rejected and failed updates are counted.
        """
        pattern = "^" + prefix.replace(".", "[.]") + "(version_text|update_rejected|update_failure)$"
        stats = await self._get_json(f"/stats?format=json&filter={pattern}")
        version: str | None = None
        rejections = 0
        for stat in stats.get("stats", []):
            name = str(stat.get("name", ""))
            if name.endswith("version_text"):
                version = str(stat.get("value"))
            elif name.endswith(("update_rejected", "update_failure")):
                rejections += int(stat.get("value", 0))
        return version, rejections

    async def _write_and_wait(
        self, path: Path, document: Mapping[str, Any], version: str, prefix: str
    ) -> None:
        _, before = await self._update_stats(prefix)
        write_atomically(path, document)
        await self._wait_for(path, version, prefix, before)

    async def _wait_for(self, path: Path, version: str, prefix: str, rejections_before: int) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while True:
            applied, rejections = await self._update_stats(prefix)
            if applied == version:
                return
            if rejections > rejections_before:
                raise RouterApplyError(
                    f"Envoy rejected {path.name} version {version}; it keeps the previous one. "
                    f"Envoy's log ({self.files.log}) says: {last_log_line(self.files.log)}"
                )
            if time.monotonic() > deadline:
                raise RouterApplyError(
                    f"Envoy did not apply {path.name} version {version} within {APPLY_TIMEOUT:g}s"
                )
            await asyncio.sleep(0.005)


# --- running Envoy -------------------------------------------------------------------


@dataclasses.dataclass
class EnvoyInstance(ProxyInstance):
    router: EnvoyRouter
    process: ProxyProcess | None  # None in attach mode: someone else runs Envoy
    admin: str

    @property
    def admin_url(self) -> str:
        return client_url(self.admin)


def _existing_admin(files: EnvoyFiles) -> str | None:
    try:
        bootstrap = json.loads(files.bootstrap.read_text())
        address = bootstrap["admin"]["address"]["socket_address"]
        return f"{address['address']}:{int(address['port_value'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def envoy_command(binary: str, files: EnvoyFiles, config: EnvoyRouterConfig) -> list[str]:
    argv = [binary, "-c", str(files.bootstrap), "-l", "warning"]
    # meshshift changes routes through RDS and never hot-restarts Envoy; without hot restart
    # two Envoys on one host need no distinct --base-id, and nothing is left in /dev/shm.
    argv += ["--base-id", str(config.base_id)] if config.base_id is not None else ["--disable-hot-restart"]
    return argv


def envoy_process(files: EnvoyFiles) -> OwnedProxy:
    return OwnedProxy(
        "envoy",
        root=files.root,
        pid_file=files.pid,
        config_file=files.bootstrap,
        log_path=files.log,
    )


@contextlib.asynccontextmanager
async def running_envoy(
    config: EnvoyRouterConfig, desired: DesiredRoutes, *, config_dir: Path, node_id: str = "meshshift"
) -> AsyncIterator[EnvoyInstance]:
    """Start (or adopt, or attach to) Envoy serving `desired`; stop what we started at the end."""
    files = EnvoyFiles(Path(config.config_dir) if config.config_dir else config_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    proxy = envoy_process(files)
    admin = control_address(
        proxy,
        config.admin,
        existing=lambda: _existing_admin(files),
        attach_field="spec.router.envoy.admin" if config.attach else None,
    )
    preview = config.preview_listen
    bootstrap = render_bootstrap(files, listen=config.listen, admin=admin, node_id=node_id, preview=preview)
    router = EnvoyRouter(files, client_url(admin), desired, preview=preview is not None)
    process: ProxyProcess | None = None
    try:
        if config.attach:
            # For whoever runs that Envoy: the bootstrap, and the files it must find at start.
            write_atomically(files.bootstrap, bootstrap)
            needed = (files.clusters, files.routes, *((files.preview_routes,) if preview else ()))
            if not all(path.exists() for path in needed):
                router.write_files(desired)
            await wait_until_http_ready(router.admin_url + "/ready", wait_seconds=ATTACH_WAIT)
            await router.apply(desired)
        else:
            process = await _start_or_adopt(proxy, config, bootstrap, router, desired)
        yield EnvoyInstance(
            router=router, process=process, listen=config.listen, admin=admin, preview=preview
        )
    finally:
        await router.close()
        if process is not None:
            await proxy.stop(process)


async def _start_or_adopt(
    proxy: OwnedProxy,
    config: EnvoyRouterConfig,
    bootstrap: Mapping[str, Any],
    router: EnvoyRouter,
    desired: DesiredRoutes,
) -> ProxyProcess:
    files = router.files
    ready_url = router.admin_url + "/ready"
    adopted = await proxy.adopt(
        fits=_same_bootstrap(files, bootstrap), ready_url=ready_url, take_over=lambda _: router.apply(desired)
    )
    if adopted is not None:
        return adopted
    ports = {config.listen: "spec.router.envoy.listen", admin_address(bootstrap): "spec.router.envoy.admin"}
    if config.preview_listen is not None:
        ports[config.preview_listen] = "spec.preview.listen"
    for address, field in ports.items():
        ensure_free(address, field)  # before anything starts: the error names the field
    write_atomically(files.bootstrap, bootstrap)
    router.write_files(desired)
    try:
        return await proxy.start(
            envoy_command(find_envoy(config.binary), files, config),
            ready_url=ready_url,
            until_serving=lambda _: router.apply(desired),  # and wait until it reports our versions
            details={"listen": config.listen, "admin": router.admin_url},
        )
    except ProcessFailedError as error:
        # Taken between the check and Envoy's bind: the same error, read from Envoy's log.
        raise bind_failure(files.log, ports) or error from error


def admin_address(bootstrap: Mapping[str, Any]) -> str:
    address = bootstrap["admin"]["address"]["socket_address"]
    host = str(address["address"])
    return f"[{host}]:{address['port_value']}" if ":" in host else f"{host}:{address['port_value']}"


def _same_bootstrap(files: EnvoyFiles, bootstrap: Mapping[str, Any]) -> bool:
    try:
        return bool(json.loads(files.bootstrap.read_text()) == bootstrap)
    except (OSError, ValueError):
        return False
