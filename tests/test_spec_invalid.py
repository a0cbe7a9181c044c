"""Invalid specs: each names the exact path of the mistake and says why.

Every case goes through the same entry point as `meshshift lint` (check_sources), so it
also proves the document dispatcher routes each kind to the right checks. Each case
holds one mistake and must produce exactly one error.
"""

from __future__ import annotations

import copy
from textwrap import dedent, indent
from typing import Any

import pytest
import yaml

from meshshift.spec import SpecError, check_sources, instantiate_template, parse_template, resolve_args
from meshshift.spec.documents import DocumentFinding
from meshshift.spec.model import TemplateArg

# A valid template every rollout case may reference: `service-name` must be given,
# `region` has a default.
TEMPLATE = dedent(
    """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: success-rate}
    spec:
      args:
      - name: service-name
      - name: region
        value: eu
      metrics:
      - name: success-rate
        interval: 1m
        count: 3
        successCondition: result[0] >= 0.95
        provider:
          prometheus:
            address: http://prometheus:9090
            query: sum(rate(http{service="{{args.service-name}}",region="{{args.region}}"}[1m]))
    """
)
GOOD_ANALYSIS = "{templates: [{templateName: success-rate}], args: [{name: service-name, value: shop}]}"


def steps(text: str) -> str:
    """A bare steps list (paths `steps[i]...`), next to the template."""
    return TEMPLATE + "---\n" + dedent(text)


def good_metric() -> dict[str, Any]:
    return {
        "name": "m",
        "interval": "1m",
        "count": 3,
        "successCondition": "result[0] > 0",
        "provider": {"prometheus": {"query": "up"}},
    }


def template(*metrics: dict[str, Any], args: list[dict[str, Any]] | None = None, **top: Any) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"args": args or [], "metrics": list(metrics) or [good_metric()]},
    }
    doc.update(top)
    return yaml.safe_dump(doc, sort_keys=False)


def metric(**changes: Any) -> str:
    """A template whose one metric is the good metric with `changes` (None removes a field)."""
    body = good_metric()
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return template(body)


def provider(**options: Any) -> str:
    return metric(provider=options)


def deployment(**annotations: str | None) -> str:
    """An opted-in Deployment; keyword `steps` is meshshift.io/steps, `on_failure` is on-failure..."""
    values: dict[str, Any] = {"meshshift.io/enabled": "true", "meshshift.io/router": "istio"}
    for key, value in annotations.items():
        name = "meshshift.io/" + key.replace("_", "-")
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "annotations": values}}
    return TEMPLATE + "---\n" + yaml.safe_dump(doc, sort_keys=False)


STANDALONE: dict[str, Any] = {
    "apiVersion": "meshshift.io/v1alpha1",
    "kind": "StandaloneRollout",
    "metadata": {"name": "shop"},
    "spec": {
        "router": {"envoy": {"listen": "127.0.0.1:10000"}},
        "stable": {"endpoints": ["127.0.0.1:8081"]},
        "canary": {"endpoints": ["127.0.0.1:8082"]},
        "steps": [{"setWeight": 50}],
    },
}


def standalone(**spec: Any) -> str:
    doc = copy.deepcopy(STANDALONE)
    doc["spec"].update(spec)
    return TEMPLATE + "---\n" + yaml.safe_dump(doc, sort_keys=False)


def argo(canary: str = "canary: {steps: [{setWeight: 10}]}", spec: str = "") -> str:
    return (
        TEMPLATE
        + "---\n"
        + dedent(
            """\
        apiVersion: argoproj.io/v1alpha1
        kind: Rollout
        metadata: {name: shop}
        spec:
          replicas: 3
        """
        )
        + indent(dedent(spec), "  ")
        + "  strategy:\n"
        + indent(dedent(canary), "    ")
    )


STEPS_ANNOTATION = 'metadata.annotations["meshshift.io/steps"]'

