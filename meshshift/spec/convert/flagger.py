"""A Flagger Canary (`flagger.app/v1beta1`) as meshshift's annotations on the Deployment it targets.

Flagger's scheduler (pkg/controller/scheduler.go) ticks every `analysis.interval`: the first tick
sets the first weight; each later tick runs the checks (webhooks, metrics) and, when they pass,
sets the next weight (`stepWeight` up to `maxWeight`, or along `stepWeights`), or promotes once
the weight reached its maximum; a failed check holds the weight and counts towards `threshold`.
The same schedule, in steps:

    - pause: {}                                 # confirm-rollout webhooks (a person approves)
    - analysis: {templates: [pre-rollout hooks]}
    - setWeight: W                              # for each weight Flagger would set, in order
    - pause: {duration: <interval>}
    - analysis: {templates: [the metrics, the rollout hooks], args: [...]}
    - pause: {}                                 # confirm-promotion webhooks

Each analysis is a gate: its metrics measure until each has passed once
(`consecutive-success-limit: 1`), and fail the rollout after `threshold` failed measurements
(`failure-limit: threshold - 1`). A/B testing (`match` + `iterations`) is a `setHeaderRoute` and
`iterations` gates; `mirror` a `setMirrorRoute` for the first interval; blue/green
(`iterations` alone, or the `kubernetes` provider) `meshshift.io/blue-green` with the checks as its
pre-promotion analysis. The builtin metrics become meshshift's builtin templates of the same name
with the same thresholds, MetricTemplates become AnalysisTemplates (Go template variables as
args), webhooks become web-provider templates (Flagger's JSON payload, POSTed), `event` webhooks
`meshshift.io/webhook-url`. Istio canaries get the VirtualService Flagger would create, Gateway
API ones the HTTPRoute. Everything else is a note naming the field and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshshift.spec import annotations as keys
from meshshift.spec.convert.common import (
    Notes,
    OutputDocument,
    SourceDocument,
    Workspace,
    annotation_yaml,
    ordered_annotations,
)
from meshshift.spec.durations import format_duration, parse_duration
from meshshift.spec.fields import at

GROUP = "flagger.app"
TEMPLATE_API = "meshshift.io/v1alpha1"
DEFAULT_INTERVAL = 60.0  # Flagger's analysis interval
MIN_INTERVAL = 10.0  # Flagger raises a shorter interval to 10 s
DEFAULT_METRIC_INTERVAL = "1m"
DEFAULT_MESH_PROVIDER = "istio"  # Flagger's -mesh-provider default
BUILTINS = ("request-success-rate", "request-duration")
PROVIDERS = {"istio": "istio", "nginx": "nginx", "traefik": "traefik"}
GATEWAY_API_PROVIDERS = ("gatewayapi", "gatewayapi:v1", "gatewayapi:v1beta1")
# Flagger's MetricTemplate query variables (MetricTemplateModel), as meshshift args.
QUERY_VARIABLES = ("name", "namespace", "target", "service", "ingress", "route", "interval")
_VARIABLE = re.compile(r"\{\{-?\s*(name|namespace|target|service|ingress|route|interval)\s*-?\}\}")
_TEMPLATE_VARIABLE = re.compile(r"\{\{-?\s*variables\.([A-Za-z0-9_-]+)\s*-?\}\}")
_GO_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
HEADER_ROUTE = "flagger-match"
MIRROR_ROUTE = "flagger-mirror"


def convert_flagger(
    workspace: Workspace, *, default_router: str, mesh_provider: str = DEFAULT_MESH_PROVIDER
) -> int:
    """Convert every Canary of the workspace; their MetricTemplates with them. Returns how many."""
    metric_templates = {
        (source.namespace, source.name): position
        for position, source in enumerate(workspace.sources)
        if source.is_("MetricTemplate", GROUP)
    }
    written: dict[int, list[tuple[str, str]]] = {}  # MetricTemplate position -> (name, condition) written
    canaries = [p for p, s in enumerate(workspace.sources) if s.is_("Canary", GROUP)]
    for position in canaries:
        _Canary(workspace, position, default_router, metric_templates, written, mesh_provider).convert()
    for position in metric_templates.values():
        if position not in written:
            _unreferenced_metric_template(workspace, position)
    for position, source in enumerate(workspace.sources):
        if source.is_("AlertProvider", GROUP):
            notes = Notes(source)
            notes.not_converted(
                "spec",
                "meshshift notifies a Slack incoming webhook (meshshift.io/slack-webhook-url) and a JSON "
                "webhook (meshshift.io/webhook-url) per Deployment, or the daemon's --slack-webhook-url",
            )
            workspace.notes.extend(notes.found)
            workspace.replace(position)
    return len(canaries)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: float) -> str:
    return f"{value:g}"


def _seconds(value: object, default: float) -> float:
    try:
        return parse_duration(value) if value not in (None, "") else default
    except ValueError:
        return default


# --- Flagger's weights ----------------------------------------------------------------------------


def flagger_weights(analysis: Mapping[str, Any]) -> list[int]:
    """The canary weights Flagger's scheduler sets, in order, before promoting (maxWeight,
    nextStepWeight and runCanary of pkg/controller/scheduler.go); empty when it never advances."""
    step_weights = [int(w) for w in analysis.get("stepWeights") or []]
    step = int(analysis.get("stepWeight") or 0)
    total = 100
    top = min(total, step_weights[-1]) if step_weights else (int(analysis.get("maxWeight") or 0) or total)

    def next_step(weight: int) -> int:
        if step > 0 or not step_weights:
            return step
        room = total - weight
        if room == 0:
            return 1
        if weight == 0:
            return min(room, step_weights[0])
        for index in range(len(step_weights) - 1):
            if step_weights[index] == weight:
                return min(room, step_weights[index + 1] - weight)
        return room

    weights: list[int] = []
    weight = 0
    while weight < top and len(weights) <= total:
        increase = next_step(weight)
        if increase <= 0:
            return []  # Flagger never advances: no step weight
        weight = min(total, weight + increase)
        weights.append(weight)
    return weights


# --- one Canary -----------------------------------------------------------------------------------


@dataclass
class _Gate:
    """The checks of one Flagger tick: templates and the args they share."""

    templates: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    def analysis(self) -> dict[str, Any]:
        analysis: dict[str, Any] = {"templates": [{"templateName": name} for name in self.templates]}
        if self.args:
            analysis["args"] = [{"name": k, "value": v} for k, v in self.args.items()]
        return analysis


class _Canary:
    def __init__(
        self,
        workspace: Workspace,
        position: int,
        default_router: str,
        metric_templates: Mapping[tuple[str | None, str], int],
        written: dict[int, list[tuple[str, str]]],
        mesh_provider: str = DEFAULT_MESH_PROVIDER,
    ) -> None:
        self.mesh_provider = mesh_provider
        self.workspace = workspace
        self.position = position
        self.source: SourceDocument = workspace.sources[position]
        self.notes = Notes(self.source)
        self.default_router = default_router
        self.metric_templates = metric_templates
        self.written = written
        data = _mapping(self.source.data)
        self.spec = _mapping(data.get("spec"))
        self.analysis = _mapping(self.spec.get("analysis") or self.spec.get("canaryAnalysis"))
        self.analysis_path = (
            "spec.canaryAnalysis" if self.spec.get("canaryAnalysis") is not None else "spec.analysis"
        )
        self.namespace = self.source.namespace
        self.name = self.source.name
        target = _mapping(self.spec.get("targetRef"))
        self.target = str(target.get("name") or self.name)
        self.target_kind = str(target.get("kind") or "Deployment")
        service = _mapping(self.spec.get("service"))
        self.apex = str(service.get("name") or self.target)
        self.service_spec = service
        self.annotations: dict[str, str] = {keys.ENABLED: "true"}
        self.added: list[OutputDocument] = []  # documents written in the Canary's place
        self.interval = max(MIN_INTERVAL, _seconds(self.analysis.get("interval"), DEFAULT_INTERVAL))
        self.threshold = max(1, int(self.analysis.get("threshold") or 0))
        where = f"{self.source.file}, document {self.source.index}"
        self.comment = f"meshshift convert: Flagger Canary {self.name} ({where})"
        self.generated: list[str] = []  # the AnalysisTemplates written for its metrics
        self.variables_used: set[str] = set()  # Flagger query variables those templates read

    # the whole conversion

    def convert(self) -> None:
        if not _mapping(self.spec.get("targetRef")).get("name"):
            self.notes.not_converted(
                "spec.targetRef", "is missing: this is no whole Canary (a fragment?); nothing was written"
            )
            self.workspace.replace(self.position)
            self.workspace.notes.extend(self.notes.found)
            return
        if self.target_kind != "Deployment":
            self.notes.not_converted(
                "spec.targetRef.kind",
                f"is {self.target_kind}: meshshift rolls out Deployments; nothing was written",
            )
            self.workspace.replace(self.position)
            self.workspace.notes.extend(self.notes.found)
            return
        router = self._router()
        if self.apex != self.target:
            self.annotations[keys.SERVICE] = self.apex
        deadline = self.spec.get("progressDeadlineSeconds")
        if deadline is not None:
            self.annotations[keys.PROGRESS_DEADLINE] = f"{deadline}s"
        self._spec_notes()
        hooks = self._webhooks()
        checks = self._checks(hooks)
        strategy = self._strategy(router)
        if strategy == "blue-green":
            self._blue_green(checks, hooks)
        else:
            self._steps(strategy, checks, hooks)
        self._routing_objects(router)
        self._annotate()
        self.workspace.replace(self.position, *self.added)
        self.workspace.notes.extend(self.notes.found)

    def _strategy(self, router: str) -> str:
        match = self.analysis.get("match")
        iterations = int(self.analysis.get("iterations") or 0)
        if self._provider() == "kubernetes":
            if match:
                self.notes.not_converted(
                    at(self.analysis_path, "match"), "Flagger ignores match with the kubernetes provider"
                )
            return "blue-green"
        if match and iterations > 0:
            return "ab-testing"
        if iterations > 0:
            return "blue-green"
        if match:
            self.notes.not_converted(
                at(self.analysis_path, "match"),
                "without iterations Flagger weighs the matched requests only; meshshift's weights apply "
                "to every request (give iterations for A/B testing)",
            )
        return "canary"

    def _provider(self) -> str:
        provider = self.spec.get("provider")
        return str(provider) if provider else self.mesh_provider

    def _router(self) -> str:
        provider = self._provider()
        if not self.spec.get("provider"):
            self.notes.assumed(
                "spec.provider",
                f"not set: Flagger uses its -mesh-provider flag; read as {self.mesh_provider} "
                "(say yours with convert --mesh-provider)",
            )
        if provider in PROVIDERS:
            router = PROVIDERS[provider]
        elif provider in GATEWAY_API_PROVIDERS:
            router = "gateway-api"
        else:
            router = self.default_router
            why = (
                "kubernetes switches Services only"
                if provider == "kubernetes"
                else f"meshshift does not drive {provider.split(':')[0]}"
            )
            note = self.notes.assumed if provider == "kubernetes" else self.notes.not_converted
            note(
                "spec.provider",
                f"{why}; meshshift needs a router: wrote meshshift.io/router: {router} "
                "(choose another with --router)",
            )
        self.annotations[keys.ROUTER] = router
        if router == "nginx":
            ingress = _mapping(self.spec.get("ingressRef")).get("name")
            if ingress:
                self.annotations[keys.NGINX_INGRESS] = str(ingress)
            else:
                self.notes.not_converted("spec.ingressRef", "is required with NGINX: name the stable Ingress")
        return router

    def _spec_notes(self) -> None:
        spec, base = self.spec, self.analysis_path
        if spec.get("autoscalerRef") is not None:
            name = _mapping(spec["autoscalerRef"]).get("name")
            self.notes.not_converted(
                "spec.autoscalerRef",
                f"meshshift copies no HPA: point an HPA at {self.target}-primary "
                f"(Flagger makes {name}-primary)",
            )
        reasons = {
            "skipAnalysis": "use `meshshift promote --full NAME` to skip the analysis of one rollout",
            "revertOnDeletion": "meshshift leaves the Deployment as it is when it stops managing it",
            "suspend": "remove meshshift.io/enabled to stop meshshift managing the Deployment",
            "metricsServer": "the builtins query the daemon's Prometheus (MESHSHIFT_PROMETHEUS_ADDRESS)",
            "routeRef": "meshshift drives the HTTPRoute of meshshift.io/http-route",
            "upstreamRef": "meshshift drives no Gloo upstreams",
        }
        for key, reason in reasons.items():
            if spec.get(key) not in (None, False, ""):
                self.notes.not_converted(at("spec", key), reason)
        analysis_reasons = {
            "stepWeightPromotion": "meshshift promotes in one step (all traffic to the new stable)",
            "primaryReadyThreshold": "meshshift waits for every pod of the primary",
            "canaryReadyThreshold": "meshshift waits for every pod of the canary",
            "sessionAffinity": "meshshift pins no sessions to the canary",
            "alerts": "meshshift notifies meshshift.io/slack-webhook-url and meshshift.io/webhook-url",
        }
        for key, reason in analysis_reasons.items():
            if self.analysis.get(key) not in (None, False, 0, [], {}):
                self.notes.not_converted(at(base, key), reason)
        if self.spec.get("canaryAnalysis") is not None and self.spec.get("analysis") is None:
            self.notes.changed("spec.canaryAnalysis", "read as spec.analysis (Flagger's older name)")

    # checks: metrics and webhooks

    def _checks(self, hooks: _Hooks) -> _Gate:
        gate = _Gate()
        intervals: list[tuple[str, str]] = []
        for index, metric in enumerate(self.analysis.get("metrics") or []):
            metric = _mapping(metric)
            path = at(at(self.analysis_path, "metrics"), index)
            name = str(metric.get("name", ""))
            interval = str(metric.get("interval") or DEFAULT_METRIC_INTERVAL)
            if metric.get("templateRef") is not None:
                template = self._metric_template(metric, path)
                if template is not None:
                    gate.templates.append(template)
                    intervals.append((path, interval))
                    for variable, value in _mapping(metric.get("templateVariables")).items():
                        if str(variable) in self.variables_used:
                            gate.args[str(variable)] = str(value)
                        else:
                            self.notes.changed(
                                at(at(path, "templateVariables"), str(variable)),
                                "not passed: the template does not use it",
                            )
            elif name in BUILTINS and not metric.get("query"):
                self._builtin(metric, path, gate)
                gate.templates.append(name)
                intervals.append((path, interval))
            elif metric.get("query"):
                template = self._inline_query(metric, path)
                gate.templates.append(template)
                intervals.append((path, interval))
            else:
                self.notes.not_converted(
                    path, f"{name!r} is neither a builtin metric nor has a templateRef or query"
                )
        if intervals:
            chosen = intervals[0][1]
            gate.args["interval"] = chosen
            if _seconds(chosen, 60) != self.interval:
                self.notes.changed(
                    at(self.analysis_path, "interval"),
                    f"checks start {format_duration(self.interval)} after each weight, as Flagger's; "
                    "a failed "
                    f"one is measured again after {chosen} (the metrics' interval, which is also their query "
                    "window), where Flagger checks again on its next tick",
                )
            for path, interval in intervals[1:]:
                if _seconds(interval, 60) != _seconds(chosen, 60):
                    self.notes.changed(
                        at(path, "interval"),
                        f"is {interval}; the metrics of one check share their interval arg (the query window "
                        f"and the measurement interval): {chosen}",
                    )
        gate.templates.extend(hooks.rollout)
        if any(t in BUILTINS or t in self.generated for t in gate.templates):
            gate.args.update(
                {"count": "0", "failure-limit": str(self.threshold - 1), "consecutive-success-limit": "1"}
            )
        if gate.templates and "interval" in gate.args:
            self._uses_target_args(gate)
        return gate

    def _uses_target_args(self, gate: _Gate) -> None:
        """The Flagger query variables the converted MetricTemplates read, with this canary's values."""
        values = {
            "name": self.name,
            "target": self.target,
            "service": self.apex,
            "ingress": str(_mapping(self.spec.get("ingressRef")).get("name") or ""),
            "route": str(_mapping(self.spec.get("routeRef")).get("name") or ""),
        }
        for variable in self.variables_used:
            if values.get(variable):
                gate.args.setdefault(variable, values[variable])

    def _builtin(self, metric: Mapping[str, Any], path: str, gate: _Gate) -> None:
        name = str(metric["name"])
        bounds = _mapping(metric.get("thresholdRange"))
        if name == "request-success-rate":
            low = bounds.get("min", metric.get("threshold"))
            if low is not None:
                gate.args["min-success-rate"] = _number(float(low))
            if bounds.get("max") is not None:
                self.notes.not_converted(
                    at(path, "thresholdRange.max"), "the builtin request-success-rate has a minimum only"
                )
        else:
            high = bounds.get("max", metric.get("threshold"))
            if high is not None:
                gate.args["max-duration"] = _number(float(high))
            if bounds.get("min") is not None:
                self.notes.not_converted(
                    at(path, "thresholdRange.min"), "the builtin request-duration has a maximum only"
                )
        for key in ("templateVariables",):
            if metric.get(key):
                self.notes.not_converted(at(path, key), "the builtins take no variables")

    def _condition(self, metric: Mapping[str, Any], path: str) -> str | None:
        """Flagger's check as a successCondition: it fails below min or above max; without a range,
        above `threshold` (default 0)."""
        bounds = _mapping(metric.get("thresholdRange"))
        parts = []
        if bounds.get("min") is not None:
            parts.append(f"result[0] >= {_number(float(bounds['min']))}")
        if bounds.get("max") is not None:
            parts.append(f"result[0] <= {_number(float(bounds['max']))}")
        if not parts:
            parts.append(f"result[0] <= {_number(float(metric.get('threshold') or 0))}")
            if metric.get("threshold") is None:
                self.notes.changed(
                    path,
                    "has no thresholdRange: Flagger fails it above threshold, 0 by default; so does this",
                )
        return " && ".join(parts)

    def _metric_template(self, metric: Mapping[str, Any], path: str) -> str | None:
        ref = _mapping(metric.get("templateRef"))
        ref_name = str(ref.get("name", ""))
        namespace = str(ref.get("namespace") or "") or self.namespace
        position = self.metric_templates.get((namespace, ref_name))
        if position is None:
            position = self.metric_templates.get((None, ref_name))
        if position is None:
            self.notes.not_converted(
                at(path, "templateRef"),
                f"the MetricTemplate {ref_name} is not in the files: give it to convert too "
                "(its query becomes "
                "an AnalysisTemplate, with this metric's thresholds as its condition)",
            )
            return None
        condition = self._condition(metric, path) or ""
        written = self.written.setdefault(position, [])
        for name, existing in written:
            if existing == condition:
                return name
        name = ref_name if not written else f"{ref_name}-{self.name}"
        document = _analysis_template(
            self.workspace, position, name, str(metric.get("name") or ref_name), condition, self
        )
        if document is None:
            return None
        written.append((name, condition))
        self.workspace.replace(position, document)
        self.generated.append(name)
        return name

    def _inline_query(self, metric: Mapping[str, Any], path: str) -> str:
        """Flagger's deprecated inline `query`: a Prometheus query on Flagger's metrics server."""
        name = f"{self.name}-{metric.get('name')}"
        self.notes.changed(
            at(path, "query"),
            f"written as the AnalysisTemplate {name}, on the daemon's Prometheus "
            "(MESHSHIFT_PROMETHEUS_ADDRESS)",
        )
        args, query = _query_args(str(metric["query"]), self)
        gated: dict[str, Any] = {"name": str(metric.get("name"))}
        _gated(gated, args)
        gated["successCondition"] = self._condition(metric, path)
        document = _template_document(name, self.namespace, args, gated, {"prometheus": {"query": query}})
        self.added.append(OutputDocument(document, self.comment))
        self.generated.append(name)
        return name

    # webhooks

    def _webhooks(self) -> _Hooks:
        hooks = _Hooks()
        for index, hook in enumerate(self.analysis.get("webhooks") or []):
            hook = _mapping(hook)
            path = at(at(self.analysis_path, "webhooks"), index)
            kind = str(hook.get("type") or "rollout")
            url = str(hook.get("url", ""))
            if kind in ("confirm-rollout", "confirm-promotion", "confirm-traffic-increase"):
                hooks.pauses.add(kind)
                self.notes.changed(
                    path,
                    f"{kind}: Flagger waits until {url} approves; meshshift pauses (pause: {{}}) until "
                    f"`meshshift promote {self.target}`",
                )
            elif kind in ("pre-rollout", "rollout"):
                name = self._web_template(hook, path, pre=kind == "pre-rollout")
                (hooks.pre if kind == "pre-rollout" else hooks.rollout).append(name)
            elif kind == "event":
                if keys.WEBHOOK_URL in self.annotations:
                    self.notes.not_converted(path, "meshshift posts events to one webhook per Deployment")
                else:
                    self.annotations[keys.WEBHOOK_URL] = url
                    self.notes.changed(
                        path,
                        "meshshift posts its own JSON events (rollout started, step, paused...) to this URL",
                    )
            elif kind == "post-rollout":
                self.notes.not_converted(
                    path,
                    "meshshift calls nothing after a rollout; it posts the outcome to "
                    "meshshift.io/webhook-url",
                )
            elif kind == "rollback":
                self.notes.not_converted(path, f"roll back by hand with `meshshift abort {self.target}`")
            else:
                self.notes.not_converted(at(path, "type"), f"{kind!r} is not a Flagger webhook type")
        return hooks

    def _web_template(self, hook: Mapping[str, Any], path: str, *, pre: bool) -> str:
        name = f"{self.name}-{hook.get('name')}"
        timeout = _seconds(hook.get("timeout") if len(str(hook.get("timeout") or "")) >= 2 else None, 10.0)
        body: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace or "default",
            "phase": "Progressing",
        }
        if hook.get("metadata"):
            body["metadata"] = {str(k): str(v) for k, v in _mapping(hook["metadata"]).items()}
        web: dict[str, Any] = {
            "url": str(hook.get("url", "")),
            "method": "POST",
            "jsonBody": body,
            "timeoutSeconds": max(1, round(timeout)),
        }
        if hook.get("disableTLS"):
            web["insecure"] = True
        metric: dict[str, Any] = {
            "name": str(hook.get("name")),
            "interval": format_duration(self.interval),
            "consecutiveErrorLimit": self.threshold - 1,
        }
        metric["count" if pre else "consecutiveSuccessLimit"] = 1
        if hook.get("retries"):
            self.notes.changed(
                at(path, "retries"), "an answer other than 2xx is an Error measurement, retried after 10 s"
            )
        self.notes.changed(
            path,
            f"a web metric (AnalysisTemplate {name}) POSTs Flagger's payload without its checksum; a non-2xx "
            f"answer is an Error measurement, {self.threshold - 1} in a row are tolerated (threshold)",
        )
        document = _template_document(name, self.namespace, [], metric, {"web": web})
        self.added.append(OutputDocument(document, self.comment))
        return name

    # the schedule

    def _steps(self, strategy: str, checks: _Gate, hooks: _Hooks) -> None:
        steps: list[dict[str, Any]] = []
        interval = format_duration(self.interval)
        if "confirm-rollout" in hooks.pauses:
            steps.append({"pause": {}})
        if hooks.pre:
            steps.append({"analysis": {"templates": [{"templateName": t} for t in hooks.pre]}})

        def check() -> None:
            steps.append({"pause": {"duration": interval}})
            if checks.templates:
                steps.append({"analysis": checks.analysis()})

        if strategy == "ab-testing":
            route = self._header_route()
            if route is not None:
                steps.append({"setHeaderRoute": route})
            for _ in range(int(self.analysis["iterations"])):
                check()
        elif not self.analysis:
            self.notes.changed(
                "spec.analysis",
                "is missing: Flagger then promotes a new revision at once, without checks; so does this "
                "Deployment, which has no steps",
            )
        else:
            weights = flagger_weights(self.analysis)
            if not weights:
                self.notes.not_converted(
                    self.analysis_path,
                    "has no stepWeight or stepWeights: Flagger never shifts traffic; "
                    "no weight step was written",
                )
            if self.analysis.get("mirror"):
                percentage = int(self.analysis.get("mirrorWeight") or 100)
                steps.append(
                    {
                        "setMirrorRoute": {
                            "name": MIRROR_ROUTE,
                            "match": [{"path": {"prefix": "/"}}],
                            "percentage": percentage,
                        }
                    }
                )
                check()
                steps.append({"setMirrorRoute": {"name": MIRROR_ROUTE}})
            for weight in weights:
                if "confirm-traffic-increase" in hooks.pauses:
                    steps.append({"pause": {}})
                steps.append({"setWeight": weight})
                check()
            if weights and any(weights[i] > weights[i + 1] for i in range(len(weights) - 1)):
                self.annotations[keys.ALLOW_NON_MONOTONIC] = "true"
        if "confirm-promotion" in hooks.pauses:
            steps.append({"pause": {}})
        self.annotations[keys.STEPS] = annotation_yaml(steps)

    def _header_route(self) -> dict[str, Any] | None:
        matches = []
        router = self.annotations[keys.ROUTER]
        for index, block in enumerate(self.analysis.get("match") or []):
            block = _mapping(block)
            path = at(at(self.analysis_path, "match"), index)
            headers = _mapping(block.get("headers"))
            others = [k for k in block if k != "headers"]
            if others:
                self.notes.not_converted(
                    path, f"meshshift's header routes match headers only, not {', '.join(map(str, others))}"
                )
                continue
            if len(headers) != 1:
                self.notes.not_converted(
                    at(path, "headers"),
                    "a header route entry matches one header; a block of several (all of which must match) "
                    "has no equivalent",
                )
                continue
            ((header, condition),) = headers.items()
            condition = _mapping(condition)
            if router == "nginx" and str(header).lower() == "cookie":
                self.notes.not_converted(
                    at(at(path, "headers"), str(header)),
                    "Flagger's NGINX cookie match is ingress-nginx's canary-by-cookie, which meshshift does "
                    "not write; match a header instead",
                )
                continue
            kind = next((k for k in ("exact", "prefix", "regex", "suffix") if k in condition), None)
            if kind is None:
                self.notes.not_converted(
                    at(at(path, "headers"), str(header)), "needs exact, prefix, regex or suffix"
                )
                continue
            value = str(condition[kind])
            if kind == "suffix":
                kind, value = "regex", ".*" + re.sub(r"([^A-Za-z0-9_-])", r"\\\1", value)
                self.notes.changed(
                    at(at(at(path, "headers"), str(header)), "suffix"), f"written as the regex {value}"
                )
            matches.append({"headerName": str(header), "headerValue": {kind: value}})
        if not matches:
            return None
        return {"name": HEADER_ROUTE, "match": matches}

    def _blue_green(self, checks: _Gate, hooks: _Hooks) -> None:
        iterations = int(self.analysis.get("iterations") or 10)
        if not self.analysis.get("iterations"):
            self.notes.assumed(
                self.analysis_path,
                "has no iterations: Flagger runs 10 with the kubernetes provider; so does this",
            )
        block: dict[str, Any] = {"autoPromotionEnabled": "confirm-promotion" not in hooks.pauses}
        templates = [*hooks.pre, *checks.templates]
        if templates:
            args = dict(checks.args)
            if "consecutive-success-limit" in args:
                args.update({"count": str(iterations), "consecutive-success-limit": "0"})
            gate = _Gate(templates, args)
            block["prePromotionAnalysis"] = gate.analysis()
            self.notes.changed(
                self.analysis_path,
                f"blue/green: the {iterations} checks ({format_duration(self.interval)} apart) are the "
                "pre-promotion analysis against the preview, then all traffic switches at once",
            )
        if hooks.pre:
            self.notes.changed(
                at(self.analysis_path, "webhooks"),
                "the pre-rollout hooks run with the checks, not before them",
            )
        if "confirm-rollout" in hooks.pauses or "confirm-traffic-increase" in hooks.pauses:
            self.notes.not_converted(
                at(self.analysis_path, "webhooks"),
                "a blue-green rollout has no steps to pause before; autoPromotionEnabled: false waits before "
                "the switch",
            )
        if self.analysis.get("mirror"):
            self.notes.not_converted(
                at(self.analysis_path, "mirror"), "meshshift's blue-green preview gets no mirrored traffic"
            )
        self.annotations[keys.BLUE_GREEN] = annotation_yaml(block)

    # routing objects Flagger would create

    def _routing_objects(self, router: str) -> None:
        service, base = self.service_spec, "spec.service"
        if router == "istio":
            self._virtual_service()
        elif router == "gateway-api":
            self._http_route()
        elif router == "traefik":
            self.notes.changed(
                "spec.service",
                f"meshshift weighs the TraefikService {self.apex} (created if missing); "
                "route your IngressRoute "
                "to it, as with Flagger",
            )
        if router != "istio":
            for key in (
                "hosts",
                "gateways",
                "match",
                "rewrite",
                "retries",
                "headers",
                "corsPolicy",
                "timeout",
            ):
                if service.get(key) and not (router == "gateway-api" and key in ("hosts", "timeout")):
                    self.notes.not_converted(
                        at(base, key), f"is Istio's; meshshift does not write it for {router}"
                    )
        if service.get("trafficPolicy"):
            self.notes.not_converted(
                at(base, "trafficPolicy"),
                f"meshshift writes no DestinationRules: give {self.apex}-primary and "
                f"{self.apex}-canary your own",
            )
        reasons = {
            "portDiscovery": "meshshift's Services take the apex Service's ports (or the containers')",
            "delegation": "meshshift writes no delegate VirtualServices",
            "mirror": "meshshift mirrors with setMirrorRoute steps",
            "backends": "meshshift writes no App Mesh backends",
            "apex": "meshshift sets no labels or annotations on the objects it creates",
            "primary": "meshshift sets no labels or annotations on the objects it creates",
            "canary": "meshshift sets no labels or annotations on the objects it creates",
            "unmanagedMetadata": "meshshift leaves other controllers' metadata alone already",
            "headless": "meshshift creates ClusterIP Services",
            "trafficDistribution": "meshshift creates Services without trafficDistribution",
            "backendTimeout": "meshshift writes no backend timeouts",
        }
        for key, reason in reasons.items():
            if service.get(key):
                self.notes.not_converted(at(base, key), reason)
        self._apex_service()

    def _apex_service(self) -> None:
        service = self.service_spec
        if service.get("port") is None:
            return
        if self.workspace.find("Service", "", self.apex, self.namespace) is not None:
            return
        selector = self._selector()
        if selector is None:
            self.notes.not_converted(
                "spec.service.port",
                f"the Service {self.apex} is not in the files, and neither is the Deployment {self.target} "
                f"whose labels it would select: create it with port {service['port']} (meshshift copies its "
                "ports to the Services it manages)",
            )
            return
        port: dict[str, Any] = {"name": str(service.get("portName") or "http"), "port": service["port"]}
        port["targetPort"] = service.get("targetPort") or service["port"]
        if service.get("appProtocol"):
            port["appProtocol"] = service["appProtocol"]
        metadata: dict[str, Any] = {"name": self.apex}
        if self.namespace:
            metadata["namespace"] = self.namespace
        document = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"selector": selector, "ports": [port]},
        }
        self.added.append(OutputDocument(document, self.comment + ": the Service Flagger would create"))
        self.notes.changed(
            "spec.service",
            f"the Service {self.apex} Flagger creates is written here; meshshift points it at the primary's "
            "pods and copies its ports to the Services it manages",
        )

    def _selector(self) -> dict[str, str] | None:
        found = self.workspace.find("Deployment", "apps", self.target, self.namespace)
        if found is None:
            return None
        labels = _mapping(_mapping(_mapping(self.workspace.sources[found].data).get("spec")).get("selector"))
        match = _mapping(labels.get("matchLabels"))
        return {str(k): str(v) for k, v in match.items()} or None

    def _virtual_service(self) -> None:
        if (
            self.workspace.find("VirtualService", "networking.istio.io", self.apex, self.namespace)
            is not None
        ):
            self.notes.changed(
                "spec.service",
                f"the VirtualService {self.apex} in the files is used as it is: its route must send to "
                f"{self.apex}-primary and {self.apex}-canary",
            )
            return
        service = self.service_spec
        hosts = [str(h) for h in service.get("hosts") or []]
        if self.apex not in hosts and "*" not in hosts:
            hosts.append(self.apex)
        gateways = [str(g) for g in service.get("gateways") or []] or ["mesh"]
        route: dict[str, Any] = {}
        for key in ("match", "rewrite", "timeout", "retries", "corsPolicy", "headers"):
            if service.get(key):
                route[key] = service[key]
        if isinstance(route.get("rewrite"), Mapping):
            route["rewrite"] = {k: v for k, v in route["rewrite"].items() if k in ("uri", "authority")}
        route["route"] = [
            {"destination": {"host": f"{self.apex}-primary"}, "weight": 100},
            {"destination": {"host": f"{self.apex}-canary"}, "weight": 0},
        ]
        metadata: dict[str, Any] = {"name": self.apex}
        if self.namespace:
            metadata["namespace"] = self.namespace
        document = {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": {"hosts": hosts, "gateways": gateways, "http": [{"name": "primary", **route}]},
        }
        self.added.append(
            OutputDocument(document, self.comment + ": the VirtualService Flagger would create")
        )
        self.notes.changed(
            "spec.service",
            f"the VirtualService {self.apex} Flagger creates is written here "
            "(hosts, gateways and the route's "
            "settings of spec.service); meshshift shifts its weights",
        )

    def _http_route(self) -> None:
        if (
            self.workspace.find("HTTPRoute", "gateway.networking.k8s.io", self.apex, self.namespace)
            is not None
        ):
            return
        service = self.service_spec
        rule: dict[str, Any] = {
            "backendRefs": [
                {"name": f"{self.apex}-primary", "port": service.get("port") or 80, "weight": 100},
                {"name": f"{self.apex}-canary", "port": service.get("port") or 80, "weight": 0},
            ]
        }
        if service.get("timeout"):
            rule["timeouts"] = {"request": str(service["timeout"])}
        spec: dict[str, Any] = {}
        if service.get("gatewayRefs"):
            spec["parentRefs"] = list(service["gatewayRefs"])
        if service.get("hosts"):
            spec["hostnames"] = [str(h) for h in service["hosts"]]
        spec["rules"] = [rule]
        metadata: dict[str, Any] = {"name": self.apex}
        if self.namespace:
            metadata["namespace"] = self.namespace
        document = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": metadata,
            "spec": spec,
        }
        self.added.append(OutputDocument(document, self.comment + ": the HTTPRoute Flagger would create"))
        self.notes.changed(
            "spec.service",
            f"the HTTPRoute {self.apex} Flagger creates is written here; "
            "meshshift shifts its backendRefs' weights",
        )

    # the Deployment

    def _annotate(self) -> None:
        found = self.workspace.find("Deployment", "apps", self.target, self.namespace)
        if found is not None:
            meta = self.workspace.data(found).setdefault("metadata", {})
            earlier = self.workspace.annotated.get(found)
            if earlier is not None:
                self.notes.not_converted(
                    "spec.targetRef",
                    f"the Deployment {self.target} was converted from {earlier} already; this Canary's "
                    "annotations replace that one's (convert them one at a time)",
                )
            theirs = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if not str(k).startswith("meshshift.io/")
            }
            meta["annotations"] = ordered_annotations({**theirs, **self.annotations})
            self.workspace.annotated[found] = (
                f"Canary {self.name} ({self.source.file}, document {self.source.index})"
            )
            return
        metadata: dict[str, Any] = {"name": self.target}
        if self.namespace:
            metadata["namespace"] = self.namespace
        metadata["annotations"] = ordered_annotations(self.annotations)
        patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata}
        self.added.insert(0, OutputDocument(patch, self.comment))
        self.notes.assumed(
            "spec.targetRef",
            f"the Deployment {self.target} is not in the files: the annotations are written on a Deployment "
            f"{self.target} that holds only them; apply them to yours (kubectl annotate, or kubectl patch "
            "--type merge with this document)",
        )


