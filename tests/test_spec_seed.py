"""Every YAML of the tutorial (tests/data/seed, copied unchanged) is accepted, and so is
the tutorial's exercise written for meshshift (tests/data/exercise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.spec import (
    TemplateCatalog,
    check_sources,
    instantiate_template,
    parse_argo_rollout,
    parse_deployment,
    parse_metrics,
    parse_standalone,
    parse_strategy,
    parse_template,
    resolve_args,
    validate_rollout,
)
from meshshift.spec.model import (
    AnalysisTemplate,
    CanaryScale,
    EnvoyRouterConfig,
    FailurePolicy,
    HeaderMatch,
    Pause,
    SetCanaryScale,
    SetHeaderRoute,
    SetWeight,
    StepAnalysis,
    StringMatch,
)

DATA = Path(__file__).parent / "data"
SEED = DATA / "seed"
EXERCISE = DATA / "exercise"


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def seed_templates() -> dict[str, AnalysisTemplate]:
    names = (
        "02-template-success-rate.yaml",
        "04-template-compare-baseline.yaml",
        "05-template-business-metrics.yaml",
    )
    templates = [parse_template(documents(SEED / name)[0]) for name in names]
    return {template.name: template for template in templates}


def test_the_seed_has_eleven_yaml_blocks_and_a_dashboard() -> None:
    assert len(sorted(SEED.glob("*.yaml"))) == 11
    assert len(sorted(SEED.glob("*.json"))) == 1


def test_all_seed_yaml_lints_together_with_warnings_only() -> None:
    sources = [(path.name, path.read_text()) for path in sorted(SEED.glob("*.yaml"))]
    findings = check_sources(sources)
    assert [f for f in findings if f.severity == "error"] == []
    by_file = sorted({(f.file, f.path) for f in findings})
    assert by_file == sorted(
        [
            *(
                (
                    "03-rollout-with-analysis.yaml",
                    f"spec.strategy.canary.steps[{i}].analysis.templates[0].templateName",
                )
                for i in (2, 5, 8, 11)
            ),
            *(("12-exercise-starter.yaml", f"spec.metrics[{i}]") for i in range(3)),
            # Fields of a pasted Rollout meshshift does not act on are named, never ignored.
            *(
                ("09-rollout-istio.yaml", f"spec.strategy.canary.{field}")
                for field in ("canaryService", "stableService", "trafficRouting.istio")
            ),
            # canaryMetadata and stableMetadata land on the pods, so they draw no warning.
            ("10-strategy-header-routing.yaml", "strategy.canary.trafficRouting.istio"),
        ]
    )
    routing = next(f for f in findings if f.path.endswith("trafficRouting.istio"))
    assert "not acted on by meshshift" in routing.reason and "meshshift.io/router: istio" in routing.reason
    unbounded = next(f for f in findings if f.file.startswith("03"))
    assert "runs until the rollout is promoted" in unbounded.reason
    assert "set count" in unbounded.reason
    no_provider = next(f for f in findings if f.file.startswith("12"))
    assert "measures as Error until a provider is set" in no_provider.reason


def test_basic_rollout_steps() -> None:
    _service, rollout = documents(SEED / "01-rollout-basic.yaml")
    spec = parse_argo_rollout(rollout)
    assert spec.steps == (
        SetWeight(20),
        Pause(120),
        SetWeight(40),
        Pause(120),
        SetWeight(60),
        Pause(120),
        SetWeight(80),
        Pause(120),
    )
    assert spec.analysis is None


def test_success_rate_template() -> None:
    template = parse_template(documents(SEED / "02-template-success-rate.yaml")[0])
    assert template.name == "success-rate"
    assert [arg.name for arg in template.args] == ["service-name"]
    assert [metric.name for metric in template.metrics] == ["success-rate", "latency"]
    first = template.metrics[0]
    assert (first.interval, first.count, first.failure_limit) == (60.0, None, 3)
    assert first.success_condition == "result[0] >= 0.95"
    assert first.consecutive_error_limit == 4  # Argo's default
    assert first.provider is not None and first.provider.kind == "prometheus"
    assert first.provider.options["address"] == "http://prometheus:9090"
    assert len(template.raw_metrics) == 2


def test_compare_baseline_and_business_templates() -> None:
    templates = seed_templates()
    baseline = templates["compare-baseline"]
    assert [arg.name for arg in baseline.args] == ["service-name", "baseline-hash", "canary-hash"]
    assert [m.success_condition for m in baseline.metrics] == ["result[0] <= 1.25", "result[0] <= 1.2"]
    business = templates["business-metrics"]
    assert [(m.name, m.interval, m.failure_limit) for m in business.metrics] == [
        ("revenue-per-request", 120.0, 2),
        ("conversion-rate", 120.0, 2),
    ]


def test_rollout_with_analysis_references_the_success_rate_template() -> None:
    spec = parse_argo_rollout(documents(SEED / "03-rollout-with-analysis.yaml")[0])
    analyses = [step for step in spec.steps if isinstance(step, StepAnalysis)]
    assert len(analyses) == 4
    assert analyses[0].analysis.templates[0].template_name == "success-rate"
    assert analyses[0].analysis.args[0].name == "service-name"
    assert analyses[0].analysis.args[0].value == "myapp"
    findings = validate_rollout(spec, seed_templates(), paths=None)
    assert not findings.has_errors
    assert {issue.severity for issue in findings} == {"warning"}  # interval without count


def test_provider_snippets() -> None:
    datadog = parse_metrics(documents(SEED / "06-metrics-datadog.yaml")[0]["metrics"])
    newrelic = parse_metrics(documents(SEED / "07-metrics-newrelic.yaml")[0]["metrics"])
    web = parse_metrics(documents(SEED / "08-metrics-web.yaml")[0]["metrics"])
    assert datadog[0].provider is not None and datadog[0].provider.kind == "datadog"
    assert datadog[0].provider.options["apiVersion"] == "v1"
    assert newrelic[0].provider is not None and newrelic[0].provider.kind == "newRelic"
    assert newrelic[0].provider.options["profile"] == "my-newrelic-account"
    assert web[0].provider is not None and web[0].provider.kind == "web"
    assert web[0].provider.options["jsonPath"] == "{$.health.status}"
    assert web[0].success_condition == 'result == "healthy"'


def test_istio_rollout_ignores_traffic_routing_and_ends_with_manual_approval() -> None:
    rollout, *others = documents(SEED / "09-rollout-istio.yaml")
    assert [doc["kind"] for doc in others] == ["Service", "Service", "VirtualService"]
    spec = parse_argo_rollout(rollout)
    assert [step.weight for step in spec.steps if isinstance(step, SetWeight)] == [10, 20, 30, 50]
    assert spec.steps[-1] == Pause(None)


def test_header_routing_strategy_fragment() -> None:
    spec = parse_strategy(documents(SEED / "10-strategy-header-routing.yaml")[0])
    assert spec.steps == (
        SetCanaryScale(CanaryScale(weight=25)),
        SetHeaderRoute("canary-by-header", (HeaderMatch("X-Canary", StringMatch("exact", "true")),)),
        Pause(None),
    )


def test_exercise_starter_skeleton() -> None:
    rollout, template_doc = documents(SEED / "12-exercise-starter.yaml")
    template = parse_template(template_doc)  # warnings do not raise
    assert [metric.provider for metric in template.metrics] == [None, None, None]
    spec = parse_argo_rollout(rollout)
    assert spec.steps[:2] == (SetWeight(10), Pause(120))
    assert not validate_rollout(spec, {template.name: template}).has_errors


def test_seed_templates_instantiate_with_args() -> None:
    templates = seed_templates()
    metrics = instantiate_template(templates["success-rate"], {"service-name": "myapp"})
    assert [metric.name for metric in metrics] == ["success-rate", "latency"]
    assert metrics[0].provider is not None
    # Provider options keep their placeholders: the provider escapes values itself.
    assert "{{args.service-name}}" in metrics[0].provider.options["query"]
    baseline = templates["compare-baseline"]
    args = resolve_args(
        baseline.args, {"service-name": "myapp", "canary-hash": "abc", "baseline-hash": "def"}
    )
    assert args == {"service-name": "myapp", "baseline-hash": "def", "canary-hash": "abc"}
    assert len(instantiate_template(baseline, args)) == 2


# --- the exercise, written for meshshift -------------------------------------------


def exercise_catalog() -> TemplateCatalog:
    template = parse_template(documents(EXERCISE / "ecommerce-health.yaml")[0])
    return TemplateCatalog({template.name: template})


def test_exercise_as_deployment_annotations() -> None:
    deployment = parse_deployment(documents(EXERCISE / "deployment.yaml")[0], catalog=exercise_catalog())
    assert deployment is not None
    target = deployment.target
    assert (target.deployment, target.namespace, target.routers) == ("ecommerce-app", "shop", ("istio",))
    assert (target.service, target.istio_virtual_service, target.istio_routes) == (
        "ecommerce-app",
        "ecommerce-app",
        ("primary",),
    )
    rollout = deployment.rollout
    assert [step.weight for step in rollout.steps if isinstance(step, SetWeight)] == [10, 25, 50, 100]
    assert sum(isinstance(step, StepAnalysis) for step in rollout.steps) == 3
    assert rollout.steps[-2:] == (Pause(None), SetWeight(100))  # manual approval before 100%
    assert rollout.progress_deadline == 900
    assert rollout.on_failure is FailurePolicy.ROLLBACK


def test_exercise_as_standalone_rollout_has_the_same_steps() -> None:
    standalone = parse_standalone(documents(EXERCISE / "standalone.yaml")[0])
    deployment = parse_deployment(documents(EXERCISE / "deployment.yaml")[0])
    assert deployment is not None
    assert standalone.rollout.steps == deployment.rollout.steps
    assert standalone.router == EnvoyRouterConfig(listen="127.0.0.1:10000", admin="127.0.0.1:9901")
    assert standalone.canary.endpoints == ("127.0.0.1:8082", "localhost:8083")
    assert [template.name for template in standalone.templates] == ["ecommerce-health"]
    assert standalone.rollout.analysis is not None
    assert standalone.rollout.analysis.starting_step == 1
    assert standalone.extra == {
        "prometheus": {"address": "http://127.0.0.1:9090"},
        "metrics": {"listen": "127.0.0.1:8090"},
    }


@pytest.mark.parametrize("name", ["deployment.yaml", "standalone.yaml", "ecommerce-health.yaml"])
def test_exercise_files_lint_clean(name: str) -> None:
    sources = [(path.name, path.read_text()) for path in sorted(EXERCISE.glob("*.yaml"))]
    assert [f for f in check_sources(sources) if f.file == name] == []