CASES = [
    # --- weights ---------------------------------------------------------------------
    pytest.param(steps("- setWeight: 120"), "steps[0].setWeight", "between 0 and 100", id="weight-above-100"),
    pytest.param(steps("- setWeight: -5"), "steps[0].setWeight", "between 0 and 100", id="weight-negative"),
    pytest.param(steps('- setWeight: "50"'), "steps[0].setWeight", "got a string", id="weight-string"),
    pytest.param(steps("- setWeight: true"), "steps[0].setWeight", "got a boolean", id="weight-bool"),
    pytest.param(steps("- setWeight: 12.5"), "steps[0].setWeight", "got a number", id="weight-float"),
    pytest.param(
        steps("- setWeight: 50\n- pause: {}\n- setWeight: 10"),
        "steps[2].setWeight",
        "lower than the earlier setWeight 50 at steps[0]",
        id="weight-non-monotonic",
    ),
    pytest.param(
        steps("- setMirrorRoute: {name: m, match: [{method: {exact: GET}}], percentage: 150}"),
        "steps[0].setMirrorRoute.percentage",
        "between 0 and 100",
        id="mirror-percentage",
    ),
    pytest.param(
        steps("- setCanaryScale: {weight: 101}"),
        "steps[0].setCanaryScale.weight",
        "between 0 and 100",
        id="scale-weight",
    ),
    # --- step kinds and unknown fields -----------------------------------------------
    pytest.param(
        steps("- setWieght: 20"),
        "steps[0].setWieght",
        'unknown step kind "setWieght" (did you mean "setWeight"?)',
        id="step-kind-typo",
    ),
    pytest.param(
        steps("- setWeight: 10\n  pause: {}"),
        "steps[0]",
        "at most one of setWeight, pause, experiment, analysis, found setWeight, pause",
        id="two-kinds",
    ),
    pytest.param(steps("- {}"), "steps[0]", "empty step", id="empty-step"),
    pytest.param(
        steps("- experiment: {}"), "steps[0].experiment", "meshshift does not run", id="experiment-step"
    ),
    pytest.param(steps("- setWeight"), "steps[0]", "must be a mapping, got a string", id="step-not-mapping"),
    pytest.param(
        steps("- pause: {durration: 5m}"),
        "steps[0].pause.durration",
        'did you mean "duration"',
        id="pause-field-typo",
    ),
    pytest.param(
        steps("- setWeight: 10\n  setWeight: 20"),
        "steps[0].setWeight",
        "written twice",
        id="duplicate-yaml-key",
    ),
    # --- durations -------------------------------------------------------------------
    pytest.param(
        steps("- pause: {duration: 5 minutes}"), "steps[0].pause.duration", "no spaces", id="pause-spaces"
    ),
    pytest.param(steps("- pause: {duration: 1d}"), "steps[0].pause.duration", '"d" unit', id="pause-days"),
    pytest.param(
        steps("- pause: {duration: -30}"), "steps[0].pause.duration", "negative", id="pause-negative"
    ),
    pytest.param(
        metric(interval="5 minutes"), "spec.metrics[0].interval", "not a duration", id="interval-bad"
    ),
    pytest.param(metric(interval=0), "spec.metrics[0].interval", "longer than zero", id="interval-zero"),
    pytest.param(
        metric(initialDelay="1w"), "spec.metrics[0].initialDelay", "not a duration", id="initial-delay-bad"
    ),
    # --- header routes ---------------------------------------------------------------
    pytest.param(
        steps('- setHeaderRoute: {name: "", match: [{headerName: X-Canary, headerValue: {exact: "true"}}]}'),
        "steps[0].setHeaderRoute.name",
        "must not be empty",
        id="route-name-empty",
    ),
    pytest.param(
        steps('- setHeaderRoute: {match: [{headerName: X-Canary, headerValue: {exact: "true"}}]}'),
        "steps[0].setHeaderRoute.name",
        "is required",
        id="route-name-missing",
    ),
    pytest.param(
        steps(
            '- setHeaderRoute: {name: qa, match: [{headerName: "X Canary", headerValue: {exact: "true"}}]}'
        ),
        "steps[0].setHeaderRoute.match[0].headerName",
        "not a valid header name",
        id="header-name-space",
    ),
    pytest.param(
        steps('- setHeaderRoute: {name: qa, match: [{headerName: ":authority", headerValue: {exact: a}}]}'),
        "steps[0].setHeaderRoute.match[0].headerName",
        "pseudo-header",
        id="header-name-pseudo",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: Host, headerValue: {exact: a.example}}]}"),
        "steps[0].setHeaderRoute.match[0].headerName",
        '"host" cannot be used',
        id="header-name-host",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-A, headerValue: {exact: a, prefix: b}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue",
        "found 2: exact, prefix",
        id="header-value-two-kinds",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-Canary, headerValue: {contains: a}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.contains",
        'unknown match kind "contains"',
        id="header-value-unknown-kind",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-Canary, headerValue: {exact: true}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.exact",
        'quote it: "true"',
        id="header-value-bool",
    ),
    # --- regexes ---------------------------------------------------------------------
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-User, headerValue: {regex: '([a-z'}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.regex",
        "invalid regular expression",
        id="regex-syntax",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-User, headerValue: {regex: '(a)\\1'}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.regex",
        "backreference",
        id="regex-backreference",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-User, headerValue: {regex: 'a(?=b)'}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.regex",
        "lookahead",
        id="regex-lookahead",
    ),
    pytest.param(
        steps("- setHeaderRoute: {name: qa, match: [{headerName: X-User, headerValue: {regex: '(?<=a)b'}}]}"),
        "steps[0].setHeaderRoute.match[0].headerValue.regex",
        "lookbehind",
        id="regex-lookbehind",
    ),
    pytest.param(
        steps("- setMirrorRoute: {name: m, match: [{method: {regex: '(?!GET)'}}]}"),
        "steps[0].setMirrorRoute.match[0].method.regex",
        "negative lookahead",
        id="mirror-regex-lookahead",
    ),
    pytest.param(
        steps("- setMirrorRoute: {name: m, match: [{path: {regex: 'a++'}}]}"),
        "steps[0].setMirrorRoute.match[0].path.regex",
        "possessive",
        id="regex-possessive",
    ),
    # --- mirror routes and canary scale ----------------------------------------------
    pytest.param(
        steps("- setMirrorRoute: {name: m, match: [{}]}"),
        "steps[0].setMirrorRoute.match[0]",
        "at least one of method, path, headers",
        id="mirror-empty-match",
    ),
    pytest.param(
        steps("- setMirrorRoute: {name: m, match: [{headers: {X Bad: {exact: a}}}]}"),
        'steps[0].setMirrorRoute.match[0].headers["X Bad"]',
        "not a valid header name",
        id="mirror-header-name",
    ),
    pytest.param(
        steps("- setCanaryScale: {}"), "steps[0].setCanaryScale", "needs exactly one setting", id="scale-none"
    ),
    pytest.param(
        steps("- setCanaryScale: {replicas: 2, weight: 50}"),
        "steps[0].setCanaryScale",
        "found 2: replicas, weight",
        id="scale-two",
    ),
    pytest.param(
        steps("- setCanaryScale: {matchTrafficWeight: false}"),
        "steps[0].setCanaryScale.matchTrafficWeight",
        "must be true",
        id="scale-match-false",
    ),
    pytest.param(
        steps("- setCanaryScale: {replicas: -1}"),
        "steps[0].setCanaryScale.replicas",
        "at least 0",
        id="scale-replicas",
    ),
    # --- analysis references ---------------------------------------------------------
    pytest.param(
        steps("- analysis: {args: [{name: service-name, value: shop}]}"),
        "steps[0].analysis.templates",
        "is required",
        id="analysis-no-templates",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: succes-rate}], args: [{name: service-name, value: x}]}"
        ),
        "steps[0].analysis.templates[0].templateName",
        'unknown template "succes-rate" (did you mean "success-rate"?)',
        id="unknown-template",
    ),
    pytest.param(
        steps("- analysis: {templates: [{templateName: success-rate}]}"),
        "steps[0].analysis",
        'missing arg "service-name"',
        id="missing-arg",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], "
            "args: [{name: service-name, value: shop}, {name: regoin, value: us}]}"
        ),
        "steps[0].analysis.args[1].name",
        'unused arg "regoin"',
        id="unused-arg",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], "
            "args: [{name: service-name, value: a}, {name: service-name, value: b}]}"
        ),
        "steps[0].analysis.args[1].name",
        'duplicate arg "service-name"',
        id="duplicate-step-arg",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], "
            "args: [{name: service-name, value: a, valueFrom: {podTemplateHashValue: Latest}}]}"
        ),
        "steps[0].analysis.args[0]",
        "either value or valueFrom",
        id="arg-value-and-value-from",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], "
            "args: [{name: service-name, valueFrom: {podTemplateHashValue: Canary}}]}"
        ),
        "steps[0].analysis.args[0].valueFrom.podTemplateHashValue",
        "not one of Stable, Latest",
        id="arg-pod-hash",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate, clusterScope: true}], "
            "args: [{name: service-name, value: a}]}"
        ),
        "steps[0].analysis.templates[0].clusterScope",
        "is an AnalysisTemplate, not a ClusterAnalysisTemplate",
        id="cluster-scope-mismatch",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], args: [{name: service-name, value: a}], "
            "dryRun: [{metricName: succes-rate}]}"
        ),
        "steps[0].analysis.dryRun[0].metricName",
        "matches no metric",
        id="dry-run-unknown-metric",
    ),
    pytest.param(
        steps(
            "- analysis: {templates: [{templateName: success-rate}], args: [{name: service-name, value: a}], "
            "measurementRetention: [{metricName: success-rate, limit: -1}]}"
        ),
        "steps[0].analysis.measurementRetention[0].limit",
        "at least 0",
        id="retention-negative",
    ),
    pytest.param(
        argo(
            "canary: {steps: [{setWeight: 10}], "
            "analysis: {templates: [{templateName: request-success-rate}], "
            "startingStep: 3}}"
        ),
        "spec.strategy.canary.analysis.startingStep",
        "out of range: the rollout has 1 steps (0..0)",
        id="starting-step-range",
    ),
    pytest.param(
        argo(
            "canary: {steps: [{setWeight: 10}], "
            "analysis: {templates: [{templateName: request-success-rate}], "
            "startingStep: -1}}"
        ),
        "spec.strategy.canary.analysis.startingStep",
        "at least 0",
        id="starting-step-negative",
    ),
    # --- templates -------------------------------------------------------------------
    pytest.param(
        template(good_metric(), good_metric()),
        "spec.metrics[1].name",
        'duplicate metric name "m"',
        id="duplicate-metric",
    ),
    pytest.param(
        template(args=[{"name": "a"}, {"name": "a"}]),
        "spec.args[1].name",
        'duplicate arg "a"',
        id="duplicate-arg",
    ),
    pytest.param(
        provider(prometheus={"query": 'up{service="{{ args.service }}"}'}),
        "spec.metrics[0].provider.prometheus.query",
        'uses arg "service", which spec.args does not declare',
        id="undeclared-placeholder",
    ),
    pytest.param(metric(count=-1), "spec.metrics[0].count", "at least 0", id="count-negative"),
    pytest.param(metric(count="abc"), "spec.metrics[0].count", "must be an integer", id="count-text"),
    pytest.param(
        metric(count=5, interval=None), "spec.metrics[0].count", "needs an interval", id="count-no-interval"
    ),
    pytest.param(metric(failureLimit=-2), "spec.metrics[0].failureLimit", "at least -1", id="failure-limit"),
    pytest.param(
        metric(inconclusiveLimit=-1), "spec.metrics[0].inconclusiveLimit", "at least 0", id="inconclusive"
    ),
    pytest.param(
        metric(consecutiveErrorLimit=-3),
        "spec.metrics[0].consecutiveErrorLimit",
        "at least 0",
        id="error-limit",
    ),
    pytest.param(
        metric(consecutiveSuccessLimit=5),
        "spec.metrics[0].consecutiveSuccessLimit",
        "count 3 is less than failureLimit + consecutiveSuccessLimit (0 + 5)",
        id="success-limit-above-count",
    ),
    pytest.param(
        metric(failureLimit=-1),
        "spec.metrics[0].failureLimit",
        "neither limit applies",
        id="no-limit-applies",
    ),
    pytest.param(
        template({**good_metric(), "successCondition": "result[0] >= {{args.x}} &&"}, args=[{"name": "x"}]),
        "spec.metrics[0].successCondition",
        "invalid condition: expected an expression after '&&'",
        id="condition-syntax",
    ),
    pytest.param(
        metric(sucessCondition="result > 1"),
        "spec.metrics[0].sucessCondition",
        'did you mean "successCondition"',
        id="metric-field-typo",
    ),
    pytest.param(
        provider(prometheu={"query": "up"}),
        "spec.metrics[0].provider.prometheu",
        'unknown provider "prometheu" (did you mean "prometheus"?)',
        id="provider-typo",
    ),
    pytest.param(
        provider(kayenta={"application": "x"}),
        "spec.metrics[0].provider.kayenta",
        'provider "kayenta" is not supported',
        id="provider-unsupported",
    ),
    pytest.param(
        provider(prometheus={"query": "up"}, web={"url": "http://x"}),
        "spec.metrics[0].provider",
        "found 2: prometheus, web",
        id="provider-two",
    ),
    pytest.param(
        provider(prometheus={"query": "up", "adress": "http://p:9090"}),
        "spec.metrics[0].provider.prometheus.adress",
        'unknown option "adress" (did you mean "address"?)',
        id="provider-option-typo",
    ),
    pytest.param(
        provider(prometheus={"address": "http://p:9090"}),
        "spec.metrics[0].provider.prometheus.query",
        "is required",
        id="provider-missing-query",
    ),
    pytest.param(
        provider(web={"url": "http://x", "body": "{}"}),
        "spec.metrics[0].provider.web.body",
        "needs method POST or PUT",
        id="web-body-get",
    ),
    pytest.param(
        provider(web={"url": "ftp://x"}),
        "spec.metrics[0].provider.web.url",
        "not an http",
        id="web-url-scheme",
    ),
    pytest.param(
        provider(datadog={"apiVersion": "v1", "queries": {"a": "avg:x{*}"}, "formula": "a"}),
        "spec.metrics[0].provider.datadog.queries",
        "needs apiVersion: v2",
        id="datadog-queries-v1",
    ),
    pytest.param(
        provider(meshshift={"builtin": "request-error-rate"}),
        "spec.metrics[0].provider.meshshift.builtin",
        "not one of request-success-rate, request-duration",
        id="builtin-unknown",
    ),
    pytest.param(
        template().replace("metrics:", "dryrun: []\n  metrics:"),
        "spec.dryrun",
        'did you mean "dryRun"',
        id="template-spec-typo",
    ),
    pytest.param(
        template(apiVersion="argoproj.io/v1beta1"),
        "apiVersion",
        "not one of argoproj.io/v1alpha1",
        id="api-version",
    ),
    pytest.param(
        template(metadata={"name": "Success_Rate"}),
        "metadata.name",
        "not a valid Kubernetes name",
        id="template-name",
    ),
    # --- Deployment annotations ------------------------------------------------------
    pytest.param(
        deployment(router=None), 'metadata.annotations["meshshift.io/router"]', "is required", id="no-router"
    ),
    pytest.param(
        deployment(router="istio,linkerd"),
        'metadata.annotations["meshshift.io/router"]',
        'unknown router "linkerd"',
        id="router-unknown",
    ),
    pytest.param(
        deployment(router="nginx"),
        'metadata.annotations["meshshift.io/nginx-ingress"]',
        "is required with the nginx router",
        id="nginx-without-ingress",
    ),
    pytest.param(
        deployment(on_failure="retreat"),
        'metadata.annotations["meshshift.io/on-failure"]',
        '"retreat" is not one of rollback, gradual, freeze',
        id="on-failure",
    ),
    pytest.param(
        deployment(progress_deadline="ten minutes"),
        'metadata.annotations["meshshift.io/progress-deadline"]',
        "not a duration",
        id="progress-deadline",
    ),
    pytest.param(
        deployment(steps="- setWeight: 10\n- pause: {duration: 2m\n"),
        STEPS_ANNOTATION,
        "invalid YAML at line 3",
        id="annotation-yaml-syntax",
    ),
    pytest.param(
        deployment(steps="- setWeight: 10\n- setWeight: 20\n- pause: {duration: 2 m}\n"),
        STEPS_ANNOTATION + "[2].pause.duration",
        "not a duration",
        id="annotation-step-path",
    ),
    pytest.param(
        deployment(steps="- setWeight: 60\n- setWeight: 30\n"),
        STEPS_ANNOTATION + "[1].setWeight",
        'set meshshift.io/allow-non-monotonic: "true"',
        id="annotation-non-monotonic",
    ),
    pytest.param(
        deployment(allow_non_monotonic="yes"),
        'metadata.annotations["meshshift.io/allow-non-monotonic"]',
        'must be "true" or "false"',
        id="allow-non-monotonic-value",
    ),
    pytest.param(
        deployment(
            analysis="templates: [{templateName: success-rate}]\nargs: [{name: service-name, value: a}]\n"
            "startingStep: 7\n",
            steps="- setWeight: 50\n",
        ),
        'metadata.annotations["meshshift.io/analysis"].startingStep',
        "out of range",
        id="annotation-starting-step",
    ),
    pytest.param(
        TEMPLATE
        + "---\n"
        + dedent(
            """\
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: shop
              annotations: {meshshift.io/enabled: true, meshshift.io/router: istio}
            """
        ),
        'metadata.annotations["meshshift.io/enabled"]',
        'quote it: "true"',
        id="annotation-not-string",
    ),
    # --- standalone ------------------------------------------------------------------
    pytest.param(
        standalone(router={"envoy": {"listen": "127.0.0.1:1"}, "nginx": {"listen": "127.0.0.1:2"}}),
        "spec.router",
        "found 2: envoy, nginx",
        id="standalone-two-routers",
    ),
    pytest.param(
        standalone(stable={"endpoints": ["localhost"]}),
        "spec.stable.endpoints[0]",
        "must be host:port",
        id="endpoint-no-port",
    ),
    pytest.param(
        standalone(canary={"endpoints": ["127.0.0.1:70000"]}),
        "spec.canary.endpoints[0]",
        "invalid port",
        id="endpoint-bad-port",
    ),
    pytest.param(
        standalone(canary={"endpoints": ["http://127.0.0.1:80"]}),
        "spec.canary.endpoints[0]",
        "without a scheme",
        id="endpoint-scheme",
    ),
    pytest.param(
        standalone(router={"envoy": {"admin": "127.0.0.1:9901"}}),
        "spec.router.envoy.listen",
        "is required",
        id="standalone-no-listen",
    ),
    pytest.param(standalone(stepz=[]), "spec.stepz", 'did you mean "steps"', id="standalone-field-typo"),
    pytest.param(standalone(onFailure="panic"), "spec.onFailure", "not one of", id="standalone-on-failure"),
    pytest.param(
        standalone(steps=[{"setWeight": 50}, {"setWeight": 101}]),
        "spec.steps[1].setWeight",
        "between 0 and 100",
        id="standalone-step-path",
    ),
    # --- Argo Rollout ----------------------------------------------------------------
    pytest.param(
        argo("blueGreen: {previewService: web-preview}"),
        "spec.strategy.blueGreen.activeService",
        "is required",
        id="blue-green-no-active-service",
    ),
    pytest.param(
        argo("blueGreen: {activeService: web, previewService: web}"),
        "spec.strategy.blueGreen.previewService",
        "the preview needs its own Service",
        id="blue-green-same-services",
    ),
    pytest.param(
        argo("blueGreen: {activeService: web}\ncanary: {steps: [{setWeight: 10}]}"),
        "spec.strategy",
        "needs exactly one strategy",
        id="blue-green-and-canary",
    ),
    pytest.param(
        argo("blueGreen: {activeService: web, autoPromotionSeconds: 1m}"),
        "spec.strategy.blueGreen.autoPromotionSeconds",
        "whole seconds",
        id="blue-green-seconds",
    ),
    pytest.param(
        argo(
            "blueGreen: {activeService: web, previewHeaderRoute: "
            "{name: qa, match: [{headerName: X-Canary, headerValue: {exact: 'true'}}]}}"
        ),
        "spec.strategy.blueGreen.previewHeaderRoute",
        "unknown field",
        id="blue-green-meshshift-field-in-argo",
    ),
    pytest.param(
        argo(
            "blueGreen:\n      activeService: web\n      prePromotionAnalysis: "
            "{templates: [{templateName: success-rat}], args: [{name: service-name, value: web}]}"
        ),
        "spec.strategy.blueGreen.prePromotionAnalysis.templates[0].templateName",
        'unknown template "success-rat"',
        id="blue-green-unknown-template",
    ),
    pytest.param(
        deployment(steps="- setWeight: 10\n", blue_green="activeService: shop\n"),
        'metadata.annotations["meshshift.io/blue-green"]',
        "either canary steps or blue-green",
        id="blue-green-with-steps",
    ),
    pytest.param(
        deployment(
            steps=None,
            blue_green="{}",
            analysis="{templates: [{templateName: success-rate}], args: [{name: service-name, value: shop}]}",
        ),
        'metadata.annotations["meshshift.io/analysis"]',
        "prePromotionAnalysis and postPromotionAnalysis",
        id="blue-green-with-background-analysis",
    ),
    pytest.param(
        deployment(steps=None, blue_green="{}", on_failure="gradual"),
        'metadata.annotations["meshshift.io/on-failure"]',
        "switches all traffic back",
        id="blue-green-gradual",
    ),
    pytest.param(
        deployment(steps=None, blue_green="activeService: web\n", service="shop"),
        'metadata.annotations["meshshift.io/blue-green"].activeService',
        "both name the Service",
        id="blue-green-two-services",
    ),
    pytest.param(
        deployment(steps=None, blue_green="previewReplicaCount: 0\n"),
        'metadata.annotations["meshshift.io/blue-green"].previewReplicaCount',
        "at least 1",
        id="blue-green-preview-replicas",
    ),
    pytest.param(
        deployment(steps=None, blue_green="previewMetadata: {labels: {role: 'pre view'}}\n"),
        'metadata.annotations["meshshift.io/blue-green"].previewMetadata.labels.role',
        "not a valid label value",
        id="blue-green-label-value",
    ),
    pytest.param(
        standalone(steps=None, blueGreen={"previewService": "web-preview"}),
        "spec.blueGreen.previewService",
        "is a Kubernetes field",
        id="standalone-blue-green-service",
    ),
    pytest.param(
        standalone(steps=None, blueGreen={}, preview={"listen": "127.0.0.1:10000"}),
        "spec.preview.listen",
        "same address as spec.router.envoy.listen",
        id="standalone-preview-clash",
    ),
    pytest.param(
        argo("canary: {stepz: []}"),
        "spec.strategy.canary.stepz",
        'did you mean "steps"',
        id="canary-field-typo",
    ),
    pytest.param(
        argo(spec="replica: 3\n"), "spec.replica", 'did you mean "replicas"', id="rollout-field-typo"
    ),
    # --- document level --------------------------------------------------------------
    pytest.param("just: a mapping\n", "", "cannot tell what this document is", id="no-kind"),
]


