"""`meshshift run --config rollout.yaml`: one rollout, a local Envoy, NGINX or Traefik, no Kubernetes.

The same engine and RolloutController as Kubernetes mode, with standalone adapters:
the router drives the proxy it runs (or attaches to), the workloads are the endpoint
sets of the rollout file, and the state lives in one JSON file replaced atomically.

The rollout file may hold AnalysisTemplate documents next to the StandaloneRollout
(separated by `---`); its `spec.templates` and the builtin templates are known too. The
file is re-read when it changes: new canary endpoints start a new rollout, new steps or
analysis apply at once, and a file that does not parse keeps everything as it was (the
rollout holds, traffic does not change) until it is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from meshshift.analysis.providers import (
    BuiltinTarget,
    BuiltinTemplates,
    ChainedTemplates,
    InlineTemplates,
    default_providers,
)
from meshshift.analysis.providers.builtin import Source
from meshshift.engine.actions import StartAnalysis
from meshshift.ports import MetricProvider, StoredRollout, TemplateSource
from meshshift.processes import ProcessFailedError
from meshshift.routers import envoy as envoy_router
from meshshift.routers import nginx_conf, traefik_file
from meshshift.routers.proxy_process import ProxyNotFoundError, ProxyProcess
from meshshift.routers.proxy_routes import (
    CANARY,
    STABLE,
    DesiredRoutes,
    ModelRouter,
    RouterApplyError,
    RouterConfigError,
    upstream_names,
)
from meshshift.runtime.analysis import ArgContext, builtin_args
from meshshift.runtime.controller import RolloutController, RolloutKey, RolloutSnapshot
from meshshift.runtime.events import FanOutEvents, LogEvents
from meshshift.runtime.lifecycle import run_until_stopped
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings
from meshshift.spec.errors import Findings, SpecError, SpecIssue
from meshshift.spec.model import (
    AnalysisRef,
    AnalysisTemplate,
    EnvoyRouterConfig,
    NginxRouterConfig,
    RolloutSpec,
    StandaloneRollout,
    StandaloneRouterConfig,
    StepAnalysis,
    TraefikRouterConfig,
)
from meshshift.spec.rollout import BUILTIN_TEMPLATE_NAMES
from meshshift.spec.standalone import parse_standalone, router_kind
from meshshift.spec.templates import TEMPLATE_KINDS, read_template
from meshshift.spec.yamldoc import load_all
from meshshift.standalone.state_file import (
    EndpointSet,
    StateFile,
    StateFileError,
    StateFileStore,
    recorded_stable,
    recorded_workloads,
)
from meshshift.standalone.workloads import EndpointWorkloads, effective_canary, endpoints_revision

log = structlog.get_logger(__name__)

NAMESPACE = "standalone"  # RolloutKey(namespace, metadata.name)
# The values of {{args.canary-hash}} / {{args.baseline-hash}}: the `version` labels of the
# tutorial's queries (`http_requests_total{version="canary"}`). The proxy's upstreams are
# named `<name>-primary` and `<name>-canary` (upstream_names), as Flagger's dashboards expect.
CANARY_HASH, STABLE_HASH = CANARY, STABLE
DEFAULT_LISTEN = DaemonSettings().listen
RELOAD_INTERVAL = 1.0  # how often the rollout file and the endpoints' readiness are checked


class ProxyExitedError(RuntimeError):
    """The proxy the daemon runs has exited."""


# What stops `meshshift run` with a message (and a non-zero exit) rather than a traceback.
FATAL_ERRORS = (
    ProxyExitedError,
    StateFileError,
    ProxyNotFoundError,
    RouterConfigError,
    RouterApplyError,
    ProcessFailedError,
    OSError,
)


class RolloutFileError(ValueError):
    """The rollout file cannot be used; the message names the file, the field and the reason."""


# --- the rollout file ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutFile:
    rollout: StandaloneRollout
    templates: Mapping[str, AnalysisTemplate]  # the file's template documents and spec.templates


def load_rollout_file(path: Path) -> RolloutFile:
    """The StandaloneRollout of `path`, with the AnalysisTemplate documents next to it."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RolloutFileError(f"{path}: cannot read: {error.strerror or error}") from error
    return parse_rollout_text(text, str(path))


