"""Argo Rollouts behaviours the conformance corpus found missing, each shown on its own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

from meshshift.analysis.providers import InlineTemplates, default_providers
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.engine.machine import CommandKind
from meshshift.engine.state import RolloutPhase
from meshshift.runtime.analysis import REDACTED, AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.annotations import parse_deployment
from meshshift.spec.argo import parse_argo_rollout, read_argo_rollout
from meshshift.spec.documents import check_sources
from meshshift.spec.errors import Findings
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    AnalysisTemplate,
    Arg,
    ArgValueFrom,
    CanaryScale,
    RolloutSpec,
    SetWeight,
    TemplateRef,
)
from meshshift.spec.rollout import TemplateCatalog
from meshshift.spec.standalone import parse_standalone
from meshshift.spec.steps import read_field_path
from meshshift.spec.templates import read_template
from meshshift.spec.yamldoc import load_all
from meshshift.standalone.daemon import standalone_arg_context
from tests.engine_world import World


def template_of(text: str) -> AnalysisTemplate:
    documents, error = load_all(dedent(text))
    assert error is None
    findings = Findings()
    template = read_template(documents[0].data, findings)
    assert template is not None and not findings.has_errors, findings.issues
    return template


def create_run(
    templates: list[AnalysisTemplate],
    ref: AnalysisRef,
    secrets: Mapping[str, Mapping[str, str]],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[AnalysisRun, AnalysisExecutor]:
    created: list[AnalysisRun] = []

    async def read_secret(name: str, namespace: str | None) -> Mapping[str, str] | None:
        return secrets.get(name)

    executor = AnalysisExecutor(
        templates=InlineTemplates(*templates),
        providers=default_providers(environ={}),
        clock=lambda: 0.0,
        on_change=created.append,
        arg_context=lambda _: ArgContext(
            builtin_args(canary="c", stable="s", namespace="ns"), "ns", read_secret, metadata or {}
        ),
    )

    async def go() -> None:
        await executor.start(StartAnalysis("run", AnalysisKind.STEP, ref, "v2", "v1"))
        await executor.close()

    asyncio.run(go())
    return created[-1], executor


ARGS_EXAMPLE = """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: args-example}
    spec:
      args:
      - name: api-token
        valueFrom:
          secretKeyRef: {name: token-secret, key: apiToken}
      metrics:
      - name: webmetric
        provider:
          web:
            url: http://example/measure
            headers: [{key: Authorization, value: "Bearer {{ args.api-token }}"}]
