"""Builtin analysis templates, as in Flagger: `request-success-rate` and `request-duration`.

A rollout step `analysis: {templates: [{templateName: request-success-rate}]}` gets one of
these when no user template has that name (`ChainedTemplates(user_templates, builtins)`).
They are ordinary AnalysisTemplates, parsed from the documents `builtin_document` returns,
so `meshshift lint` and the runtime treat them like any other.

Units follow Flagger: the success rate is a PERCENTAGE of non-5xx responses (Flagger's
`thresholdRange: {min: 99}`), the duration is a P99 in MILLISECONDS.

Args (each has a default; a step's `args` override them):

    interval          "1m"  measurement interval and the rate() window (Flagger's `interval`)
    count             "3"   measurements per run
    failure-limit     "1"   failed measurements tolerated
    consecutive-success-limit "0"  successes in a row that end the run early ("0": none; a
                            converted Flagger check passes with "1", count "0": it measures until
                            one measurement passes, or failure-limit is exceeded)
    min-success-rate  "99"  percent (request-success-rate)
    max-duration      "500" milliseconds (request-duration)
    quantile          "0.99" (request-duration)
    namespace, target       istio: the workload's namespace and name (regex, as in Flagger)
    namespace, ingress      nginx: the ingress' namespace and name
    canary-cluster          envoy: the canary cluster's name (regex)
    traefik-service         traefik: Traefik's name of the canary service (regex; `<name>-canary@file`
                            standalone, `<ns>-<svc>-canary-<port>@kubernetescrd` in Kubernetes)

meshshift fills the selector args from the rollout through `BuiltinTarget` (and the
executor fills `namespace` in Kubernetes mode).

The queries are Flagger's (pkg/metrics/observers/istio.go, nginx.go, traefik.go, and for a
standalone Envoy scraped by Prometheus crossover.go/contour.go) with four changes:
- the success rate divides by `(... > 0)` and adds `or vector(0)` to the numerator, so
  no traffic gives an empty result (an Error measurement saying the result is empty, like
  Flagger's "no values found") instead of NaN, and a canary answering only 5xx gives 0
  instead of nothing;
- the P99 drops NaN (no traffic in the window) with `>= 0`, for the same reason;
- Istio's duration uses `istio_request_duration_milliseconds_bucket` (Istio >= 1.5; the
  `_seconds` histogram Flagger once read no longer exists), and NGINX's is a P99 of
  `nginx_ingress_controller_request_duration_seconds_bucket` * 1000 where Flagger averages
  the upstream latency summary (the P99 is what meshshift promises for every mesh).
- Traefik's success rate counts `traefik_service_requests_total` (by `code`) where Flagger
  reads the `le="+Inf"` bucket of the duration histogram: the same numbers, from the counter.
As in Flagger, the NGINX queries select by ingress: ingress-nginx counts requests sent to
the canary under the stable ingress' name, so they measure the whole ingress.

Gateway API routes run on some implementation's data plane, so their builtins are that
implementation's: `gateway-api/istio` (Istio's destination metrics, as for the istio mesh) and
`gateway-api/traefik` (Traefik's Gateway provider names the canary backend of a rule
`httproute-<ns>-<route>-...-svc-<ns>-<svc>-canary-<n>@kubernetesgateway`). See
GATEWAY_API_MESHES and traefik_backend_selector.

Without Prometheus, a standalone Envoy's builtins read its admin endpoint instead
(`source="envoy-admin"`, provider kind `meshshift`, see envoy_admin.py).

`sequential-error-rate` and `sequential-latency` are the sequential judge's (README, "The
sequential judge"): one in-progress measurement of provider kind `meshshift` that reads the
raw counters of both sides, canary and stable, at every look (`interval`), with no rate()
window: the same counters as above, selected per side (`stable-target`, default
`<target>-primary`; `stable-cluster`; `traefik-stable-service`; NGINX's `canary` label, which
ingress-nginx sets on the requests its canary Ingress routed). Their args: alpha (0.01),
relative-tolerance (0.25), absolute-tolerance (0), max-duration (10m), require-evidence
("false"), interval (1s from Envoy's admin endpoint, 10s from Prometheus), quantile (0.95,
latency).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meshshift.analysis.sequential import LATENCY, SEQUENTIAL_BUILTINS
from meshshift.ports import TemplateSource
from meshshift.spec.model import AnalysisTemplate
from meshshift.spec.templates import BUILTIN_METRICS, parse_template

MESHES = ("istio", "nginx", "envoy", "traefik", "gateway-api/istio", "gateway-api/traefik")
GATEWAY_API_MESHES = {"istio": "gateway-api/istio", "traefik": "gateway-api/traefik"}
# Traefik's per-service counter and latency histogram (Flagger's traefik observer reads them).
TRAEFIK_REQUESTS = "traefik_service_requests_total"
TRAEFIK_DURATION = "traefik_service_request_duration_seconds_bucket"
Source = Literal["prometheus", "envoy-admin"]

# PromQL comments explain the guards to whoever reads the recorded query.
_SUCCESS_RATE = """\
(
  sum(rate({metric}{{{selector}, {code}!~"5.*"}}[{{{{args.interval}}}}]))
  or vector(0)
)
/
# no traffic in the window: divide by nothing, so the result is empty rather than NaN
(
  sum(rate({metric}{{{selector}}}[{{{{args.interval}}}}])) > 0
)
* 100
"""
_DURATION = """\
histogram_quantile(
  {{{{args.quantile}}}},
  sum(rate({metric}{{{selector}}}[{{{{args.interval}}}}])) by (le)
){scale}
# no traffic in the window gives NaN: drop it, so the result is empty
>= 0
"""


@dataclass(frozen=True, slots=True)
class _Mesh:
    requests: str  # the request counter
    code_label: str
    duration: str  # the duration histogram's _bucket series
    duration_scale: str  # to milliseconds
    selector: str  # label matchers, with placeholders
    args: tuple[str, ...]  # the selector's args
    # The sequential builtins compare two sides: (canary, stable) label matchers and their args.
    sides: tuple[str, str] = ("", "")
    side_args: tuple[str, ...] = ()

    @property
    def duration_unit(self) -> str:
        return "s" if self.duration_scale else "ms"


_MESHES: Mapping[str, _Mesh] = {
    "istio": _Mesh(
        requests="istio_requests_total",
        code_label="response_code",
        duration="istio_request_duration_milliseconds_bucket",
        duration_scale="",
        selector='reporter="destination", destination_workload_namespace="{{args.namespace}}", '
        'destination_workload=~"{{args.target}}"',
        args=("namespace", "target"),
        sides=(
            'reporter="destination", destination_workload_namespace="{{args.namespace}}", '
            'destination_workload=~"{{args.target}}"',
            'reporter="destination", destination_workload_namespace="{{args.namespace}}", '
            'destination_workload=~"{{args.stable-target}}"',
        ),
        side_args=("namespace", "target", "stable-target"),
    ),
    "nginx": _Mesh(
        requests="nginx_ingress_controller_requests",
        code_label="status",
        duration="nginx_ingress_controller_request_duration_seconds_bucket",
        duration_scale=" * 1000",
        selector='namespace="{{args.namespace}}", ingress="{{args.ingress}}"',
        args=("namespace", "ingress"),
        # ingress-nginx labels a request the canary Ingress served with the canary's upstream
        # (`canary`, from $proxy_alternative_upstream_name); the stable's have none.
        sides=(
            'namespace="{{args.namespace}}", ingress="{{args.ingress}}", canary!=""',
            'namespace="{{args.namespace}}", ingress="{{args.ingress}}", canary=""',
        ),
        side_args=("namespace", "ingress"),
    ),
    "envoy": _Mesh(
        requests="envoy_cluster_upstream_rq",
        code_label="envoy_response_code",
        duration="envoy_cluster_upstream_rq_time_bucket",
        duration_scale="",
        selector='envoy_cluster_name=~"{{args.canary-cluster}}"',
        args=("canary-cluster",),
        sides=(
            'envoy_cluster_name=~"{{args.canary-cluster}}"',
            'envoy_cluster_name=~"{{args.stable-cluster}}"',
        ),
        side_args=("canary-cluster", "stable-cluster"),
    ),
    "traefik": _Mesh(
        requests=TRAEFIK_REQUESTS,
        code_label="code",
        duration=TRAEFIK_DURATION,
        duration_scale=" * 1000",
        selector='service=~"{{args.traefik-service}}"',
        args=("traefik-service",),
        sides=('service=~"{{args.traefik-service}}"', 'service=~"{{args.traefik-stable-service}}"'),
        side_args=("traefik-service", "traefik-stable-service"),
    ),
}
_MESHES = {**_MESHES, "gateway-api/istio": _MESHES["istio"], "gateway-api/traefik": _MESHES["traefik"]}


def traefik_backend_selector(namespace: str, backend: str, *, http_route: str | None = None) -> str:
    """The regex of Traefik's name for a backend Service (`web-canary`) in Kubernetes mode.

    That name is the `service` label of Traefik's metrics.

    The CRD provider names a TraefikService's child `<ns>-<svc>-<port>@kubernetescrd` (the
    regex is Flagger's); the Gateway API provider names a rule's backend
    `httproute-<ns>-<route>-gw-<gateway...>-svc-<ns>-<svc>-<index>@kubernetesgateway`. Both were
    read off a real Traefik 3.7 (tests/kube/test_traefik_real.py checks them).
    """

    def literal(name: str) -> str:
        return name.replace(".", "\\.")  # object names are DNS names: only `.` is special

    qualified = f"{literal(namespace)}-{literal(backend)}"
    if http_route is None:
        return f"{qualified}-[0-9a-zA-Z-]+@kubernetescrd"
    return f"httproute-{literal(namespace)}-{literal(http_route)}-.+-svc-{qualified}-[0-9]+@kubernetesgateway"


@dataclass(frozen=True, slots=True)
class BuiltinTarget:
    """What the builtin queries select, from the rollout: defaults of the selector args."""

    namespace: str = "default"
    target: str = ""  # istio: the canary workload (Deployment) name
    ingress: str = ""  # nginx: the stable Ingress name
    canary_cluster: str = "canary"  # envoy: the canary cluster
    traefik_service: str = "canary@file"  # traefik: Traefik's name of the canary service (regex)
    interval: str = "1m"
    # The stable side, for the sequential builtins (which compare canary and stable).
    stable_target: str = ""  # istio: the stable workload (default: `<target>-primary`)
    stable_cluster: str = "stable"  # envoy: the stable cluster
    traefik_stable_service: str = "stable@file"  # traefik: the stable service (regex)

    def value(self, arg: str) -> str:
        return {
            "namespace": self.namespace,
            "target": self.target,
            "ingress": self.ingress,
            "canary-cluster": self.canary_cluster,
            "traefik-service": self.traefik_service,
            "stable-target": self.stable_target or f"{self.target}-primary",
            "stable-cluster": self.stable_cluster,
            "traefik-stable-service": self.traefik_stable_service,
        }[arg]


def _arg(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def builtin_document(
    name: str, mesh: str, target: BuiltinTarget | None = None, *, source: Source = "prometheus"
) -> dict[str, Any]:
    """The AnalysisTemplate document of builtin `name` for `mesh` (raises ValueError if unknown)."""
    if name not in BUILTIN_METRICS:
        raise ValueError(f"no builtin template {name!r}; builtins: {', '.join(BUILTIN_METRICS)}")
    if mesh not in _MESHES:
        raise ValueError(f"no builtin metrics for mesh {mesh!r}; meshes: {', '.join(MESHES)}")
    if source == "envoy-admin" and mesh != "envoy":
        raise ValueError("source envoy-admin reads a standalone Envoy: use it with mesh envoy")
    target = target or BuiltinTarget()
    spec = _MESHES[mesh]
    if name in SEQUENTIAL_BUILTINS:
        return _sequential_document(name, spec, target, source)
    success = name == "request-success-rate"
    args = [
        _arg("interval", target.interval),
        _arg("count", "3"),
        _arg("failure-limit", "1"),
        _arg("consecutive-success-limit", "0"),
        _arg("min-success-rate", "99") if success else _arg("max-duration", "500"),
    ]
    if not success:
        args.append(_arg("quantile", "0.99"))
    provider: dict[str, Any]
    if source == "envoy-admin":
        options: dict[str, str] = {"builtin": name, "window": "{{args.interval}}"}
        if not success:
            options["quantile"] = "{{args.quantile}}"
        provider = {"meshshift": options}
    else:
        args.extend(_arg(arg, target.value(arg)) for arg in spec.args)
        if success:
            query = _SUCCESS_RATE.format(metric=spec.requests, selector=spec.selector, code=spec.code_label)
        else:
            query = _DURATION.format(metric=spec.duration, selector=spec.selector, scale=spec.duration_scale)
        provider = {"prometheus": {"query": query}}
    condition = "result[0] >= {{args.min-success-rate}}" if success else "result[0] <= {{args.max-duration}}"
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": args,
            "metrics": [
                {
                    "name": name,
                    "interval": "{{args.interval}}",
                    "count": "{{args.count}}",
                    "failureLimit": "{{args.failure-limit}}",
                    "consecutiveSuccessLimit": "{{args.consecutive-success-limit}}",
                    "successCondition": condition,
                    "provider": provider,
                }
            ],
        },
    }


def _sequential_document(name: str, spec: _Mesh, target: BuiltinTarget, source: Source) -> dict[str, Any]:
    """sequential-error-rate / sequential-latency: one in-progress measurement judged at every
    look (meshshift.analysis.judge); no interval, count or condition: the judge decides."""
    latency = name == LATENCY
    args = [
        _arg("alpha", "0.01"),
        _arg("relative-tolerance", "0.25"),
        _arg("absolute-tolerance", "0"),
        _arg("max-duration", "10m"),
        _arg("require-evidence", "false"),
        _arg("interval", "1s" if source == "envoy-admin" else "10s"),  # how often it looks
    ]
    options: dict[str, str] = {
        "builtin": name,
        "alpha": "{{args.alpha}}",
        "relativeTolerance": "{{args.relative-tolerance}}",
        "absoluteTolerance": "{{args.absolute-tolerance}}",
        "maxDuration": "{{args.max-duration}}",
        "requireEvidence": "{{args.require-evidence}}",
        "lookEvery": "{{args.interval}}",
        "source": source,
    }
    if latency:
        args.append(_arg("quantile", "0.95"))
        options["quantile"] = "{{args.quantile}}"
        options["unit"] = "ms" if source == "envoy-admin" else spec.duration_unit
    if source == "prometheus":
        args.extend(_arg(arg, target.value(arg)) for arg in spec.side_args)
        metric = spec.duration if latency else spec.requests
        options["canary"] = f"{metric}{{{spec.sides[0]}}}"
        options["stable"] = f"{metric}{{{spec.sides[1]}}}"
        if not latency:
            options["codeLabel"] = spec.code_label
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"args": args, "metrics": [{"name": name, "provider": {"meshshift": options}}]},
    }


class BuiltinTemplates:
    """The builtin templates of one mesh, for one rollout (a TemplateSource)."""

    def __init__(
        self, mesh: str, target: BuiltinTarget | None = None, *, source: Source = "prometheus"
    ) -> None:
        self.templates = {
            name: parse_template(builtin_document(name, mesh, target, source=source))
            for name in BUILTIN_METRICS
        }

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        return self.templates.get(name)


class InlineTemplates:
    """Templates given as values (a standalone file's `templates`, a test's)."""

    def __init__(self, *templates: AnalysisTemplate) -> None:
        self.templates = {(template.name, template.cluster_scope): template for template in templates}

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        return self.templates.get((name, cluster_scope))


class ChainedTemplates:
    """Asks each source in turn; the first that knows the name wins (user templates before builtins)."""

    def __init__(self, *sources: TemplateSource) -> None:
        self.sources = sources

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        for source in self.sources:
            template = await source.get(name, cluster_scope=cluster_scope)
            if template is not None:
                return template
        return None