def parse_rollout_text(text: str, filename: str) -> RolloutFile:
    documents, syntax = load_all(text)
    if syntax is not None:
        raise RolloutFileError(
            f"{filename}: invalid YAML at line {syntax.line}, column {syntax.column}: {syntax.message}"
        )
    findings = Findings()
    templates: dict[str, AnalysisTemplate] = {}
    rollouts: list[tuple[int, Any]] = []
    for document in documents:
        data = document.data
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if kind in TEMPLATE_KINDS:
            template = read_template(data, findings, f"[document {document.index + 1}]")
            if template is not None:
                templates[template.name] = template
        elif kind == "StandaloneRollout":
            rollouts.append((document.index, data))
        elif data is not None:
            findings.error(
                f"[document {document.index + 1}]",
                f"kind {kind!r} is not a StandaloneRollout or an AnalysisTemplate",
            )
    if len(rollouts) != 1:
        findings.error("", f"needs exactly one StandaloneRollout document, found {len(rollouts)}")
    if findings.has_errors:
        raise RolloutFileError(_describe(filename, findings.issues))
    try:
        rollout = parse_standalone(rollouts[0][1], templates=templates)
    except SpecError as error:
        raise RolloutFileError(_describe(filename, error.errors)) from error
    templates.update({t.name: t for t in rollout.templates})
    unsupported = unsupported_by_router(rollout, templates)
    if unsupported:
        raise RolloutFileError(_describe(filename, unsupported))
    return RolloutFile(rollout, templates)


def unsupported_by_router(
    rollout: StandaloneRollout, templates: Mapping[str, AnalysisTemplate]
) -> list[SpecIssue]:
    if not isinstance(rollout.router, NginxRouterConfig):
        return []
    issues = nginx_conf.unsupported_steps(rollout.rollout.steps)
    blue_green = rollout.rollout.blue_green
    if blue_green is not None and blue_green.preview_header_route is not None:
        route = blue_green.preview_header_route
        issues += nginx_conf.unsupported_steps([route], "spec.blueGreen.previewHeaderRoute")
    for path, ref in analysis_refs(rollout.rollout):
        for index, template in enumerate(ref.templates):
            name = template.template_name
            if name in BUILTIN_TEMPLATE_NAMES and name not in templates:
                issues.append(
                    SpecIssue(
                        f"{path}.templates[{index}].templateName",
                        f'the builtin template "{name}" reads Envoy\'s metrics, and the nginx router '
                        f"has none: define an AnalysisTemplate named {name} (e.g. on your app's metrics)",
                    )
                )
    return issues


def analysis_refs(spec: RolloutSpec) -> list[tuple[str, AnalysisRef]]:
    refs = [
        (f"spec.steps[{i}].analysis", s.analysis)
        for i, s in enumerate(spec.steps)
        if isinstance(s, StepAnalysis)
    ]
    if spec.analysis is not None:
        refs.append(("spec.analysis", spec.analysis.analysis))
    blue_green = spec.blue_green
    if blue_green is not None:
        for field, ref in (
            ("prePromotionAnalysis", blue_green.pre_promotion_analysis),
            ("postPromotionAnalysis", blue_green.post_promotion_analysis),
        ):
            if ref is not None:
                refs.append((f"spec.blueGreen.{field}", ref))
    return refs


def _describe(filename: str, issues: Sequence[SpecIssue]) -> str:
    lines = [f"{filename}: {issue}" for issue in issues if issue.severity == "error"]
    return "\n".join(lines) or f"{filename}: invalid"


# --- templates and providers --------------------------------------------------------