"""


def test_a_template_s_own_secret_arg_is_read_from_the_secret() -> None:
    # docs/features/analysis.md: "args-example" reads api-token from a Secret by itself.
    template = template_of(ARGS_EXAMPLE)
    ref = AnalysisRef((TemplateRef("args-example"),))
    run, executor = create_run([template], ref, {"token-secret": {"apiToken": "s3cr3t"}})
    assert run.phase != AnalysisPhase.ERROR, run.message
    assert run.args["api-token"] == REDACTED  # never persisted
    assert executor.contexts["run"].args["api-token"] == "s3cr3t"  # given to the provider


def test_a_template_s_secret_arg_without_its_secret_errs_naming_it() -> None:
    template = template_of(ARGS_EXAMPLE)
    run, _ = create_run([template], AnalysisRef((TemplateRef("args-example"),)), {})
    assert run.phase == AnalysisPhase.ERROR
    assert "token-secret" in run.message


def test_the_rollout_s_arg_wins_over_the_template_s_secret() -> None:
    template = template_of(ARGS_EXAMPLE)
    ref = AnalysisRef((TemplateRef("args-example"),), args=(Arg("api-token", value="given"),))
    run, _ = create_run([template], ref, {})
    assert run.phase != AnalysisPhase.ERROR, run.message
    assert run.args["api-token"] == "given"


def test_a_cluster_template_and_a_namespaced_one_may_share_a_name() -> None:
    # Argo keeps the scopes apart: clusterScope: true picks the ClusterAnalysisTemplate.
    text = dedent(
        """\
        apiVersion: argoproj.io/v1alpha1
        kind: AnalysisTemplate
        metadata: {name: success-rate}
        spec:
          args: [{name: service-name}]
          metrics:
          - name: m
            provider: {prometheus: {address: "http://p:9090", query: "up{s='{{args.service-name}}'}"}}
        ---
        apiVersion: argoproj.io/v1alpha1
        kind: ClusterAnalysisTemplate
        metadata: {name: success-rate}
        spec:
          metrics: [{name: m, provider: {prometheus: {address: "http://p:9090", query: "up"}}}]
        ---
        apiVersion: argoproj.io/v1alpha1
        kind: Rollout
        metadata: {name: guestbook}
        spec:
          strategy:
            canary:
              steps:
              - analysis: {templates: [{templateName: success-rate, clusterScope: true}]}
              - analysis:
                  templates: [{templateName: success-rate}]
                  args: [{name: service-name, value: guestbook}]
        """
    )
    assert [f for f in check_sources([("t.yaml", text)]) if f.severity == "error"] == []
    # Without the ClusterAnalysisTemplate, clusterScope: true names a template that is not there.
    namespaced_only = text.split("---")[0] + "---" + text.split("---")[2]
    errors = [f.reason for f in check_sources([("t.yaml", namespaced_only)]) if f.severity == "error"]
    assert errors[0] == '"success-rate" is an AnalysisTemplate, not a ClusterAnalysisTemplate'


# --- step kinds sharing a step ----------------------------------------------------------

SHARED_STEP = """\
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: rollout-apisix-canary}
    spec:
      strategy:
        canary:
          analysis:
            templates: [{templateName: request-success-rate}]
            startingStep: 2
          steps:
          - setCanaryScale: {weight: 25}
            setHeaderRoute:
              name: set-header
              match: [{headerName: trace, headerValue: {exact: debug}}]
            pause: {}
          - setWeight: 20
          - setMirrorRoute: {name: mirror, percentage: 10}
            analysis: {templates: [{templateName: request-duration}]}
"""


def rollout_of(text: str) -> RolloutSpec:
    documents, error = load_all(dedent(text))
    assert error is None
    return parse_argo_rollout(documents[0].data, catalog=TemplateCatalog())


def test_a_step_may_join_scale_and_routes_to_a_weight_pause_or_analysis() -> None:
    # test/e2e/apisix/rollout-apisix-canary-set-header.yaml: scale, header route and pause in one
    # step, as Argo's validation allows (only setWeight, pause, experiment, analysis exclude each other).
    spec = rollout_of(SHARED_STEP)
    assert [type(step).__name__ for step in spec.steps] == [
        "SetCanaryScale",
        "SetHeaderRoute",
        "Pause",
        "SetWeight",
        "SetMirrorRoute",
        "StepAnalysis",
    ]
    assert spec.analysis is not None and spec.analysis.starting_step == 4  # Argo's step 2
    world = World(spec)
    world.tick()
    world.revision = "v2"
    world.settle()
    assert world.phase() == RolloutPhase.PAUSED  # scaled and routed, then paused
    assert world.canary_scale == CanaryScale(weight=25)
    assert "set-header" in world.header_routes
    assert world.started == []  # the background analysis starts at the third step
    world.command(CommandKind.PROMOTE)
    world.settle()
    assert world.phase() == RolloutPhase.HEALTHY and world.promotions == ["v2"]
    assert [start.analysis.templates[0].template_name for start in world.started] == [
        "request-success-rate",
        "request-duration",
    ]


def test_two_exclusive_kinds_in_one_step_are_refused_as_argo_refuses_them() -> None:
    bad = SHARED_STEP.replace("setWeight: 20", "setWeight: 20\n            pause: {duration: 10}")
    documents, _ = load_all(dedent(bad))
    findings = Findings()
    read_argo_rollout(documents[0].data, findings, TemplateCatalog())
    assert [(issue.path, issue.reason) for issue in findings.issues if issue.severity == "error"] == [
        (
            "spec.strategy.canary.steps[1]",
            "a step has at most one of setWeight, pause, experiment, analysis, found setWeight, pause; "
            "write one step for each",
        )
    ]


# --- Argo's metric validation (utils/analysis/factory_test.go), as data ---------------------

VALIDATION_CASES = yaml.safe_load((Path(__file__).parent / "validation_cases.yaml").read_text())


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=[case["test"] for case in VALIDATION_CASES])
def test_metric_validation_decides_as_argo_does(case: dict[str, Any]) -> None:
    document = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"metrics": case["metrics"]},
    }
    findings = Findings()
    read_template(document, findings)
    errors = [str(issue) for issue in findings.issues if issue.severity == "error"]
    if case["accepted"]:
        assert errors == []
    else:
        assert any(case["error"] in error for error in errors), errors


def test_count_zero_means_unset() -> None:
    # Argo's TestValidateMetrics accepts count 0 where count 1 fails; 0 is "no count".
    template = template_of(
        """\
        apiVersion: argoproj.io/v1alpha1
        kind: AnalysisTemplate
        metadata: {name: t}
        spec:
          metrics:
          - {name: once, count: 0, provider: {prometheus: {query: up}}}
          - {name: forever, count: 0, interval: 1m, provider: {prometheus: {query: up}}}
        """
    )
    assert [metric.count for metric in template.metrics] == [None, None]


# --- dryRun and measurementRetention: metricName is a regex --------------------------------

RATES = """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: rates}
    spec:
      metrics:
      - {name: total-5xx-errors, provider: {prometheus: {query: up}}}
      - {name: total-4xx-errors, provider: {prometheus: {query: up}}}
      - {name: latency, provider: {prometheus: {query: up}}}
      dryRun: [{metricName: total-.*}]
      measurementRetention: [{metricName: .*, limit: 20}, {metricName: latency, limit: 0}]