@dataclass
class _Hooks:
    pre: list[str] = field(default_factory=list)  # pre-rollout web templates
    rollout: list[str] = field(default_factory=list)  # rollout web templates, in every check
    pauses: set[str] = field(default_factory=set)  # confirm-* hook types


# --- MetricTemplates -------------------------------------------------------------------------------


def _query_args(query: str, canary: _Canary | None) -> tuple[list[dict[str, Any]], str]:
    """Flagger's Go template variables as `{{args.x}}` placeholders, and the args they need."""
    used: list[str] = []

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in used:
            used.append(name)
        return "{{args." + name + "}}"

    def template_variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in used:
            used.append(name)
        return "{{args." + name + "}}"

    converted = _VARIABLE.sub(variable, query)
    converted = _TEMPLATE_VARIABLE.sub(template_variable, converted)
    if canary is not None:
        canary.variables_used.update(used)
    args: list[dict[str, Any]] = []
    for name in used:
        if name == "interval":
            args.append({"name": "interval", "value": DEFAULT_METRIC_INTERVAL})
        elif name in QUERY_VARIABLES:
            args.append({"name": name})
        else:
            args.append({"name": name})  # a templateVariable: the Canary gives it
    return args, converted


def _template_document(
    name: str,
    namespace: str | None,
    args: list[dict[str, Any]],
    metric: dict[str, Any],
    provider: dict[str, Any],
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {}
    if args:
        spec["args"] = args
    spec["metrics"] = [{**{k: v for k, v in metric.items() if v is not None}, "provider": provider}]
    return {"apiVersion": TEMPLATE_API, "kind": "AnalysisTemplate", "metadata": metadata, "spec": spec}


def _gated(metric: dict[str, Any], args: list[dict[str, Any]]) -> None:
    """A converted metric measures on the check's schedule: the args every check passes."""
    metric.update(
        {
            "interval": "{{args.interval}}",
            "count": "{{args.count}}",
            "failureLimit": "{{args.failure-limit}}",
            "consecutiveSuccessLimit": "{{args.consecutive-success-limit}}",
        }
    )
    names = {arg["name"] for arg in args}
    for arg, value in (
        ("interval", DEFAULT_METRIC_INTERVAL),
        ("count", "0"),
        ("failure-limit", "0"),
        ("consecutive-success-limit", "0"),
    ):
        if arg not in names:
            args.append({"name": arg, "value": value})


def _analysis_template(
    workspace: Workspace, position: int, name: str, metric_name: str, condition: str, canary: _Canary | None
) -> OutputDocument | None:
    """A MetricTemplate as an AnalysisTemplate whose metric checks `condition`."""
    source = workspace.sources[position]
    notes = Notes(source)
    spec = _mapping(_mapping(source.data).get("spec"))
    provider = _mapping(spec.get("provider"))
    kind = str(provider.get("type") or "prometheus")
    query = str(spec.get("query") or "")
    args, converted = _query_args(query, canary)
    leftover = _GO_TEMPLATE.findall(converted.replace("{{args.", "\x00"))
    if leftover:
        notes.not_converted(
            "spec.query", f"Go template expressions meshshift cannot turn into args: {', '.join(leftover)}"
        )
    options: dict[str, Any]
    if kind == "prometheus":
        options = {"query": converted}
        if provider.get("address"):
            options["address"] = str(provider["address"])
        if provider.get("insecureSkipVerify"):
            options["insecure"] = True
        headers = _mapping(provider.get("headers"))
        if headers:
            options["headers"] = [
                {"key": str(k), "value": str(v[0] if isinstance(v, list) and v else v)}
                for k, v in headers.items()
            ]
        secret = _mapping(provider.get("secretRef")).get("name")
        if secret:
            args.extend(
                {
                    "name": f"prometheus-{key}",
                    "valueFrom": {"secretKeyRef": {"name": str(secret), "key": key}},
                }
                for key in ("username", "password")
            )
            options["authentication"] = {
                "basicAuth": {
                    "username": "{{args.prometheus-username}}",
                    "password": "{{args.prometheus-password}}",
                }
            }
            notes.assumed(
                "spec.provider.secretRef",
                "read as basic auth (keys username and password); Flagger also takes a token: for one, write "
                "headers: [{key: Authorization, value: Bearer {{args.token}}}] with a secretKeyRef arg",
            )
        body: dict[str, Any] = {"prometheus": options}
    elif kind == "datadog":
        options = {"query": converted, "interval": "{{args.interval}}"}
        if not any(arg["name"] == "interval" for arg in args):
            args.append({"name": "interval", "value": DEFAULT_METRIC_INTERVAL})
        secret = _mapping(provider.get("secretRef")).get("name")
        if secret:
            options["secretRef"] = {"name": str(secret), "namespaced": True}
            notes.changed(
                "spec.provider.secretRef",
                "meshshift reads the keys api-key, app-key and address of this Secret (Flagger's are "
                "datadog_api_key and datadog_application_key): add them",
            )
        if provider.get("address"):
            notes.not_converted(
                "spec.provider.address",
                "meshshift takes Datadog's address from the Secret's address key or DD_SITE",
            )
        body = {"datadog": options}
    elif kind == "newrelic":
        options = {"query": converted}
        secret = _mapping(provider.get("secretRef")).get("name")
        if secret:
            options["profile"] = str(secret)
            notes.changed(
                "spec.provider.secretRef",
                "meshshift queries NerdGraph with the keys personal-api-key and account-id of this Secret "
                "(Flagger's Insights keys are newrelic_query_key and newrelic_account_id): add them",
            )
        body = {"newRelic": options}
    else:
        notes.not_converted(
            "spec.provider.type", f"meshshift has no {kind} provider; no template was written"
        )
        workspace.notes.extend(notes.found)
        return None
    metric: dict[str, Any] = {"name": metric_name}
    _gated(metric, args)
    if condition:
        metric["successCondition"] = condition
    document = _template_document(name, source.namespace, args, metric, body)
    notes.changed(
        "spec",
        f"written as the AnalysisTemplate {name}"
        + (f", checking {condition} (the Canary's thresholds)" if condition else ""),
    )
    workspace.notes.extend(notes.found)
    comment = (
        f"meshshift convert: Flagger MetricTemplate {source.name} ({source.file}, document {source.index})"
    )
    return OutputDocument(document, comment)


def _unreferenced_metric_template(workspace: Workspace, position: int) -> None:
    source = workspace.sources[position]
    document = _analysis_template(workspace, position, source.name, source.name, "", None)
    notes = Notes(source)
    notes.changed(
        "spec",
        "no Canary in the files uses it, so it has no thresholds: its metric passes on any answer until a "
        "successCondition is written",
    )
    workspace.notes.extend(notes.found)
    if document is not None:
        workspace.replace(position, document)
    else:
        workspace.replace(position)


__all__: Sequence[str] = ("convert_flagger", "flagger_weights")