def analysis_plugins(
    rollout: StandaloneRollout, *, prometheus_address: str | None, envoy_admin_url: str | None
) -> tuple[dict[str, MetricProvider], TemplateSource | None]:
    """The metric providers, and the builtin templates (Envoy and Traefik: NGINX reports no metrics).

    Envoy's builtins query Prometheus when one is configured (it must scrape Envoy's admin
    `/stats/prometheus`), else they read Envoy's admin endpoint directly. Traefik's query the
    Prometheus that scrapes Traefik's `/metrics` (on its API entry point) for `<name>-canary@file`.
    """
    names = upstream_names(rollout.name)
    providers = default_providers(
        prometheus_address=prometheus_address,
        envoy_admin_url=envoy_admin_url,
        envoy_cluster=names.canary,
        envoy_stable_cluster=names.stable,
    )
    if isinstance(rollout.router, TraefikRouterConfig):
        target = BuiltinTarget(
            traefik_service=f"{names.canary}@{traefik_file.PROVIDER}",
            traefik_stable_service=f"{names.stable}@{traefik_file.PROVIDER}",
        )
        return providers, BuiltinTemplates("traefik", target)
    if not isinstance(rollout.router, EnvoyRouterConfig):
        return providers, None
    source: Source = "prometheus" if prometheus_address else "envoy-admin"
    target = BuiltinTarget(canary_cluster=names.canary, stable_cluster=names.stable)
    return providers, BuiltinTemplates("envoy", target, source=source)


def template_source(
    templates: Mapping[str, AnalysisTemplate], builtin: TemplateSource | None
) -> ChainedTemplates:
    user = InlineTemplates(*templates.values())
    return ChainedTemplates(user, builtin) if builtin is not None else ChainedTemplates(user)


def standalone_arg_context(
    rollout: StandaloneRollout, workloads: EndpointWorkloads | None = None
) -> Callable[[StartAnalysis], ArgContext]:
    """{{args.canary-hash}} and {{args.stable-hash}}: the `version` labels of the two endpoint sets
    when the file gives them, else `canary` and `stable`."""

    def context(action: StartAnalysis) -> ArgContext:
        canary = workloads.version_of(action.revision) if workloads else None
        stable = workloads.version_of(action.stable_revision) if workloads else None
        return ArgContext(
            builtin_args=builtin_args(
                canary=canary or CANARY_HASH, stable=stable or STABLE_HASH, namespace=None
            ),
            metadata=rollout.metadata,  # fieldRef args read the rollout file's metadata
        )

    return context


# --- the runtime --------------------------------------------------------------------


@dataclass
class StandaloneRuntime:
    """A running standalone rollout: its proxy, its controller, its HTTP listener."""

    rollout: StandaloneRollout
    key: RolloutKey
    registry: RolloutRegistry
    controller: RolloutController
    templates: ChainedTemplates
    builtin_templates: TemplateSource | None
    router: ModelRouter
    workloads: EndpointWorkloads
    state_file: StateFile
    proxy_url: str
    envoy_admin_url: str | None
    preview_url: str | None = None  # the preview listener (spec.preview.listen)
    proxy_process: ProxyProcess | None = None
    http_url: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def check_proxy(self) -> None:
        """Raise ProxyExitedError when the proxy this daemon runs is gone.

        The daemon then stops with an error, and whoever restarts it (systemd, a
        container runtime) gets a fresh proxy serving the routes of the state file.
        """
        process = self.proxy_process
        if process is not None and not process.running:
            raise ProxyExitedError(f"{self.router.name} exited; its log: {process.log_path}")

    def start(self) -> None:
        """Start reconciling (once): the rollout begins, or resumes from the state file."""
        if not self.tasks:
            self.tasks.append(asyncio.create_task(self.controller.run(), name=f"rollout:{self.key}"))
            self.tasks.append(asyncio.create_task(_poke_on_readiness(self), name="readiness"))

    def update(self, loaded: RolloutFile) -> None:
        """A re-read rollout file: new steps, templates and analysis, and maybe a new canary."""
        rollout = loaded.rollout
        if rollout.router != self.rollout.router:
            log.error("spec.router changed: restart meshshift to apply it; the running proxy stays as it is")
            rollout = dataclasses.replace(rollout, router=self.rollout.router)
        if rollout.stable != self.rollout.stable and recorded_stable(self.state_file) is not None:
            log.warning(
                "spec.stable changed, but the state file records the stable of the last promotion; "
                "it stays the stable",
                recorded=list(self.workloads.stable),
            )
        self.workloads.set_canary(rollout.canary.endpoints, rollout.canary.version)
        self.templates.sources = template_source(loaded.templates, self.builtin_templates).sources
        self.rollout = rollout
        self.controller.update_spec(rollout.rollout)


