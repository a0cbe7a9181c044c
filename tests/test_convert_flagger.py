"""`meshshift convert` on Flagger Canaries: the tutorials' Canaries (tests/data/flagger, copied from
Flagger's docs, with the tutorials' podinfo Deployment from its kustomize/) convert and lint clean;
the converted schedule sets Flagger's weights in Flagger's order through meshshift's engine; the
builtin metrics keep their thresholds, MetricTemplates become AnalysisTemplates that render the
query Flagger would, `match` becomes header routes, webhooks pauses or web analyses.

Flagger's weights, from its scheduler (pkg/controller/scheduler.go: maxWeight, nextStepWeight,
runCanary) and its docs (docs/gitbook/usage/deployment-strategies.md), stated here by hand:
`stepWeight` is added to the weight at each passing check, capped at 100, until the weight reaches
`maxWeight` (default 100), so maxWeight 50 with stepWeight 20 gives 20, 40, 60 ("until weight goes
above 50"); `stepWeights` are walked in order up to the last one (capped at 100); without either,
the weight never moves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.analysis.phases import MetricCounts
from meshshift.analysis.providers.builtin import BuiltinTemplates
from meshshift.analysis.providers.templating import render_promql
from meshshift.analysis.run import Measurement, record_measurement, start_run
from meshshift.spec.convert import Conversion, convert_sources
from meshshift.spec.convert.flagger import flagger_weights
from meshshift.spec.model import AnalysisPhase
from meshshift.spec.templates import instantiate_template, parse_template, resolve_args
from tests.engine_world import weights_until_promotion

FLAGGER = Path(__file__).parent / "data" / "flagger"
TUTORIALS = FLAGGER / "docs" / "gitbook" / "tutorials"
PODINFO = FLAGGER / "kustomize" / "podinfo" / "deployment.yaml"

WEIGHTS = [
    # Flagger's docs (deployment-strategies.md)
    ({"maxWeight": 50, "stepWeight": 20}, [20, 40, 60]),
    ({"stepWeights": [1, 2, 10, 80]}, [1, 2, 10, 80]),
    ({"maxWeight": 50, "stepWeight": 2}, list(range(2, 51, 2))),  # "will run for 25 minutes"
    # derived from scheduler.go
    ({"maxWeight": 50, "stepWeight": 10}, [10, 20, 30, 40, 50]),
    ({"stepWeight": 30}, [30, 60, 90, 100]),
    ({"stepWeight": 150}, [100]),
    ({"stepWeights": [5, 10, 200]}, [5, 10, 100]),
    ({"stepWeights": [10, 50, 20]}, [10, 50]),  # max 20 is passed at 50: no step back
    ({"stepWeight": 10, "stepWeights": [1, 2]}, [10]),  # stepWeight is the step; the last stepWeights caps
    ({"maxWeight": 50}, []),  # no step: Flagger never advances
]


@pytest.mark.parametrize(("analysis", "expected"), WEIGHTS)
def test_flaggers_weights(analysis: dict[str, Any], expected: list[int]) -> None:
    assert flagger_weights(analysis) == expected


def canary(analysis: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, **analysis},
            **spec,
        },
    }


def convert(*documents: Any, files: tuple[Path, ...] = (PODINFO,)) -> Conversion:
    sources = [(str(p), p.read_text()) for p in files]
    sources += [(f"canary{i}.yaml", yaml.safe_dump(d)) for i, d in enumerate(documents)]
    return convert_sources(sources)


def deployment(conversion: Conversion, name: str = "podinfo") -> dict[str, Any]:
    found = [
        d.data
        for d in conversion.documents
        if d.data.get("kind") == "Deployment" and d.data["metadata"]["name"] == name
    ]
    assert len(found) == 1
    result: dict[str, Any] = found[0]
    return result


def steps(conversion: Conversion) -> list[dict[str, Any]]:
    return yaml.safe_load(deployment(conversion)["metadata"]["annotations"]["meshshift.io/steps"]) or []


@pytest.mark.parametrize(("analysis", "expected"), [w for w in WEIGHTS if w[1]])
def test_the_converted_schedule_sets_flaggers_weights_in_order(
    analysis: dict[str, Any], expected: list[int]
) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    conversion = convert(canary({**analysis, "metrics": metrics}))
    assert conversion.lint_errors == [], [str(f) for f in conversion.lint_errors]
    assert weights_until_promotion(deployment(conversion)) == expected
    # Each weight is held one interval, then checked: setWeight, pause, analysis.
    written = steps(conversion)
    assert [s for s in written if "setWeight" in s] == [{"setWeight": w} for w in expected]
    for index, step in enumerate(written):
        if "setWeight" in step:
            assert written[index + 1] == {"pause": {"duration": "1m"}}
            assert "analysis" in written[index + 2]


def tutorial(name: str) -> list[Path]:
    return sorted(TUTORIALS.glob(f"{name}.block*.yaml"))


def canary_blocks(name: str) -> list[Path]:
    return [p for p in tutorial(name) if "kind: Canary" in p.read_text() and "targetRef" in p.read_text()]


def metric_templates(name: str) -> list[Path]:
    return [p for p in tutorial(name) if "kind: MetricTemplate" in p.read_text()]


# The tutorials that install Flagger with a -mesh-provider and leave spec.provider out.
MESH_PROVIDERS = {"gatewayapi-progressive-delivery": "gatewayapi:v1", "kuma-progressive-delivery": "kuma"}
PAGES: dict[str, list[list[int] | None]] = {
    # page: weights of each of its whole Canaries, in block order (None: not a weighted canary)
    "istio-progressive-delivery": [[10, 20, 30, 40, 50], [10, 20, 30, 40, 50]],
    "nginx-progressive-delivery": [list(range(5, 51, 5))],
    "traefik-progressive-delivery": [list(range(5, 51, 5))],
    "gatewayapi-progressive-delivery": [[10, 20, 30, 40, 50], None, [10, 20, 30, 40, 50], None],
    "istio-ab-testing": [None],
    "kubernetes-blue-green": [None],
}


@pytest.mark.parametrize("page", PAGES)
def test_the_tutorials_canaries_convert_and_lint_clean(page: str) -> None:
    blocks = canary_blocks(page)
    assert len(blocks) == len(PAGES[page])
    for block, expected in zip(blocks, PAGES[page], strict=True):
        conversion = convert_sources(
            [(str(p), p.read_text()) for p in (PODINFO, *metric_templates(page), block)],
            mesh_provider=MESH_PROVIDERS.get(page, "istio"),  # the -mesh-provider each tutorial installs
        )
        assert conversion.converted == 1
        assert conversion.lint_errors == [], (block.name, [str(f) for f in conversion.lint_errors])
        assert not [f for f in conversion.lint if f.severity == "warning"], (
            block.name,
            [str(f) for f in conversion.lint],
        )
        if expected is not None:
            assert weights_until_promotion(deployment(conversion)) == expected, block.name


@pytest.mark.parametrize(
    ("page", "router"),
    [
        ("istio-progressive-delivery", "istio"),
        ("nginx-progressive-delivery", "nginx"),
        ("traefik-progressive-delivery", "traefik"),
        ("gatewayapi-progressive-delivery", "gateway-api"),
        ("kuma-progressive-delivery", "istio"),  # no kuma router: the default, and said
    ],
)
def test_the_router_follows_the_provider(page: str, router: str) -> None:
    sources = [(str(p), p.read_text()) for p in (PODINFO, canary_blocks(page)[0])]
    conversion = convert_sources(sources, mesh_provider=MESH_PROVIDERS.get(page, "istio"))
    annotations = deployment(conversion)["metadata"]["annotations"]
    assert annotations["meshshift.io/router"] == router
    if page.startswith("nginx"):
        assert annotations["meshshift.io/nginx-ingress"] == "podinfo"
    if page.startswith("kuma"):
        kinds = {n.kind: n.reason for n in conversion.notes if n.path == "spec.provider"}
        assert "read as kuma" in kinds["assumed"]  # no provider: the -mesh-provider given
        assert "meshshift does not drive kuma" in kinds["not-converted"]


def test_the_istio_tutorial_in_detail() -> None:
    block = canary_blocks("istio-progressive-delivery")[0]
    conversion = convert_sources([(str(p), p.read_text()) for p in (PODINFO, block)])
    written = steps(conversion)
    # The pre-rollout hook first; then, per weight, the interval and a check of both builtins with
    # Flagger's thresholds and the load-test hook, failing at the 5th failure (threshold 5).
    assert written[0] == {"analysis": {"templates": [{"templateName": "podinfo-acceptance-test"}]}}
    check = written[3]["analysis"]
    assert [t["templateName"] for t in check["templates"]] == [
        "request-success-rate",
        "request-duration",
        "podinfo-load-test",
    ]
    assert {a["name"]: a["value"] for a in check["args"]} == {
        "min-success-rate": "99",
        "max-duration": "500",
        "interval": "1m",
        "count": "0",
        "failure-limit": "4",
        "consecutive-success-limit": "1",
    }
    by_kind = {
        d.data["kind"]: d.data
        for d in conversion.documents
        if d.data["kind"] in ("VirtualService", "Service")
    }
    service = by_kind["VirtualService"]["spec"]
    assert service["hosts"] == ["app.example.com", "podinfo"]
    assert service["gateways"] == ["istio-system/public-gateway"]
    assert service["http"][0]["retries"] == {
        "attempts": 3,
        "perTryTimeout": "1s",
        "retryOn": "gateway-error,connect-failure,refused-stream",
    }
    assert [r["destination"]["host"] for r in service["http"][0]["route"]] == [
        "podinfo-primary",
        "podinfo-canary",
    ]
    assert by_kind["Service"]["spec"] == {
        "selector": {"app": "podinfo"},
        "ports": [{"name": "http", "port": 9898, "targetPort": 9898}],
    }
    hook = next(d.data for d in conversion.documents if d.data["metadata"].get("name") == "podinfo-load-test")
    web = hook["spec"]["metrics"][0]["provider"]["web"]
    assert web["method"] == "POST" and web["url"] == "http://flagger-loadtester.test/"
    assert web["jsonBody"] == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"},
    }
    assert web["timeoutSeconds"] == 5
    notes = {n.path: n for n in conversion.notes}
    assert notes["spec.autoscalerRef"].kind == "not-converted"
    assert notes["spec.service.trafficPolicy"].kind == "not-converted"
    assert notes["spec.analysis.metrics[1].interval"].kind == "changed"  # 30s: the builtins share 1m


def run_check(template: Any, args: Mapping[str, str], phases: list[AnalysisPhase]) -> AnalysisPhase:
    """A check's run, through meshshift's own bookkeeping, fed these measurement phases."""
    resolved = resolve_args(template.args, args)
    metrics = instantiate_template(template, resolved)
    run = start_run("check", metrics, args=resolved, now=0.0)
    for index, phase in enumerate(phases):
        run = record_measurement(run, metrics[0].name, Measurement(phase, index * 60.0, index * 60.0))
        if run.phase.completed:
            break
    return run.phase


def test_a_check_holds_until_one_measurement_passes_and_fails_at_the_threshold() -> None:
    conversion = convert(
        canary(
            {
                "stepWeight": 10,
                "maxWeight": 20,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
            }
        )
    )
    args = {a["name"]: a["value"] for a in steps(conversion)[2]["analysis"]["args"]}
    template = BuiltinTemplates("istio").templates["request-success-rate"]
    ok, bad = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED
    assert run_check(template, args, [ok]) == AnalysisPhase.SUCCESSFUL  # passes at once
    assert run_check(template, args, [bad, bad, ok]) == AnalysisPhase.SUCCESSFUL  # held, then passes
    assert run_check(template, args, [bad] * 4 + [ok]) == AnalysisPhase.SUCCESSFUL  # 4 < threshold 5
    assert run_check(template, args, [bad] * 5) == AnalysisPhase.FAILED  # the 5th failure rolls back
    metric = instantiate_template(template, resolve_args(template.args, args))[0]
    assert metric.success_condition == "result[0] >= 99"
    assert MetricCounts().measured == 0


def test_a_metric_template_renders_the_query_flagger_would() -> None:
    page = "nginx-progressive-delivery"
    document = yaml.safe_load(canary_blocks(page)[0].read_text())
    # The tutorial's next step: "Edit the canary analysis and add the latency check".
    document["spec"]["analysis"]["metrics"].append(
        {
            "name": "latency",
            "templateRef": {"name": "latency"},
            "thresholdRange": {"max": 0.5},
            "interval": "1m",
        }
    )
    conversion = convert(document, files=(PODINFO, *metric_templates(page)))
    assert conversion.lint_errors == [], [str(f) for f in conversion.lint_errors]
    out = next(d.data for d in conversion.documents if d.data["metadata"].get("name") == "latency")
    assert out["kind"] == "AnalysisTemplate"
    template = parse_template(out)
    check = next(s["analysis"] for s in steps(conversion) if "analysis" in s and "args" in s["analysis"])
    assert "latency" in [t["templateName"] for t in check["templates"]]
    given = {a["name"]: a["value"] for a in check["args"]}
    assert given["target"] == "podinfo"
    metric = instantiate_template(template, resolve_args(template.args, {**given, "namespace": "test"}))[0]
    assert metric.success_condition == "result[0] <= 0.5"
    assert metric.provider is not None
    assert metric.provider.options["address"] == "http://flagger-prometheus.ingress-nginx:9090"
    query = render_promql(str(metric.provider.options["query"]), {**given, "namespace": "test"})
    flagger = (
        yaml.safe_load(metric_templates(page)[0].read_text())["spec"]["query"]
        .replace("{{ namespace }}", "test")
        .replace("{{ target }}", "podinfo")
    )
    assert query == flagger


def test_ab_testing_becomes_a_header_route_and_iterations_checks() -> None:
    block = canary_blocks("istio-ab-testing")[0]
    conversion = convert_sources([(str(p), p.read_text()) for p in (PODINFO, block)])
    written = steps(conversion)
    assert written[0] == {
        "setHeaderRoute": {
            "name": "flagger-match",
            "match": [
                {"headerName": "user-agent", "headerValue": {"regex": ".*Firefox.*"}},
                {"headerName": "cookie", "headerValue": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}},
            ],
        }
    }
    assert [next(iter(s)) for s in written[1:]] == ["pause", "analysis"] * 10  # iterations: 10
    assert not any("setWeight" in s for s in written)
    failure = next(a for a in written[2]["analysis"]["args"] if a["name"] == "failure-limit")
    assert failure["value"] == "1"  # threshold 2


def test_unconvertible_match_conditions_are_reported_with_their_path() -> None:
    analysis = {
        "iterations": 3,
        "match": [
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"a": {"exact": "1"}, "b": {"exact": "2"}}},
            {"uri": {"prefix": "/api"}},
            {"headers": {"x-user": {"suffix": "@example.com"}}},
        ],
    }
    conversion = convert(canary(analysis))
    notes = {n.path: n for n in conversion.notes}
    assert notes["spec.analysis.match[1].headers"].kind == "not-converted"
    assert "all of which must match" in notes["spec.analysis.match[1].headers"].reason
    assert notes["spec.analysis.match[2]"].kind == "not-converted"
    assert notes["spec.analysis.match[3].headers.x-user.suffix"].kind == "changed"
    route = steps(conversion)[0]["setHeaderRoute"]
    assert route["match"] == [
        {"headerName": "x-canary", "headerValue": {"exact": "insider"}},
        {"headerName": "x-user", "headerValue": {"regex": r".*\@example\.com"}},
    ]
    assert conversion.lint_errors == []


def test_confirm_webhooks_become_pauses_and_events_the_webhook_url() -> None:
    hooks = [
        {"name": "gate", "type": "confirm-rollout", "url": "http://flagger-loadtester.test/gate/check"},
        {
            "name": "more",
            "type": "confirm-traffic-increase",
            "url": "http://flagger-loadtester.test/gate/check",
        },
        {"name": "promote", "type": "confirm-promotion", "url": "http://flagger-loadtester.test/gate/check"},
        {"name": "events", "type": "event", "url": "http://events.example.com/flagger"},
        {"name": "after", "type": "post-rollout", "url": "http://flagger-loadtester.test/"},
    ]
    conversion = convert(canary({"stepWeight": 25, "maxWeight": 50, "webhooks": hooks}))
    kinds = [next(iter(s)) if s != {"pause": {}} else "wait" for s in steps(conversion)]
    assert kinds == ["wait", "wait", "setWeight", "pause", "wait", "setWeight", "pause", "wait"]
    annotations = deployment(conversion)["metadata"]["annotations"]
    assert annotations["meshshift.io/webhook-url"] == "http://events.example.com/flagger"
    notes = {n.path: n for n in conversion.notes}
    assert notes["spec.analysis.webhooks[4]"].kind == "not-converted"
    assert weights_until_promotion(deployment(conversion)) == [25, 50]


def test_blue_green_becomes_the_blue_green_annotation() -> None:
    block = canary_blocks("kubernetes-blue-green")[0]
    conversion = convert_sources([(str(p), p.read_text()) for p in (PODINFO, block)])
    annotations = deployment(conversion)["metadata"]["annotations"]
    assert "meshshift.io/steps" not in annotations
    block_yaml = yaml.safe_load(annotations["meshshift.io/blue-green"])
    assert block_yaml["autoPromotionEnabled"] is True
    analysis = block_yaml["prePromotionAnalysis"]
    assert [t["templateName"] for t in analysis["templates"]] == [
        "podinfo-smoke-test",
        "request-success-rate",
        "request-duration",
        "podinfo-load-test",
    ]
    args = {a["name"]: a["value"] for a in analysis["args"]}
    assert args["count"] == "10" and args["failure-limit"] == "1"  # iterations 10, threshold 2
    assert next(n for n in conversion.notes if n.path == "spec.provider").kind == "assumed"


def test_no_canary_field_is_dropped_silently() -> None:
    # Every field of every whole Canary of Flagger's docs is carried over or has a note.
    carried = (
        "apiVersion",
        "kind",
        "metadata",
        "spec.provider",
        "spec.targetRef",
        "spec.progressDeadlineSeconds",
        "spec.ingressRef",
        "spec.service.port",
        "spec.service.targetPort",
        "spec.service.portName",
        "spec.service.name",
        "spec.service.appProtocol",
        "spec.service.gatewayRefs",
        "spec.analysis.interval",
        "spec.analysis.threshold",
        "spec.analysis.maxWeight",
        "spec.analysis.stepWeight",
        "spec.analysis.stepWeights",
        "spec.analysis.iterations",
        "spec.analysis.match",
        "spec.analysis.metrics",
        "spec.analysis.webhooks",
        "spec.analysis.mirror",
        "spec.analysis.mirrorWeight",
    )
    istio_route = (
        "spec.service.hosts",
        "spec.service.gateways",
        "spec.service.retries",
        "spec.service.match",
        "spec.service.rewrite",
        "spec.service.timeout",
        "spec.service.headers",
        "spec.service.corsPolicy",
    )
    paths = sorted(FLAGGER.rglob("*.yaml"))
    checked = 0
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if not isinstance(document, dict) or document.get("kind") != "Canary":
                continue
            if not document.get("spec", {}).get("targetRef"):
                continue  # a fragment of a page
            conversion = convert(document)
            noted = [n.path for n in conversion.notes]
            if document["spec"]["targetRef"].get("kind", "Deployment") != "Deployment":
                assert "spec.targetRef.kind" in noted  # a Knative Service: nothing written, and said
                continue
            router = deployment(conversion)["metadata"]["annotations"]["meshshift.io/router"]
            kept = carried + (istio_route if router == "istio" else ())
            for leaf, value in _leaves(document):
                if value in (None, False, 0, "", [], {}):
                    continue  # a default: nothing to carry
                if any(leaf == k or leaf.startswith((k + ".", k + "[")) for k in kept):
                    continue
                assert any(leaf == n or leaf.startswith((n + ".", n + "[")) for n in noted), (path.name, leaf)
            checked += 1
    assert checked >= 25


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [
            leaf for key, item in value.items() for leaf in _leaves(item, f"{path}.{key}" if path else key)
        ]
    return [(path, value)]


def test_the_annotated_deployment_keeps_its_own_fields() -> None:
    before = yaml.safe_load(PODINFO.read_text())
    conversion = convert(canary({"stepWeight": 50}))
    after = copy.deepcopy(deployment(conversion))
    annotations = after["metadata"].pop("annotations")
    before["metadata"].pop("annotations", None)
    assert after == before
    assert annotations["meshshift.io/enabled"] == "true"


def test_lint_knows_a_check_with_consecutive_success_limit_ends_by_itself() -> None:
    from meshshift.spec.documents import check_sources

    def findings(limit: int) -> list[str]:
        template = {
            "apiVersion": "meshshift.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "gate"},
            "spec": {
                "metrics": [
                    {
                        "name": "m",
                        "interval": "1m",
                        "consecutiveSuccessLimit": limit,
                        "provider": {"prometheus": {"query": "vector(1)"}},
                    }
                ]
            },
        }
        rollout = [{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "gate"}]}}]
        text = yaml.safe_dump_all([template, rollout])
        return [str(f) for f in check_sources([("f.yaml", text)])]

    assert findings(1) == []
    (warning,) = findings(0)
    assert "has an interval and no count" in warning