"""


def test_dry_run_and_retention_names_are_regexes_as_in_argo() -> None:
    # docs/features/analysis.md: `metricName: .*` and `total-.*` select metrics by regex;
    # `limit: 0` is the default (10).
    template = template_of(RATES)
    run, _ = create_run([template], AnalysisRef((TemplateRef("rates"),)), {})
    assert run.phase != AnalysisPhase.ERROR, run.message
    by_name = {result.name: result for result in run.results}
    assert {name for name, result in by_name.items() if result.dry_run} == {
        "total-5xx-errors",
        "total-4xx-errors",
    }
    assert {name: result.retention for name, result in by_name.items()} == {
        "total-5xx-errors": 20,
        "total-4xx-errors": 20,
        "latency": 10,
    }


def test_a_metric_name_that_is_not_a_regex_is_a_lint_error_with_a_hint() -> None:
    findings = check_sources([("t.yaml", dedent(RATES).replace("total-.*", "'*'"))])
    errors = [(f.path, f.reason) for f in findings if f.severity == "error"]
    assert len(errors) == 1
    path, reason = errors[0]
    assert path == "spec.dryRun[0].metricName"
    assert "is not a valid regular expression" in reason and 'for every metric write ".*"' in reason


def test_a_metric_name_matching_no_metric_is_a_lint_error() -> None:
    findings = check_sources([("t.yaml", dedent(RATES).replace("total-.*", "totl-.*"))])
    assert [f.reason for f in findings if f.severity == "error"] == [
        '"totl-.*" matches no metric; metricName is a regular expression searched in the metric names '
        '(".*" for all)'
    ]


# --- template composition (spec.templates) -------------------------------------------------

COMPOSED = """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: error-rate}
    spec:
      args: [{name: service-name}]
      metrics:
      - name: error-rate
        successCondition: result[0] < 0.05
        provider: {prometheus: {address: "http://p:9090", query: "errors{s='{{args.service-name}}'}"}}
    ---
    apiVersion: argoproj.io/v1alpha1
    kind: ClusterAnalysisTemplate
    metadata: {name: latency}
    spec:
      metrics: [{name: latency, provider: {prometheus: {address: "http://p:9090", query: up}}}]
    ---
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: rates}
    spec:
      templates:
      - templateName: error-rate
      - templateName: latency
        clusterScope: true
      dryRun: [{metricName: latency}]
    ---
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: guestbook}
    spec:
      strategy:
        canary:
          steps:
          - analysis:
              templates: [{templateName: rates}]
              args: [{name: service-name, value: guestbook}]