def errors_of(source: str) -> list[DocumentFinding]:
    return [f for f in check_sources([("case.yaml", source)]) if f.severity == "error"]


@pytest.mark.parametrize(("source", "path", "reason"), CASES)
def test_invalid_spec(source: str, path: str, reason: str) -> None:
    errors = errors_of(source)
    assert [(f.path, reason in f.reason) for f in errors] == [(path, True)], "\n".join(map(str, errors))


def test_there_are_at_least_forty_distinct_cases() -> None:
    sources = {param.values[0] for param in CASES}
    assert len(sources) == len(CASES) >= 40


def test_every_mistake_is_reported_at_once() -> None:
    source = standalone(
        stable={"endpoints": ["localhost"]},
        steps=[
            {"setWeight": 150},
            {"pause": {"duration": "1d"}},
            {"analysis": {"templates": [{"templateName": "sucess-rate"}]}},
        ],
        onFailure="explode",
        gradualInterval="soon",
    )
    paths = [f.path for f in errors_of(source)]
    assert sorted(paths) == sorted(
        [
            "spec.stable.endpoints[0]",
            "spec.steps[0].setWeight",
            "spec.steps[1].pause.duration",
            "spec.steps[2].analysis.templates[0].templateName",
            "spec.onFailure",
            "spec.gradualInterval",
        ]
    )


