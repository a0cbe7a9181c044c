"""The parsed, validated rollout spec: plain frozen values, no behaviour.

Field names follow Argo Rollouts (in snake_case) so that the YAML a user pastes maps
one-to-one onto these types. Parsing and validation live in the sibling modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

# --- analysis phases (shared by the engine and the analysis rules) ----------------


class AnalysisPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"

    @property
    def completed(self) -> bool:
        return self not in (AnalysisPhase.PENDING, AnalysisPhase.RUNNING)

    @property
    def blocks_rollout(self) -> bool:
        """Failed and Error abort a rollout (per its failure policy)."""
        return self in (AnalysisPhase.FAILED, AnalysisPhase.ERROR)


# --- matching ----------------------------------------------------------------------

MatchKind = Literal["exact", "prefix", "regex"]


@dataclass(frozen=True, slots=True)
class StringMatch:
    """One of Argo's `{exact|prefix|regex: value}` blocks."""

    kind: MatchKind
    value: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """`{headerName, headerValue: {exact|prefix|regex}}` of setHeaderRoute."""

    header_name: str
    value: StringMatch


@dataclass(frozen=True, slots=True)
class MirrorMatch:
    """One `match` entry of setMirrorRoute: all given conditions must hold."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


# --- analysis references -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateRef:
    template_name: str
    cluster_scope: bool = False


@dataclass(frozen=True, slots=True)
class ArgValueFrom:
    """Where an arg's value comes from when it is not given literally.

    `pod_template_hash` is Argo's `podTemplateHashValue: Stable|Latest`; meshshift fills
    it with pod-template hashes in Kubernetes and with `stable`/`canary` standalone.
    """

    pod_template_hash: Literal["Stable", "Latest"] | None = None
    secret_name: str | None = None
    secret_key: str | None = None
    field_path: str | None = None


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    value: str | None = None
    value_from: ArgValueFrom | None = None


# Measurements kept per metric when no rule (or `limit: 0`) says otherwise, as in Argo.
DEFAULT_MEASUREMENT_RETENTION = 10


@dataclass(frozen=True, slots=True)
class MeasurementRetention:
    metric_name: str  # a regular expression searched in metric names (".*": every metric)
    limit: int


@dataclass(frozen=True, slots=True)
class AnalysisRef:
    """The analysis of a step, or the background analysis of a rollout."""

    templates: tuple[TemplateRef, ...]
    args: tuple[Arg, ...] = ()
    dry_run: tuple[str, ...] = ()  # metricName regexes (".*": every metric)
    measurement_retention: tuple[MeasurementRetention, ...] = ()


@dataclass(frozen=True, slots=True)
class BackgroundAnalysis:
    analysis: AnalysisRef
    starting_step: int = 0


# --- steps -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetWeight:
    weight: int


@dataclass(frozen=True, slots=True)
class Pause:
    duration: float | None = None  # seconds; None waits for a promote


@dataclass(frozen=True, slots=True)
class StepAnalysis:
    analysis: AnalysisRef


@dataclass(frozen=True, slots=True)
class SetHeaderRoute:
    name: str
    match: tuple[HeaderMatch, ...] = ()  # empty removes the route

    @property
    def removes(self) -> bool:
        return not self.match


@dataclass(frozen=True, slots=True)
class SetMirrorRoute:
    name: str
    match: tuple[MirrorMatch, ...] = ()  # empty removes the route
    percentage: int | None = None

    @property
    def removes(self) -> bool:
        return not self.match


@dataclass(frozen=True, slots=True)
class CanaryScale:
    """How big the canary should be: Argo's setCanaryScale, or 'full' by default."""

    replicas: int | None = None
    weight: int | None = None
    match_traffic_weight: bool = False

    @classmethod
    def full(cls) -> CanaryScale:
        return cls(weight=100)

    @classmethod
    def zero(cls) -> CanaryScale:
        return cls(replicas=0)

    def replicas_for(self, spec_replicas: int, traffic_weight: int) -> int:
        """The replica count this scale asks for, given the workload's own replicas."""
        if self.replicas is not None:
            return self.replicas
        percent = traffic_weight if self.match_traffic_weight else (self.weight or 0)
        if percent <= 0:
            return 0
        # Round up, as Argo does: any weight above zero needs at least one pod.
        return max(1, -(-spec_replicas * percent // 100))


@dataclass(frozen=True, slots=True)
class SetCanaryScale:
    scale: CanaryScale


Step = SetWeight | Pause | StepAnalysis | SetHeaderRoute | SetMirrorRoute | SetCanaryScale


@dataclass(frozen=True, slots=True)
class StepGroup:
    """One step as written with several kinds, as Argo allows (setCanaryScale with setHeaderRoute,
    a setWeight with a setMirrorRoute...): the rollout runs its parts one after the other, the
    scale and routes first, then the setWeight, pause or analysis."""

    parts: tuple[Step, ...]


STEP_KINDS: Mapping[str, type[Step]] = {
    "setWeight": SetWeight,
    "pause": Pause,
    "analysis": StepAnalysis,
    "setHeaderRoute": SetHeaderRoute,
    "setMirrorRoute": SetMirrorRoute,
    "setCanaryScale": SetCanaryScale,
}


# --- AnalysisTemplate --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A metric provider block: its kind (`prometheus`, `web`, ...) and its raw options.

    Options keep their `{{args.x}}` placeholders: each provider resolves them with the
    escaping its query language needs (PromQL string literals, NRQL, URLs).
    """

    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of an AnalysisTemplate, with Argo's defaults applied."""

    name: str
    provider: ProviderSpec | None
    interval: float | None = None
    initial_delay: float | None = None
    count: int | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: int = 0  # -1 disables the failure limit
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    consecutive_success_limit: int = 0  # 0 disables it

    @property
    def effective_count(self) -> int | None:
        """No count and no interval means a single measurement (Argo's EffectiveCount)."""
        if self.count is not None and self.count > 0:
            return self.count
        if self.interval is None:
            return 1
        return None


@dataclass(frozen=True, slots=True)
class TemplateArg:
    name: str
    value: str | None = None
    value_from: ArgValueFrom | None = None


@dataclass(frozen=True, slots=True)
class AnalysisTemplate:
    name: str
    args: tuple[TemplateArg, ...]
    metrics: tuple[Metric, ...]
    dry_run: tuple[str, ...] = ()
    measurement_retention: tuple[MeasurementRetention, ...] = ()
    cluster_scope: bool = False
    namespace: str | None = None
    # The metrics as written, placeholders included: instantiating a template with args
    # substitutes them here and parses again, so numeric fields may use args too.
    raw_metrics: tuple[Mapping[str, Any], ...] = ()
    # `spec.templates`: other templates whose metrics, args, dryRun and measurementRetention
    # this one includes (see spec.templates.compose_template).
    includes: tuple[TemplateRef, ...] = ()


# --- the rollout -------------------------------------------------------------------


class FailurePolicy(StrEnum):
    ROLLBACK = "rollback"  # all traffic back to stable at once
    GRADUAL = "gradual"  # walk the weights back down the schedule
    FREEZE = "freeze"  # hold the weights and wait for a human


DEFAULT_PROGRESS_DEADLINE = 600.0
DEFAULT_GRADUAL_INTERVAL = 30.0
DEFAULT_ABORT_SCALE_DOWN_DELAY = 30.0
DEFAULT_SCALE_DOWN_DELAY = 30.0  # Argo's blueGreen.scaleDownDelaySeconds default


@dataclass(frozen=True, slots=True)
class PodMetadata:
    """Argo's PodTemplateMetadata: labels and annotations meshshift puts on a set of pods."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.labels or self.annotations)


@dataclass(frozen=True, slots=True)
class BlueGreen:
    """Argo's `strategy.blueGreen`, as meshshift runs it (see engine.machine).

    The new revision is previewed (scaled up, reachable on the preview only), analysed
    (`pre_promotion_analysis`), promoted by a human or on its own, switched to in one write
    per router, analysed again while the old revision still runs (`post_promotion_analysis`,
    a failure switches back at once), and the old revision is scaled down `scale_down_delay`
    after the switch at the earliest.
    """

    active_service: str | None = None  # the Service user traffic reaches (Kubernetes: the apex)
    preview_service: str | None = None  # Kubernetes: a Service that selects the preview's pods
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: float | None = None  # pause this long before switching (None: no pause)
    preview_replica_count: int | None = None  # None: the preview runs the full replica count
    pre_promotion_analysis: AnalysisRef | None = None
    post_promotion_analysis: AnalysisRef | None = None
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY
    active_metadata: PodMetadata = field(default_factory=PodMetadata)
    preview_metadata: PodMetadata = field(default_factory=PodMetadata)
    # meshshift's addition: a header route to the preview on the active routes, from the
    # moment the preview is up until the rollout ends (QA reaches it through the mesh).
    preview_header_route: SetHeaderRoute | None = None

    @property
    def pauses_before_switch(self) -> bool:
        """Argo's needsBlueGreenControllerPause: wait for `promote`, or autoPromotionSeconds."""
        return not self.auto_promotion_enabled or self.auto_promotion_seconds is not None

    @property
    def preview_scale(self) -> CanaryScale:
        if self.preview_replica_count is not None:
            return CanaryScale(replicas=self.preview_replica_count)
        return CanaryScale.full()


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What the engine runs: the same for annotated Deployments and standalone files."""

    steps: tuple[Step, ...]
    analysis: BackgroundAnalysis | None = None
    on_failure: FailurePolicy = FailurePolicy.ROLLBACK
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    allow_non_monotonic: bool = False
    gradual_interval: float = DEFAULT_GRADUAL_INTERVAL
    abort_scale_down_delay: float = DEFAULT_ABORT_SCALE_DOWN_DELAY
    # A canary not ready within the progress deadline fails the rollout (the annotation
    # contract); False only reports it and keeps waiting (a pasted Rollout without Argo's
    # progressDeadlineAbort: true).
    progress_deadline_abort: bool = True
    # The blue-green strategy instead of steps (a spec has one or the other).
    blue_green: BlueGreen | None = None
    # Argo's canaryMetadata / stableMetadata: on the canary's pods during a rollout, on the stable's.
    canary_metadata: PodMetadata = field(default_factory=PodMetadata)
    stable_metadata: PodMetadata = field(default_factory=PodMetadata)

    @property
    def new_pods_metadata(self) -> PodMetadata:
        """What the pods of a new revision carry while it is rolled out (canary or preview)."""
        return self.blue_green.preview_metadata if self.blue_green is not None else self.canary_metadata

    @property
    def stable_pods_metadata(self) -> PodMetadata:
        """What the stable's pods carry (the stable, or blue-green's active)."""
        return self.blue_green.active_metadata if self.blue_green is not None else self.stable_metadata

    @property
    def step_count(self) -> int:
        return len(self.steps)

    @property
    def strategy(self) -> str:
        """Argo's strategy name: `canary` or `blueGreen` (the `strategy` label of rollout_info)."""
        return "blueGreen" if self.blue_green is not None else "canary"


# --- where the rollout runs --------------------------------------------------------

ROUTER_KINDS = ("istio", "nginx", "traefik", "gateway-api")


@dataclass(frozen=True, slots=True)
class KubernetesTarget:
    """The `meshshift.io/*` routing annotations of a Deployment, defaults applied."""

    deployment: str
    namespace: str
    routers: tuple[str, ...]  # subset of ROUTER_KINDS, in the order given
    service: str
    istio_virtual_service: str
    istio_routes: tuple[str, ...] = ()  # empty: every route holding both hosts
    nginx_ingress: str | None = None
    traefik_service: str = ""  # the TraefikService meshshift owns (default: the service name)
    http_route: str = ""  # the Gateway API HTTPRoute (default: the service name)
    command: str | None = None


@dataclass(frozen=True, slots=True)
class AnnotatedDeployment:
    """Everything meshshift reads off one annotated Deployment."""

    target: KubernetesTarget
    rollout: RolloutSpec
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class EnvoyRouterConfig:
    listen: str = "127.0.0.1:10000"
    admin: str | None = None  # host:port; default: a free port on 127.0.0.1
    config_dir: str | None = None  # where bootstrap and RDS files go
    attach: bool = False  # True: write RDS files for an Envoy someone else runs
    base_id: int | None = None
    binary: str | None = None
    preview_listen: str | None = None  # spec.preview.listen: the preview listener


@dataclass(frozen=True, slots=True)
class NginxRouterConfig:
    listen: str = "127.0.0.1:10000"
    config_dir: str | None = None
    binary: str | None = None
    canary_header: str = "X-Canary"
    preview_listen: str | None = None


@dataclass(frozen=True, slots=True)
class TraefikRouterConfig:
    listen: str = "127.0.0.1:10000"
    api: str | None = None  # host:port of Traefik's API/ping/metrics entry point; default: a free port
    config_dir: str | None = None  # where the static and the dynamic (file provider) configuration go
    attach: bool = False  # True: write the files for a Traefik someone else runs (needs `api`)
    binary: str | None = None
    preview_listen: str | None = None


StandaloneRouterConfig = EnvoyRouterConfig | NginxRouterConfig | TraefikRouterConfig


@dataclass(frozen=True, slots=True)
class Upstream:
    endpoints: tuple[str, ...]  # host:port
    # The `version` label these endpoints' metrics carry: {{args.canary-hash}} / {{args.stable-hash}}.
    version: str | None = None


@dataclass(frozen=True, slots=True)
class StandaloneRollout:
    name: str
    router: StandaloneRouterConfig
    stable: Upstream
    canary: Upstream
    rollout: RolloutSpec
    templates: tuple[AnalysisTemplate, ...] = ()
    state_file: str | None = None
    # Free-form extras the standalone runtime reads (prometheus address, metrics listen...).
    extra: Mapping[str, Any] = field(default_factory=dict)
    # metadata name, labels and annotations: what valueFrom.fieldRef args read.
    metadata: Mapping[str, Any] = field(default_factory=dict)