"""


def composed_templates(text: str) -> list[AnalysisTemplate]:
    documents, error = load_all(dedent(text))
    assert error is None
    found = []
    for document in documents:
        if document.data.get("kind") in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
            template = read_template(document.data, Findings())
            assert template is not None
            found.append(template)
    return found


def test_a_template_includes_other_templates_metrics_and_args() -> None:
    # docs/features/analysis.md, "Analysis Template Referencing Other Analysis Templates".
    assert [f for f in check_sources([("t.yaml", dedent(COMPOSED))]) if f.severity == "error"] == []
    templates = composed_templates(COMPOSED)
    ref = AnalysisRef((TemplateRef("rates"),), args=(Arg("service-name", value="guestbook"),))
    run, _ = create_run(templates, ref, {})
    assert run.phase != AnalysisPhase.ERROR, run.message
    assert [metric.name for metric in run.metrics] == ["error-rate", "latency"]
    assert run.metrics[0].provider is not None and run.args == {"service-name": "guestbook"}
    assert [result.name for result in run.results if result.dry_run] == ["latency"]


def test_a_missing_arg_of_an_included_template_is_caught_by_lint() -> None:
    text = dedent(COMPOSED).replace("          args: [{name: service-name, value: guestbook}]\n", "")
    errors = [f.reason for f in check_sources([("t.yaml", text)]) if f.severity == "error"]
    assert errors == [
        'missing arg "service-name": template "rates" declares it without a default; '
        "add {name: service-name, value: ...} to args"
    ]


def test_templates_that_include_each_other_are_a_lint_error() -> None:
    text = (
        dedent(COMPOSED)
        .replace(
            'metrics: [{name: latency, provider: {prometheus: {address: "http://p:9090", query: up}}}]',
            "templates: [{templateName: rates}]",
        )
        .replace("kind: ClusterAnalysisTemplate", "kind: AnalysisTemplate")
        .replace("clusterScope: true", "clusterScope: false")
    )
    findings = check_sources([("t.yaml", text)])
    cycles = {(f.document, f.path, f.reason) for f in findings if "cycle" in f.reason}
    assert cycles == {
        (
            1,
            "spec.templates[0].templateName",
            "templates include each other in a cycle: latency -> rates -> latency",
        ),
        (
            2,
            "spec.templates[1].templateName",
            "templates include each other in a cycle: rates -> latency -> rates",
        ),
    }


def test_a_metric_in_two_included_templates_is_a_lint_error() -> None:
    text = (
        dedent(COMPOSED)
        .replace("metrics: [{name: latency,", "metrics: [{name: error-rate,")
        .replace("dryRun: [{metricName: latency}]", "dryRun: [{metricName: error-rate}]")
    )
    errors = [f.reason for f in check_sources([("t.yaml", text)]) if f.severity == "error"]
    assert errors[0] == (
        'metric "error-rate" is in both "error-rate" and "latency"; metric names must be unique across '
        "included templates"
    )


# --- valueFrom.fieldRef ------------------------------------------------------------------------

FIELD_REF = """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: args-example}
    spec:
      args: [{name: env}, {name: region}, {name: app}, {name: team}]
      metrics:
      - name: m
        provider:
          prometheus:
            address: "http://p:9090"
            query: "up{env='{{args.env}}',region='{{args.region}}',app='{{args.app}}',team='{{args.team}}'}"