def test_five_template_mistakes_give_five_findings() -> None:
    source = template(
        {"name": "a", "interval": "1 m", "provider": {"prometheus": {"query": "up"}}},
        {"name": "c", "count": -1, "interval": "1m", "provider": {"graphite": {}}},
        {
            "name": "b",
            "successCondition": "result >",
            "provider": {"web": {"url": "http://x", "methd": "GET"}},
        },
    )
    assert sorted(f.path for f in errors_of(source)) == [
        "spec.metrics[0].interval",
        "spec.metrics[1].count",
        "spec.metrics[1].provider.graphite",
        "spec.metrics[2].provider.web.methd",
        "spec.metrics[2].successCondition",
    ]


# --- instantiating templates -------------------------------------------------------


def numeric_template() -> str:
    return template(
        {
            "name": "m",
            "interval": "{{args.every}}",
            "count": "{{ args.n }}",
            "successCondition": "result[0] > {{args.threshold}}",
            "provider": {"prometheus": {"query": 'up{job="{{args.job}}"}'}},
        },
        args=[
            {"name": "every", "value": "1m"},
            {"name": "n"},
            {"name": "threshold", "value": "0.5"},
            {"name": "job"},
        ],
    )


def test_numeric_fields_with_placeholders_are_checked_when_instantiated() -> None:
    parsed = parse_template(yaml.safe_load(numeric_template()))
    assert parsed.metrics[0].count is None  # deferred until args are known
    args = resolve_args(parsed.args, {"n": "4", "job": "shop"})
    (metric,) = instantiate_template(parsed, args)
    assert (metric.interval, metric.count, metric.success_condition) == (60.0, 4, "result[0] > 0.5")
    assert metric.provider is not None
    assert metric.provider.options["query"] == 'up{job="{{args.job}}"}'