def resolve_path(path: str, base_dir: Path) -> Path:
    """A path of the rollout file: relative ones are relative to the file, not to the cwd.

    A daemon restarted from another directory must find the same state, the same proxy
    directory (and so the proxy it started) and the same binaries.
    """
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


def state_file_path(rollout: StandaloneRollout, base_dir: Path) -> Path:
    if rollout.state_file:
        return resolve_path(rollout.state_file, base_dir)
    return base_dir / f"{rollout.name}.state.json"


def proxy_dir(rollout: StandaloneRollout, base_dir: Path) -> Path:
    """spec.router.*.configDir, else `.meshshift/<name>/<router>` next to the rollout file."""
    if rollout.router.config_dir:
        return resolve_path(rollout.router.config_dir, base_dir)
    return base_dir / ".meshshift" / rollout.name / router_kind(rollout.router)


def router_config(rollout: StandaloneRollout, base_dir: Path) -> StandaloneRouterConfig:
    """spec.router with its paths resolved against the rollout file's directory.

    A binary given as a bare name (`nginx`) is looked up on PATH, as a shell would.
    """
    config = rollout.router
    binary = config.binary
    if binary and os.sep in binary:
        binary = str(resolve_path(binary, base_dir))
    return dataclasses.replace(config, config_dir=str(proxy_dir(rollout, base_dir)), binary=binary)


def initial_routes(
    rollout: StandaloneRollout,
    stored: StoredRollout | None,
    stable: Sequence[str],
    canary: Sequence[str] | None = None,
) -> DesiredRoutes:
    """What the proxy serves before the controller resyncs: the persisted routes, if they still apply.

    `canary`: the canary endpoints in force (an `undo`'s), when not the file's."""
    names = upstream_names(rollout.name)
    canary = tuple(canary) if canary is not None else rollout.canary.endpoints
    routes = DesiredRoutes(stable=tuple(stable), canary=canary, names=names)
    if stored is None or stored.rollout.canary_revision != endpoints_revision(canary):
        return routes  # nothing persisted, or a different canary: all traffic on the stable
    state = stored.rollout
    return DesiredRoutes(
        stable=routes.stable,
        canary=routes.canary,
        canary_weight=state.desired_weight,
        header_routes=state.header_routes,
        mirror_routes=state.mirror_routes,
        names=names,
        # The preview reaches the canary while the state has it scaled up (see EndpointWorkloads).
        preview_canary=state.canary_scale.replicas_for(100, state.desired_weight) > 0,
    )