"""


def field_ref_args(paths: dict[str, str]) -> tuple[Arg, ...]:
    return tuple(Arg(name, value_from=ArgValueFrom(field_path=path)) for name, path in paths.items())


def test_field_ref_args_read_the_rollout_s_metadata() -> None:
    # docs/features/analysis.md: args from metadata.labels['env'], metadata.name, ...
    template = template_of(FIELD_REF)
    args = field_ref_args(
        {
            "env": "metadata.labels['env']",
            "region": "metadata.annotations['region']",
            "app": "metadata.name",
            "team": "metadata.labels['team']",  # absent: "" as in the downward API
        }
    )
    metadata = {"name": "guestbook", "labels": {"env": "dev"}, "annotations": {"region": "us-west-2"}}
    run, _ = create_run(
        [template], AnalysisRef((TemplateRef("args-example"),), args=args), {}, metadata=metadata
    )
    assert run.phase != AnalysisPhase.ERROR, run.message
    assert run.args == {"env": "dev", "region": "us-west-2", "app": "guestbook", "team": ""}


def test_an_invalid_field_ref_path_is_a_lint_error() -> None:
    # pkg/apis/rollouts/validation: metadata.label['app'] (no s) is refused.
    rollout = dedent(
        """\
        apiVersion: argoproj.io/v1alpha1
        kind: Rollout
        metadata: {name: guestbook}
        spec:
          strategy:
            canary:
              steps:
              - analysis:
                  templates: [{templateName: args-example}]
                  args:
                  - name: env
                    valueFrom: {fieldRef: {fieldPath: "metadata.label['app']"}}
        """
    )
    errors = [(f.path, f.reason) for f in check_sources([("r.yaml", rollout)]) if f.severity == "error"]
    assert errors[0][0] == "spec.strategy.canary.steps[0].analysis.args[0].valueFrom.fieldRef.fieldPath"
    assert "metadata.labels['KEY']" in errors[0][1]


def test_a_standalone_rollout_file_s_metadata_feeds_field_ref_args() -> None:
    rollout = parse_standalone(
        {
            "apiVersion": "meshshift.io/v1alpha1",
            "kind": "StandaloneRollout",
            "metadata": {"name": "myapp", "labels": {"env": "prod"}, "annotations": {"team": "shop"}},
            "spec": {
                "router": {"envoy": {"listen": "127.0.0.1:10000"}},
                "stable": {"endpoints": ["127.0.0.1:8081"]},
                "canary": {"endpoints": ["127.0.0.1:8082"]},
                "steps": [{"setWeight": 50}],
            },
        }
    )
    context = standalone_arg_context(rollout)(
        StartAnalysis("r", AnalysisKind.STEP, AnalysisRef(()), "v2", "v1")
    )
    assert read_field_path("metadata.labels['env']", context.metadata) == "prod"
    assert read_field_path("metadata.annotations['team']", context.metadata) == "shop"
    assert read_field_path("metadata.name", context.metadata) == "myapp"


def test_a_dry_run_rule_that_selects_no_metric_fails_the_run_as_in_argo() -> None:
    # Lint cannot see into a builtin template; the run then errs as Argo's does.
    ref = AnalysisRef((TemplateRef("rates"),), dry_run=("*",))
    run, _ = create_run([template_of(RATES)], ref, {})
    assert run.phase == AnalysisPhase.ERROR
    assert 'dryRun metricName "*" matches no metric' in run.message


# --- progressDeadlineAbort -----------------------------------------------------------------

DEADLINE = """\
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: guestbook}
    spec:
      progressDeadlineSeconds: 60
      strategy:
        canary:
          steps: [{setWeight: 20}, {pause: {duration: 10}}, {setWeight: 50}]
"""


def stuck_canary(spec: RolloutSpec) -> World:
    """v2 rolled out over a ready v1; v2's pods never become ready for 10 minutes."""
    world = World(spec)
    world.tick()
    world.revision, world.canary_ready = "v2", False
    world.tick()
    world.tick(61)
    world.tick(600)
    return world


def test_a_passed_deadline_only_marks_a_pasted_rollout_without_progress_deadline_abort() -> None:
    # Argo: progressDeadlineSeconds marks the rollout; it aborts only with progressDeadlineAbort.
    world = stuck_canary(rollout_of(DEADLINE))
    assert world.rollbacks == []
    assert world.phase() == RolloutPhase.PROGRESSING
    assert world.event_reasons().count("ProgressDeadlineExceeded") == 1
    world.canary_ready = True
    world.settle()
    assert world.promotions == ["v2"]


def test_progress_deadline_abort_true_aborts_the_rollout() -> None:
    text = DEADLINE.replace(
        "progressDeadlineSeconds: 60", "progressDeadlineSeconds: 60\n      progressDeadlineAbort: true"
    )
    world = stuck_canary(rollout_of(text))
    assert len(world.rollbacks) == 1
    assert world.phase() == RolloutPhase.DEGRADED