@pytest.mark.parametrize(
    ("given", "path", "reason"),
    [
        ({"n": "abc"}, "spec.metrics[0].count", "must be an integer"),
        ({"n": "-1"}, "spec.metrics[0].count", "at least 0"),
        ({"n": "2", "every": "1 minute"}, "spec.metrics[0].interval", "not a duration"),
        ({"n": "2", "threshold": "&&"}, "spec.metrics[0].successCondition", "invalid condition"),
    ],
)
def test_instantiate_rejects_bad_arg_values(given: dict[str, str], path: str, reason: str) -> None:
    parsed = parse_template(yaml.safe_load(numeric_template()))
    args = resolve_args(parsed.args, {"job": "shop", **given})
    with pytest.raises(SpecError) as raised:
        instantiate_template(parsed, args)
    assert [(issue.path, reason in issue.reason) for issue in raised.value.errors] == [(path, True)]
    assert 'template "t"' in str(raised.value)


def test_instantiate_names_args_without_value() -> None:
    parsed = parse_template(yaml.safe_load(numeric_template()))
    with pytest.raises(SpecError) as raised:
        instantiate_template(parsed, {"every": "1m", "n": "2", "threshold": "1"})
    assert [issue.path for issue in raised.value.errors] == ["spec.metrics[0].provider.prometheus.query"]
    assert 'arg "job" has no value' in raised.value.errors[0].reason


