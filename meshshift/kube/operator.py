"""`meshshift run` in Kubernetes mode: one RolloutController per annotated Deployment.

The daemon lists and watches Deployments (the namespace of `--namespace`, or all; the
`--selector` label selector) and keeps a controller for each one annotated
`meshshift.io/enabled: "true"`. Changes of the `meshshift.io/*` annotations update the
controller's spec, or restart it when the routing target changes; deletion or opting
out stops it. Status changes of the Deployment or of its `-primary` poke the controller,
which is how it learns that pods became ready: there is no polling.

Only the leader (a Lease, see leader.py; on by default) runs controllers, writes Events
and handles commands. A standby keeps its informer warm and takes over when the Lease
comes free. With `--shards K`, each rollout belongs to one of K shards (shards.py), each
guarded by its own Lease: a replica runs the rollouts of the shards it holds. Leader
election runs on a thread of its own (election.py), and every write the daemon sends for a
rollout is fenced: it goes out only while the Lease of the rollout's shard is held.

An invalid spec gets a Warning Event carrying the lint findings and changes no object: a
new Deployment gets no controller, a running one holds where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.analysis.providers import BuiltinTarget, BuiltinTemplates, ChainedTemplates, default_providers
from meshshift.analysis.providers.builtin import GATEWAY_API_MESHES, traefik_backend_selector
from meshshift.backoff import Backoff
from meshshift.engine.actions import StartAnalysis
from meshshift.kube.client import connect, default_identity, pod_namespace
from meshshift.kube.commands import COMMAND_ANNOTATION, CommandTracker, accepts
from meshshift.kube.election import ElectionThread
from meshshift.kube.events import EventPoster, KubeEventSink, invalid_spec_event
from meshshift.kube.informer import DELETED, READ_GRACE, WATCH_TIMEOUT, Informer
from meshshift.kube.leader import LeaseTimings
from meshshift.kube.ratelimit import FairRateLimiter
from meshshift.kube.resources import (
    DEPLOYMENTS,
    JsonObject,
    KubeApi,
    KubeApiError,
    KubeRequests,
    object_key,
    requests_owned_by,
)
from meshshift.kube.shards import shard_leases, shard_of
from meshshift.kube.state_store import ConfigMapStateStore
from meshshift.kube.tasks import cancel_and_wait
from meshshift.kube.templates import ClusterTemplates, KubeSecretReader
from meshshift.kube.workloads import PRIMARY_OF_LABEL, KubeWorkloads, deployment_replicas
from meshshift.observe.metrics import RolloutMetrics
from meshshift.observe.notifications import (
    PAGERDUTY_SECRET_KEY,
    Notifier,
    RoutingKeyError,
    RoutingKeySource,
    receivers_from_annotations,
)
from meshshift.observe.server import serve
from meshshift.ports import MetricProvider, WorkloadStatus
from meshshift.routers.gateway_api import GatewayApiRouter
from meshshift.routers.istio import IstioRouter
from meshshift.routers.nginx_ingress import NginxIngressRouter
from meshshift.routers.traefik import TraefikRouter
from meshshift.runtime.analysis import ArgContext, builtin_args
from meshshift.runtime.controller import RolloutController, RolloutKey
from meshshift.runtime.events import FanOutEvents, LogEvents
from meshshift.runtime.lifecycle import run_until_stopped
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings
from meshshift.spec.annotations import (
    COMMAND,
    ENABLED,
    PREFIX,
    ROUTER,
    annotation_path,
    read_deployment,
)
from meshshift.spec.errors import Findings, SpecIssue
from meshshift.spec.ingress_nginx import DEFAULT_PREFIX, weight_total_problem
from meshshift.spec.model import ROUTER_KINDS, AnnotatedDeployment, KubernetesTarget, RolloutSpec

log = structlog.get_logger(__name__)
EVENT_FLUSH_SECONDS = 5.0  # a stopping rollout's queued Events get this long to go out


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """Knobs beyond DaemonSettings (environment: MESHSHIFT_<NAME>)."""

    request_timeout: float = 30.0
    watch_timeout: int = WATCH_TIMEOUT  # seconds a watch stays open before it is renewed
    watch_read_grace: float = READ_GRACE  # beyond watch_timeout: silence that ends a watch
    abort_scale_down_delay: float | None = None  # None: the spec's (30 s)
    nginx_annotation_prefix: str = DEFAULT_PREFIX
    nginx_weight_total: int | None = None
    istio_api_version: str = "v1beta1"
    # Whose metrics the builtin templates read for `gateway-api` routes (GATEWAY_API_MESHES'
    # keys: istio, traefik); None: no builtins for them (write your own templates).
    gateway_api_metrics: str | None = None
    providers: Mapping[str, MetricProvider] | None = None  # None: default_providers()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorOptions:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if value := env.get("MESHSHIFT_REQUEST_TIMEOUT"):
            values["request_timeout"] = float(value)
        if value := env.get("MESHSHIFT_ABORT_SCALE_DOWN_DELAY"):
            values["abort_scale_down_delay"] = float(value)
        if value := env.get("MESHSHIFT_NGINX_ANNOTATION_PREFIX"):
            values["nginx_annotation_prefix"] = value
        if value := env.get("MESHSHIFT_NGINX_WEIGHT_TOTAL"):
            values["nginx_weight_total"] = _weight_total(value)
        if value := env.get("MESHSHIFT_ISTIO_API_VERSION"):
            values["istio_api_version"] = value
        if value := env.get("MESHSHIFT_GATEWAY_API_METRICS"):
            if value not in GATEWAY_API_MESHES:
                known = ", ".join(GATEWAY_API_MESHES)
                raise ValueError(f"MESHSHIFT_GATEWAY_API_METRICS: {value!r} is not one of {known}")
            values["gateway_api_metrics"] = value
        return cls(**values)


class OptionsError(ValueError):
    """A MESHSHIFT_* option the daemon cannot start with."""


def _weight_total(value: str) -> int:
    try:
        total = int(value)
    except ValueError:
        raise OptionsError(f"MESHSHIFT_NGINX_WEIGHT_TOTAL={value} is not an integer") from None
    problem = weight_total_problem(total)
    if problem:
        raise OptionsError(f"MESHSHIFT_NGINX_WEIGHT_TOTAL={total}: {problem}")
    return total


Fingerprint = tuple[object, tuple[tuple[str, object], ...]]


@dataclass
class WatchedDeployment:
    """What the informer last reported of one opted-in (or once opted-in) Deployment."""

    manifest: JsonObject
    fingerprint: Fingerprint
    enabled: bool
    parsed: AnnotatedDeployment | None
    issues: tuple[SpecIssue, ...]

    @property
    def errors(self) -> tuple[SpecIssue, ...]:
        return tuple(issue for issue in self.issues if issue.severity == "error")

    @property
    def uid(self) -> str:
        return str((self.manifest.get("metadata") or {}).get("uid") or "")

    @property
    def command(self) -> str | None:
        value = ((self.manifest.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
        return value if isinstance(value, str) else None


@dataclass
class RunningRollout:
    controller: RolloutController
    tracker: CommandTracker
    target: KubernetesTarget
    spec: RolloutSpec
    uid: str
    workloads: KubeWorkloads
    task: asyncio.Task[None] | None = None


def _fingerprint(manifest: Mapping[str, Any]) -> Fingerprint:
    """What a change of means the spec is read again: the uid and meshshift's annotations.

    Compared on every watch event of every Deployment, so a tuple, not a serialisation.
    """
    meta = manifest.get("metadata") or {}
    annotations = sorted(
        (k, v)
        for k, v in (meta.get("annotations") or {}).items()
        if isinstance(k, str) and k.startswith(PREFIX) and k != COMMAND_ANNOTATION
    )
    return meta.get("uid"), tuple(annotations)


def _opted_in(manifest: Mapping[str, Any]) -> bool:
    value = ((manifest.get("metadata") or {}).get("annotations") or {}).get(ENABLED)
    return value in ("true", True)


def _target_key(target: KubernetesTarget) -> KubernetesTarget:
    return dataclasses.replace(target, command=None)


class Operator:
    def __init__(self, settings: DaemonSettings, options: OperatorOptions | None = None) -> None:
        self.settings = settings
        self.options = options or OperatorOptions()
        self.identity = settings.identity or default_identity()
        self.registry = RolloutRegistry()
        self.registry.is_leader = not settings.leader_elect
        self.kube_requests = KubeRequests()  # every API call, for controller_clientset_k8s_request_total
        self.metrics = RolloutMetrics(self.registry, kube_requests=self.kube_requests)
        self.notifier = Notifier.from_settings(settings.notifications)
        self.watched: dict[RolloutKey, WatchedDeployment] = {}
        self.running: dict[RolloutKey, RunningRollout] = {}
        self.shards = max(1, settings.shards) if settings.leader_elect else 1
        self.lease_names = shard_leases(self.shards, settings.lease_name)
        # The shards whose rollouts this daemon runs (all of them without leader election).
        self.held: set[int] = set() if settings.leader_elect else set(range(self.shards))
        self._giving_up: set[int] = set()  # shards to release once their rollouts stopped
        self.url: str | None = None
        self.ready = asyncio.Event()  # listening, and the first listing is in
        self.leader = asyncio.Event()  # set while this daemon holds a shard (leads)
        if self.leading:
            self.leader.set()
        self.election: ElectionThread | None = None
        self.informer: Informer | None = None
        self._api: KubeApi | None = None
        self._providers: Mapping[str, MetricProvider] = {}
        self._secrets: KubeSecretReader | None = None
        self.event_poster: EventPoster | None = None
        self._changed = asyncio.Event()
        self._dirty: set[RolloutKey] = set()
        self._reported_invalid: dict[RolloutKey, str] = {}
        self.log = log.bind(identity=self.identity)

    @property
    def leading(self) -> bool:
        """Whether this daemon runs rollouts: it holds the leader's Lease (or some shard)."""
        return bool(self.held)

    def _limiter(self) -> FairRateLimiter | None:
        if self.settings.qps <= 0:
            return None
        return FairRateLimiter(self.settings.qps, self.settings.burst)

    def _cached_deployment(self, namespace: str, name: str) -> JsonObject | None:
        """A Deployment as the informer last saw it (the rollouts read them from there)."""
        informer = self.informer
        return informer.cache.get((namespace, name)) if informer is not None else None

    def _deployment_seen(self, namespace: str, name: str, version: str | None) -> bool:
        informer = self.informer
        return informer is not None and informer.has_seen((namespace, name), version)

    def shard(self, key: RolloutKey) -> int:
        return shard_of(key.namespace, key.name, self.shards)

    def owns(self, key: RolloutKey) -> bool:
        return self.shard(key) in self.held

    def _may_write(self, owner: tuple[str, str] | None) -> bool:
        """The fence of every write: the Lease of the rollout's shard (any, for the daemon's own) is held."""
        election = self.election
        if election is None:
            return True
        if owner is None:
            return bool(election.held())
        return election.holds(self.lease_names[shard_of(owner[0], owner[1], self.shards)])

    @property
    def api(self) -> KubeApi:
        assert self._api is not None, "the operator is not running"
        return self._api

    @property
    def secrets(self) -> KubeSecretReader:
        assert self._secrets is not None, "the operator is not running"
        return self._secrets

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; on the way out, controllers stop before the Lease is released."""
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(connect(self.settings, self.identity))
            self._api = KubeApi(
                client,
                request_timeout=self.options.request_timeout,
                requests=self.kube_requests,
                write_guard=self._may_write if self.settings.leader_elect else None,
                limiter=self._limiter(),
            )
            self._secrets = KubeSecretReader(self.api, own_namespace=self._own_namespace())
            self.event_poster = EventPoster(self.api)
            stack.push_async_callback(self.event_poster.close)
            self._providers = self.options.providers or default_providers(
                prometheus_address=self.settings.prometheus_address, secret_reader=self._secrets
            )
            stack.callback(self.metrics.close)
            self.url = await stack.enter_async_context(
                serve(self.registry, self.settings, rollout_metrics=self.metrics, notifier=self.notifier)
            )
            stack.push_async_callback(self.notifier.close)
            self.informer = Informer(
                self.api,
                DEPLOYMENTS,
                on_event=self._on_deployment,
                namespace=self.settings.namespace,
                label_selector=self.settings.selector,
                watch_timeout=self.options.watch_timeout,
                read_grace=self.options.watch_read_grace,
            )
            self.registry.health_checks.append(self._watch_health)
            tasks = [asyncio.create_task(self.informer.run(), name="informer:deployments")]
            if self.settings.leader_elect:
                self.election = ElectionThread(
                    self.settings,
                    self.identity,
                    namespace=self._lease_namespace(),
                    leases=self.lease_names,
                    timings=LeaseTimings.for_duration(self.settings.lease_duration),
                    on_change=self._on_lease,
                    requests=self.kube_requests,
                    request_timeout=self.options.request_timeout,
                    on_surplus=self._on_surplus,
                )
                await self.election.start()
            try:
                await self.informer.synced.wait()
                self.registry.ready = True
                self.ready.set()
                self.log.info("meshshift is running", url=self.url, leading=self.leading)
                tasks.append(asyncio.create_task(self._manage(), name="rollouts"))
                await asyncio.gather(*tasks)
            finally:
                await cancel_and_wait(tasks)
                await self._stop_all()
                if self.election is not None:
                    await self.election.stop()

    def _watch_health(self) -> str | None:
        """Why /readyz fails: the Deployments watch has heard nothing for too long."""
        silent = self.informer.silence() if self.informer is not None else None
        if silent is None:
            return None
        return f"the Deployments watch has heard nothing from the API server for {silent:.0f}s"

    def _own_namespace(self) -> str:
        return pod_namespace() or self.settings.namespace or "default"

    def _lease_namespace(self) -> str:
        return self.settings.lease_namespace or pod_namespace() or self.settings.namespace or "default"

    # --- inputs -----------------------------------------------------------------------------

    def _on_lease(self, lease: str, leading: bool) -> None:
        """The election thread's news, on the daemon's loop: a shard's Lease won or lost."""
        shard = self.lease_names.index(lease)
        if leading:
            self.held.add(shard)
        else:
            self.held.discard(shard)
            self._giving_up.discard(shard)
        if self.leading:
            self.leader.set()
        else:
            self.leader.clear()
        self.registry.is_leader = self.leading
        self.log.info("shard lease changed", lease=lease, leading=leading, shards=sorted(self.held))
        self._dirty.update(key for key in (*self.watched, *self.running) if self.shard(key) == shard)
        self._changed.set()

    def _on_surplus(self, lease: str) -> None:
        """The election thread asks for a shard back (a replica joined): stop its rollouts, then release."""
        shard = self.lease_names.index(lease)
        self.held.discard(shard)
        self._giving_up.add(shard)
        self.log.info("giving a shard back", lease=lease, shards=sorted(self.held))
        self._dirty.update(key for key in (*self.watched, *self.running) if self.shard(key) == shard)
        self._changed.set()

    async def _release_given_up(self) -> None:
        for shard in sorted(self._giving_up):
            if any(self.shard(key) == shard for key in self.running):
                continue
            self._giving_up.discard(shard)
            if self.election is not None:
                await self.election.release(self.lease_names[shard])

    def _on_deployment(self, kind: str, manifest: JsonObject) -> None:
        namespace, name = object_key(manifest)
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        primary_of = labels.get(PRIMARY_OF_LABEL)
        if primary_of:
            running = self.running.get(RolloutKey(namespace, primary_of))
            if running is not None:
                running.controller.poke()  # the primary's status moved
            return
        key = RolloutKey(namespace, name)
        if kind == DELETED:
            if self.watched.pop(key, None) is not None:
                self._mark(key)
            return
        previous = self.watched.get(key)
        fingerprint = _fingerprint(manifest)
        if previous is not None and previous.fingerprint == fingerprint:
            previous.manifest = manifest
            running = self.running.get(key)
            if running is not None:
                running.controller.poke()
                if self.owns(key):
                    _offer(key, running, previous.command)
            return
        if previous is None and not _opted_in(manifest):
            return
        self.watched[key] = self._read(manifest, fingerprint)
        self._mark(key)

    def _read(self, manifest: JsonObject, fingerprint: Fingerprint) -> WatchedDeployment:
        enabled = _opted_in(manifest)
        findings = Findings()
        try:
            parsed = read_deployment(manifest, findings) if enabled else None
        except Exception as error:  # a reader bug: this Deployment is invalid, the others go on
            self.log.exception("cannot read the Deployment's spec", deployment="/".join(object_key(manifest)))
            findings.error("", f"meshshift could not read this spec ({type(error).__name__}: {error})")
            parsed = None
        command = ((manifest.get("metadata") or {}).get("annotations") or {}).get(COMMAND)
        command_path = annotation_path(COMMAND)
        issues = tuple(
            issue
            for issue in findings
            # A suffixed command (`promote/2`) is valid here, whatever the linter says.
            if not (issue.path == command_path and isinstance(command, str) and accepts(command))
        )
        return WatchedDeployment(manifest, fingerprint, enabled, parsed, issues)

    def _mark(self, key: RolloutKey) -> None:
        self._dirty.add(key)
        self._changed.set()

    # --- bringing controllers in line -----------------------------------------------------------

    async def _manage(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            dirty, self._dirty = self._dirty, set()
            for key in sorted(dirty):
                try:
                    if self.owns(key):
                        await self._sync(key)
                    else:
                        await self._let_go(key)
                except Exception:
                    self.log.exception("cannot sync rollout", rollout=str(key))
            await self._release_given_up()

    async def _let_go(self, key: RolloutKey) -> None:
        """Another replica runs this rollout (or nobody does, for now): show and drive nothing."""
        if key in self.running:
            await self._stop(key)
        self.registry.remove(key)
        self._reported_invalid.pop(key, None)
        watched = self.watched.get(key)
        if watched is not None and not watched.enabled:
            del self.watched[key]

    async def _sync(self, key: RolloutKey) -> None:
        watched = self.watched.get(key)
        running = self.running.get(key)
        if watched is None or not watched.enabled:
            if running is not None:
                self.log.info("rollout no longer managed", rollout=str(key), deleted=watched is None)
                await self._stop(key)
            self.registry.remove(key)  # shown as InvalidSpec without a controller, perhaps
            self.kube_requests.forget(key.namespace, key.name)  # gone: its API calls' series go too
            self._reported_invalid.pop(key, None)
            if watched is not None and not watched.enabled:
                del self.watched[key]
            return
        if watched.errors or watched.parsed is None:
            error = "; ".join(str(e) for e in watched.errors)
            if running is not None:
                running.controller.update_spec(None, error)
            else:
                self.registry.show_invalid(
                    key,
                    error,
                    routers=_named_routers(watched.manifest),
                    workloads=_invalid_workloads(watched.manifest),
                )
            await self._report_invalid(key, watched)
            return
        self._reported_invalid.pop(key, None)
        for issue in watched.issues:
            self.log.warning("spec warning", rollout=str(key), finding=str(issue))
        target = _target_key(watched.parsed.target)
        spec = self._spec(watched.parsed.rollout)
        if running is not None and (running.target != target or running.uid != watched.uid):
            self.log.info("routing target changed; restarting the rollout's controller", rollout=str(key))
            await self._stop(key)
            running = None
        if running is None:
            running = self._start(key, watched, target, spec)
        elif running.spec != spec or running.controller.spec_error is not None:
            running.spec = spec
            running.workloads.follow(spec)
            running.controller.update_spec(spec)
        _offer(key, running, watched.command)

    def _spec(self, spec: RolloutSpec) -> RolloutSpec:
        if self.options.abort_scale_down_delay is None:
            return spec
        return dataclasses.replace(spec, abort_scale_down_delay=self.options.abort_scale_down_delay)

    async def _report_invalid(self, key: RolloutKey, watched: WatchedDeployment) -> None:
        event = invalid_spec_event(watched.issues)
        if self._reported_invalid.get(key) == event.message:
            return
        self.log.warning(
            "invalid spec; nothing changes", rollout=str(key), findings=[str(i) for i in watched.issues]
        )
        sink = KubeEventSink(self.api, involved=watched.manifest, instance=self.identity)
        with requests_owned_by(key.namespace, key.name):  # fenced by the rollout's shard
            await FanOutEvents([sink, self.metrics.event_sink(key)]).record(event)
        self._reported_invalid[key] = event.message

    def _start(
        self, key: RolloutKey, watched: WatchedDeployment, target: KubernetesTarget, spec: RolloutSpec
    ) -> RunningRollout:
        owner = watched.manifest
        store = ConfigMapStateStore(self.api, namespace=key.namespace, deployment=key.name, owner=owner)
        events = FanOutEvents(
            [
                LogEvents(rollout=str(key)),
                KubeEventSink(self.api, involved=owner, instance=self.identity, poster=self.event_poster),
                self.metrics.event_sink(key),
            ]
        )
        routers = self._routers(key, target, owner)

        async def write_staged_traffic() -> None:
            for router in routers:
                await router.commit()

        workloads = KubeWorkloads(
            self.api,
            namespace=key.namespace,
            deployment=key.name,
            service=target.service,
            before_write=write_staged_traffic,
            deployments=functools.partial(self._cached_deployment, key.namespace),
            deployment_seen=functools.partial(self._deployment_seen, key.namespace),
        )
        workloads.follow(spec)
        controller = RolloutController(
            key,
            spec=spec,
            routers=list(routers),
            workloads=workloads,
            store=store,
            templates=self.metrics.template_source(key, self._templates(key, target)),
            providers=self._providers,
            events=events,
            arg_context=_arg_context(key.namespace, self.secrets, lambda: self._metadata(key)),
            measurement_timeout=self.settings.measurement_timeout,
        )
        running = RunningRollout(
            controller,
            CommandTracker(store, controller, events, rollout=str(key)),
            target,
            spec,
            watched.uid,
            workloads,
        )
        self.running[key] = running
        self.registry.add(controller)
        self._set_receivers(key, owner)
        running.task = asyncio.create_task(self._supervise(key, running), name=f"rollout:{key}")
        self.log.info("managing rollout", rollout=str(key), routers=list(target.routers))
        return running

    def _routers(self, key: RolloutKey, target: KubernetesTarget, owner: JsonObject) -> list[KubeRouter]:
        routers: list[KubeRouter] = []
        for kind in target.routers:
            if kind == "istio":
                routers.append(
                    IstioRouter(
                        self.api,
                        namespace=key.namespace,
                        virtual_service=target.istio_virtual_service,
                        service=target.service,
                        routes=target.istio_routes,
                        owner=owner,
                        api_version=self.options.istio_api_version,
                    )
                )
            elif kind == "nginx" and target.nginx_ingress:
                routers.append(
                    NginxIngressRouter(
                        self.api,
                        namespace=key.namespace,
                        deployment=key.name,
                        stable_ingress=target.nginx_ingress,
                        service=target.service,
                        owner=owner,
                        annotation_prefix=self.options.nginx_annotation_prefix,
                        weight_total=self.options.nginx_weight_total,
                    )
                )
            elif kind == "traefik":
                routers.append(
                    TraefikRouter(
                        self.api,
                        namespace=key.namespace,
                        traefik_service=target.traefik_service or target.service,
                        service=target.service,
                        owner=owner,
                    )
                )
            elif kind == "gateway-api":
                routers.append(
                    GatewayApiRouter(
                        self.api,
                        namespace=key.namespace,
                        http_route=target.http_route or target.service,
                        service=target.service,
                    )
                )
        return routers

    def _templates(self, key: RolloutKey, target: KubernetesTarget) -> ChainedTemplates:
        cluster = ClusterTemplates(self.api, namespace=key.namespace)
        mesh = target.routers[0] if target.routers else "istio"
        if mesh == "gateway-api":
            if self.options.gateway_api_metrics is None:
                return ChainedTemplates(cluster)  # whose metrics is not known: no builtins
            mesh = GATEWAY_API_MESHES[self.options.gateway_api_metrics]
        route = (target.http_route or target.service) if mesh.startswith("gateway-api") else None
        builtin = BuiltinTemplates(
            mesh,
            BuiltinTarget(
                namespace=key.namespace,
                target=key.name,
                ingress=target.nginx_ingress or "",
                traefik_service=traefik_backend_selector(
                    key.namespace, f"{target.service}-canary", http_route=route
                ),
                traefik_stable_service=traefik_backend_selector(
                    key.namespace, f"{target.service}-primary", http_route=route
                ),
            ),
        )
        return ChainedTemplates(cluster, builtin)

    def _set_receivers(self, key: RolloutKey, manifest: JsonObject) -> None:
        annotations = (manifest.get("metadata") or {}).get("annotations") or {}
        try:
            receivers = receivers_from_annotations(
                annotations,
                pagerduty_key=lambda secret: self._routing_key_reader(key.namespace, secret),
                pagerduty_events_url=self.settings.notifications.pagerduty_events_url,
                namespace=key.namespace,
            )
            self.notifier.set_receivers(key, receivers)
        except ValueError as error:
            self.log.warning("notification annotation ignored", rollout=str(key), error=str(error))

    def _routing_key_reader(self, namespace: str, secret: str) -> RoutingKeySource:
        """Reads the `routing-key` of the Secret `secret` at each send (a rotated key applies at once)."""

        async def read() -> str | None:
            try:
                data = await self.secrets(secret, namespace)
            except KubeApiError as error:
                raise RoutingKeyError(f"cannot read the Secret {namespace}/{secret}: {error}") from error
            key = (data or {}).get(PAGERDUTY_SECRET_KEY, "").strip()
            if not key:
                where = "does not exist" if data is None else f"has no {PAGERDUTY_SECRET_KEY!r}"
                raise RoutingKeyError(f"the Secret {namespace}/{secret} {where}")
            return key

        return read

    async def _supervise(self, key: RolloutKey, running: RunningRollout) -> None:
        """Run the controller; if it fails outside its own retry loop (loading state), start it again."""
        with requests_owned_by(key.namespace, key.name):
            await self._run_controller(key, running)

    async def _run_controller(self, key: RolloutKey, running: RunningRollout) -> None:
        backoff = Backoff(first=1.0, cap=30.0)
        while True:
            try:
                await running.controller.run()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                running.controller.last_error = f"{type(error).__name__}: {error}"
                self.log.exception("rollout controller stopped; restarting", rollout=str(key))
            await asyncio.sleep(backoff.next())
            watched = self.watched.get(key)
            _offer(key, running, watched.command if watched else None)

    def _metadata(self, key: RolloutKey) -> Mapping[str, Any]:
        """The Deployment's metadata as last seen (what fieldRef args read)."""
        watched = self.watched.get(key)
        metadata = watched.manifest.get("metadata") if watched is not None else None
        return metadata if isinstance(metadata, Mapping) else {}

    async def _stop(self, key: RolloutKey, *, flush: bool = True) -> None:
        running = self.running.pop(key, None)
        if running is None:
            return
        if running.task is not None:
            await cancel_and_wait([running.task])
        if flush and self.event_poster is not None:  # its last Events go out while its shard is held
            await self.event_poster.flush((key.namespace, key.name), within=EVENT_FLUSH_SECONDS)
        await running.tracker.close()
        self.registry.remove(key)
        self.notifier.set_receivers(key, ())

    async def _stop_all(self) -> None:
        for key in list(self.running):
            await self._stop(key, flush=False)
        if self.event_poster is not None:  # the last Events go out before the Leases are released
            await self.event_poster.flush(None, within=EVENT_FLUSH_SECONDS)
        for key in [k for k in self.registry.snapshots if k not in self.running]:
            self.registry.remove(key)  # the invalid ones: a standby shows no rollout


def _offer(key: RolloutKey, running: RunningRollout, command: str | None) -> None:
    """Hand a command annotation to the rollout's tracker; its API calls count as the rollout's."""
    with requests_owned_by(key.namespace, key.name):
        running.tracker.offer(command)


def _named_routers(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The known routers an (invalid) Deployment names, for its `traffic_router` label."""
    raw = ((manifest.get("metadata") or {}).get("annotations") or {}).get(ROUTER)
    names = [part.strip() for part in raw.split(",")] if isinstance(raw, str) else []
    return tuple(name for name in names if name in ROUTER_KINDS)


def _invalid_workloads(manifest: Mapping[str, Any]) -> WorkloadStatus:
    """What an invalid Deployment shows of its pods: its own replica counts, nothing rolled out."""
    return WorkloadStatus(
        revision="",
        stable_revision=None,
        stable_ready=False,
        canary_ready=False,
        replicas=deployment_replicas(manifest),
    )


KubeRouter = IstioRouter | NginxIngressRouter | TraefikRouter | GatewayApiRouter


def _arg_context(
    namespace: str, secrets: KubeSecretReader, metadata: Callable[[], Mapping[str, Any]]
) -> Callable[[StartAnalysis], ArgContext]:
    def context(action: StartAnalysis) -> ArgContext:
        return ArgContext(
            builtin_args(canary=action.revision, stable=action.stable_revision, namespace=namespace),
            namespace=namespace,
            secret_reader=secrets,  # args with valueFrom.secretKeyRef, in the rollout's namespace
            metadata=metadata(),  # args with valueFrom.fieldRef: the Deployment's, as it is now
        )

    return context


async def run_operator(settings: DaemonSettings, options: OperatorOptions | None = None) -> None:
    """`meshshift run` without --config: run until SIGINT or SIGTERM."""
    try:
        options = options or OperatorOptions.from_env()
    except OptionsError as error:
        raise SystemExit(f"meshshift: {error}") from None  # said once, on stderr, by the exit
    operator = Operator(settings, options)
    await run_until_stopped(operator.run())