def test_the_annotation_contract_keeps_aborting_at_the_deadline() -> None:
    # meshshift.io/progress-deadline keeps its documented meaning: the rollout is aborted.
    deployment = parse_deployment(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "annotations": {
                    "meshshift.io/enabled": "true",
                    "meshshift.io/router": "istio",
                    "meshshift.io/progress-deadline": "60s",
                    "meshshift.io/steps": "- setWeight: 20\n- pause: {duration: 10}\n",
                },
            },
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}},
        },
        catalog=TemplateCatalog(),
    )
    assert deployment is not None
    spec = deployment.rollout
    assert spec.progress_deadline_abort is True
    world = stuck_canary(spec)
    assert len(world.rollbacks) == 1


# --- trafficRouting.maxTrafficWeight ----------------------------------------------------------

MAX_WEIGHT = """\
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: guestbook}
    spec:
      strategy:
        canary:
          trafficRouting:
            maxTrafficWeight: 1000
            nginx: {stableIngress: guestbook}
          steps: [{setWeight: 50}, {pause: {duration: 10}}, {setWeight: 500}, {pause: {duration: 10}}]
"""


def test_set_weight_counts_in_units_of_max_traffic_weight() -> None:
    # docs/features/traffic-management/nginx.md: maxTrafficWeight 1000, so 50 is 5%.
    world = World(rollout_of(MAX_WEIGHT))
    world.tick()
    world.revision = "v2"
    world.settle()
    assert world.weights[:3] == [0, 5, 50]
    assert world.promotions == ["v2"]


def test_a_weight_above_max_traffic_weight_or_not_a_whole_percent_is_refused() -> None:
    text = (
        dedent(MAX_WEIGHT)
        .replace("setWeight: 500", "setWeight: 1001")
        .replace("setWeight: 50}", "setWeight: 55}")
    )
    findings = Findings()
    documents, _ = load_all(text)
    read_argo_rollout(documents[0].data, findings, TemplateCatalog())
    assert [(issue.path, issue.reason) for issue in findings.issues if issue.severity == "error"] == [
        (
            "spec.strategy.canary.steps[0].setWeight",
            "setWeight 55 of maxTrafficWeight 1000 is 5.5%; meshshift routes in whole percents: "
            "use a multiple of 10",
        ),
        ("spec.strategy.canary.steps[2].setWeight", "must be between 0 and 1000, got 1001"),
    ]


def test_max_traffic_weight_as_an_annotation() -> None:
    deployment = parse_deployment(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "annotations": {
                    "meshshift.io/enabled": "true",
                    "meshshift.io/router": "istio",
                    "meshshift.io/max-traffic-weight": "1000",
                    "meshshift.io/steps": "- setWeight: 50\n- setWeight: 500\n",
                },
            },
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}},
        },
        catalog=TemplateCatalog(),
    )
    assert deployment is not None
    assert [step.weight for step in deployment.rollout.steps if isinstance(step, SetWeight)] == [5, 50]


# --- a revision arriving while the stable is being set up ------------------------------------


def test_a_revision_arriving_during_initialization_is_rolled_out_through_the_steps() -> None:
    # Argo marks the stable at its first reconcile; the next revision is a canary.
    spec = rollout_of(SHARED_STEP.replace("startingStep: 2", "startingStep: 0"))
    world = World(spec, stable_revision=None, instant_promotion=False)
    world.tick()
    assert world.promotions == ["v1"]
    world.revision = "v2"
    world.tick(5)
    assert world.promotions == ["v1"]  # v1 stays the stable being set up
    world.promote_now()
    world.settle()
    assert world.phase() == RolloutPhase.PAUSED and world.current.canary_revision == "v2"
    world.command(CommandKind.PROMOTE)
    world.settle()
    assert world.promotions == ["v1", "v2"]
    # The background analysis from the first step and the step analysis, both on v2.
    assert [(start.kind, start.revision) for start in world.started] == [
        (AnalysisKind.BACKGROUND, "v2"),
        (AnalysisKind.STEP, "v2"),
    ]


def test_a_stable_that_missed_its_deadline_is_replaced_by_the_next_revision() -> None:
    spec = dataclasses.replace(rollout_of(SHARED_STEP), progress_deadline=60)
    world = World(spec, stable_revision=None, instant_promotion=False)
    world.tick()
    world.tick(61)
    assert world.current.abort_reason == "ProgressDeadlineExceeded"
    world.revision = "v2"
    world.tick()
    assert world.promotions == ["v1", "v2"]  # nothing to protect: v2 becomes the stable