def test_resolve_args_reports_every_missing_arg() -> None:
    template_args = (TemplateArg("a"), TemplateArg("b", "default"), TemplateArg("c"))
    assert resolve_args(template_args, {"a": "1", "c": "3", "extra": "x"}) == {
        "a": "1",
        "b": "default",
        "c": "3",
    }
    with pytest.raises(SpecError) as raised:
        resolve_args(template_args, {})
    assert [issue.reason for issue in raised.value.errors] == [
        'missing arg "a": no value given and no default',
        'missing arg "c": no value given and no default',
    ]


# --- what the checks must not refuse -----------------------------------------------

ACCEPTED = [
    pytest.param(
        steps(
            r"""
            - setHeaderRoute: {name: a, match: [{headerName: X-A, headerValue: {regex: '\(?=x'}}]}
            - setHeaderRoute: {name: b, match: [{headerName: X-B, headerValue: {regex: '[(?=]\d+'}}]}
            - setHeaderRoute: {name: c, match: [{headerName: X-C, headerValue: {regex: '[]a]{2}b+?'}}]}
            - setHeaderRoute: {name: d, match: [{headerName: X-D, headerValue: {regex: '(?i)(?P<v>b)a}+'}}]}
            - setHeaderRoute: {name: e, match: [{headerName: User-Agent, headerValue: {prefix: Mozilla/5.0}}]}
            """
        ),
        id="regexes-re2-accepts",
    ),
    pytest.param(
        steps(
            """
            - setWeight: 0
            - pause: {duration: 0}
            - setCanaryScale: {matchTrafficWeight: true}
            - setHeaderRoute: {name: qa, match: [{headerName: X-Canary, headerValue: {exact: "true"}}]}
            - setMirrorRoute: {name: m, match: [{method: {exact: GET}, headers: {X-Shadow: {exact: "1"}}}]}
            - pause: {}
            - setHeaderRoute: {name: qa}
            - setMirrorRoute: {name: m}
            - setWeight: 100
            """
        ),
        id="every-step-kind",
    ),
    pytest.param(
        steps(
            """
            - analysis:
                templates: [{templateName: success-rate}, {templateName: request-duration}]
                args:
                - {name: service-name, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
                - {name: region, valueFrom: {secretKeyRef: {name: region, key: value}}}
                dryRun: [{metricName: ".*"}]
                measurementRetention: [{metricName: success-rate, limit: 20}]
            """
        ),
        id="analysis-value-from-and-builtin",
    ),
    pytest.param(
        template(
            {
                "name": "m",
                "interval": "{{ args.every }}",
                "count": "{{args.n}}",
                "failureLimit": -1,
                "consecutiveSuccessLimit": 2,
                "successCondition": "result[0] >= {{ args.threshold }}",
                "provider": {"prometheus": {"query": "up", "timeout": "{{args.timeout}}"}},
            },
            args=[{"name": "every"}, {"name": "n"}, {"name": "threshold"}, {"name": "timeout", "value": "5"}],
        ),
        id="placeholders-everywhere",
    ),
    pytest.param(
        provider(
            datadog={
                "apiVersion": "v2",
                "queries": {"a": "sum:errors{*}", "b": "sum:hits{*}"},
                "formula": "a/b",
            }
        ),
        id="datadog-v2-formula",
    ),
    pytest.param(
        provider(
            web={
                "url": "https://x/check",
                "method": "POST",
                "jsonBody": {"q": 1},
                "headers": [{"key": "A", "value": "b"}],
            }
        ),
        id="web-post-json",
    ),
    pytest.param(
        template(kind="ClusterAnalysisTemplate", metadata={"name": "shared"})
        + "---\n"
        + dedent("""\
            - analysis: {templates: [{templateName: shared, clusterScope: true}]}
            """),
        id="cluster-template",
    ),
]


@pytest.mark.parametrize("source", ACCEPTED)
def test_accepted_edge_case(source: str) -> None:
    assert errors_of(source) == []


def test_a_count_of_thousands_of_digits_is_a_finding_not_a_crash() -> None:
    # Found by tests/reliability/test_fuzz_specs.py: int() refuses strings of 4,300 digits and more.
    from meshshift.spec.errors import Findings
    from meshshift.spec.templates import read_metric

    findings = Findings()
    raw = {"name": "m", "count": "9" * 5000, "provider": {"prometheus": {"query": "up"}}}
    read_metric(raw, "spec.metrics[0]", findings)
    messages = [str(issue) for issue in findings]
    assert any("count" in m and "5000 digits" in m for m in messages), messages