@contextlib.asynccontextmanager
async def standalone_runtime(
    loaded: RolloutFile,
    *,
    base_dir: Path,
    settings: DaemonSettings,
    serve_http: bool = True,
    start: bool = True,
) -> AsyncIterator[StandaloneRuntime]:
    """Run the rollout until the block ends: proxy up, controller running, listener serving.

    Relative paths of the rollout (state file, proxy directory) are taken from `base_dir`.
    With `start=False` the proxy serves the stable (or the persisted routes) and nothing
    moves until `runtime.start()`.
    """
    rollout = loaded.rollout
    key = RolloutKey(NAMESPACE, rollout.name)
    state_file = StateFile(state_file_path(rollout, base_dir))
    store = StateFileStore(state_file)
    stored = await store.load()
    stable = recorded_stable(state_file) or rollout.stable.endpoints
    file_canary = EndpointSet(rollout.canary.endpoints, rollout.canary.version)
    canary = effective_canary(recorded_workloads(state_file), file_canary).endpoints
    desired = initial_routes(rollout, stored, stable, canary)
    async with contextlib.AsyncExitStack() as stack:
        proxy = await _start_proxy(stack, rollout, desired, base_dir)
        router, admin_url = proxy.router, proxy.admin_url
        workloads = EndpointWorkloads(
            state_file,
            stable=stable,
            canary=rollout.canary.endpoints,
            set_upstreams=router.set_upstreams,
            set_preview=router.set_preview,
            stable_version=rollout.stable.version,
            canary_version=rollout.canary.version,
        )
        prometheus = settings.prometheus_address or (rollout.extra.get("prometheus") or {}).get("address")
        providers, builtin = analysis_plugins(
            rollout, prometheus_address=prometheus, envoy_admin_url=admin_url
        )
        templates = template_source(loaded.templates, builtin)
        registry = RolloutRegistry()
        from meshshift.observe.metrics import RolloutMetrics
        from meshshift.observe.server import serve

        metrics = RolloutMetrics(registry)
        stack.callback(metrics.close)
        controller = RolloutController(
            key,
            spec=rollout.rollout,
            routers=[router],
            workloads=workloads,
            store=store,
            templates=metrics.template_source(key, templates),
            providers=providers,
            events=FanOutEvents([LogEvents(rollout=str(key)), metrics.event_sink(key)]),
            arg_context=standalone_arg_context(rollout, workloads),
            clock=time.time,
            measurement_timeout=settings.measurement_timeout,
        )
        workloads.on_change = controller.poke
        registry.add(controller)
        registry.undo_handlers[key] = workloads.undo
        registry.listeners.append(_ready_after_first_reconcile(registry))
        runtime = StandaloneRuntime(
            rollout=rollout,
            key=key,
            registry=registry,
            controller=controller,
            templates=templates,
            builtin_templates=builtin,
            router=router,
            workloads=workloads,
            state_file=state_file,
            proxy_url=proxy.url,
            envoy_admin_url=admin_url,
            proxy_process=proxy.process,
            preview_url=proxy.preview_url,
        )
        if serve_http:
            runtime.http_url = await stack.enter_async_context(
                serve(registry, settings, rollout_metrics=metrics)
            )
        if start:
            runtime.start()
        try:
            yield runtime
        finally:
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)


def _ready_after_first_reconcile(
    registry: RolloutRegistry,
) -> Callable[[RolloutKey, RolloutSnapshot | None], None]:
    """/readyz answers 200 once the rollout has been reconciled (its state file read) once."""

    def listener(_key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        if snapshot is not None and snapshot.reconcile_seconds is not None:
            registry.ready = True

    return listener


@dataclass(frozen=True, slots=True)
class _Proxy:
    router: ModelRouter
    url: str
    admin_url: str | None
    process: ProxyProcess | None  # None: attached to an Envoy someone else runs
    preview_url: str | None = None


async def _start_proxy(
    stack: contextlib.AsyncExitStack, rollout: StandaloneRollout, desired: DesiredRoutes, base_dir: Path
) -> _Proxy:
    proxy = await _enter_proxy(stack, rollout, desired, base_dir)
    # Registered after the proxy's context, so it runs first on the way out.
    stack.callback(_announce_stop, proxy, router_config(rollout, base_dir).listen)
    return proxy


ATTACHABLE = ("envoy", "traefik")  # routers that can drive a proxy someone else runs


def _announce_stop(proxy: _Proxy, listen: str) -> None:
    """Say, on a clean stop (SIGTERM, SIGINT), what becomes of the proxy."""
    name = proxy.router.name
    if proxy.process is None:
        log.info(f"stopping; the {name} meshshift is attached to keeps serving", listen=listen)
        return
    keep = (
        "with attach: true, a proxy you run keeps serving across restarts"
        if name in ATTACHABLE
        else f"the {name} router has no attach mode: use envoy or traefik with attach: true to keep serving"
    )
    log.info(
        f"stopping the {name} meshshift started for this rollout; {listen} stops serving until "
        f"meshshift runs again ({keep})",
        proxy_log=str(proxy.process.log_path),
        listen=listen,
    )


async def _enter_proxy(
    stack: contextlib.AsyncExitStack, rollout: StandaloneRollout, desired: DesiredRoutes, base_dir: Path
) -> _Proxy:
    config = router_config(rollout, base_dir)
    directory = proxy_dir(rollout, base_dir)
    if isinstance(config, EnvoyRouterConfig):
        envoy = await stack.enter_async_context(
            envoy_router.running_envoy(
                config, desired, config_dir=directory, node_id=f"meshshift-{rollout.name}"
            )
        )
        return _Proxy(envoy.router, envoy.proxy_url, envoy.admin_url, envoy.process, envoy.preview_url)
    if isinstance(config, TraefikRouterConfig):
        traefik = await stack.enter_async_context(
            traefik_file.running_traefik(config, desired, config_dir=directory)
        )
        return _Proxy(traefik.router, traefik.proxy_url, None, traefik.process, traefik.preview_url)
    nginx = await stack.enter_async_context(nginx_conf.running_nginx(config, desired, config_dir=directory))
    return _Proxy(nginx.router, nginx.proxy_url, None, nginx.process, nginx.preview_url)


async def _poke_on_readiness(runtime: StandaloneRuntime) -> None:
    """Reconcile when an endpoint set becomes ready or unready (nothing else would notice)."""
    last: tuple[bool, bool] | None = None
    while True:
        status = await runtime.workloads.observe()
        current = (status.stable_ready, status.canary_ready)
        if last is not None and current != last:
            runtime.controller.poke()
        last = current
        await asyncio.sleep(RELOAD_INTERVAL)


async def follow_rollout_file(runtime: StandaloneRuntime, path: Path) -> None:
    """Re-read the rollout file when it changes; a broken file changes nothing.

    Returns (raising ProxyExitedError) when the proxy exits.
    """
    seen = _fingerprint(path)
    while True:
        await asyncio.sleep(RELOAD_INTERVAL)
        runtime.check_proxy()
        current = _fingerprint(path)
        if current == seen:
            continue
        seen = current
        try:
            loaded = load_rollout_file(path)
        except RolloutFileError as error:
            log.error("the rollout file is invalid; nothing changes until it is fixed", error=str(error))
            runtime.controller.update_spec(None, str(error))
            continue
        log.info("the rollout file changed", path=str(path))
        runtime.update(loaded)


def _fingerprint(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime, stat.st_size


def absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def listen_address(settings: DaemonSettings, rollout: StandaloneRollout) -> str:
    """--listen / MESHSHIFT_LISTEN when given, else the file's spec.metrics.listen, else the default."""
    from_file = (rollout.extra.get("metrics") or {}).get("listen")
    if settings.listen == DEFAULT_LISTEN and from_file:
        return str(from_file)
    return settings.listen


async def run_standalone(settings: DaemonSettings) -> None:
    """Run the rollout of `settings.config` until SIGINT or SIGTERM."""
    assert settings.config is not None
    path = absolute(settings.config)
    try:
        loaded = load_rollout_file(path)
    except RolloutFileError as error:
        raise SystemExit(f"meshshift: {error}") from None  # said once, on stderr, by the exit
    settings = dataclasses.replace(settings, listen=listen_address(settings, loaded.rollout))
    try:
        await run_until_stopped(_run(loaded, path, settings))
    except FATAL_ERRORS as error:
        raise SystemExit(f"meshshift: {error}") from None  # said once, on stderr, by the exit


async def _run(loaded: RolloutFile, path: Path, settings: DaemonSettings) -> None:
    async with standalone_runtime(loaded, base_dir=path.parent, settings=settings) as runtime:
        log.info(
            "standalone rollout running",
            rollout=str(runtime.key),
            router=runtime.router.name,
            proxy=runtime.proxy_url,
            preview=runtime.preview_url,
            listen=runtime.http_url,
            state_file=str(runtime.state_file.path),
        )
        await follow_rollout_file(runtime, path)
