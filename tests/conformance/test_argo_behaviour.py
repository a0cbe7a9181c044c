"""Argo Rollouts behaviours the conformance corpus found missing, each shown on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from textwrap import dedent

from meshshift.analysis.providers import InlineTemplates, default_providers
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.engine.machine import CommandKind
from meshshift.engine.state import RolloutPhase
from meshshift.runtime.analysis import REDACTED, AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.argo import parse_argo_rollout, read_argo_rollout
from meshshift.spec.documents import check_sources
from meshshift.spec.errors import Findings
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    AnalysisTemplate,
    Arg,
    CanaryScale,
    RolloutSpec,
    TemplateRef,
)
from meshshift.spec.rollout import TemplateCatalog
from meshshift.spec.templates import read_template
from meshshift.spec.yamldoc import load_all
from tests.engine_world import World


def template_of(text: str) -> AnalysisTemplate:
    documents, error = load_all(dedent(text))
    assert error is None
    findings = Findings()
    template = read_template(documents[0].data, findings)
    assert template is not None and not findings.has_errors, findings.issues
    return template


def create_run(
    templates: list[AnalysisTemplate], ref: AnalysisRef, secrets: Mapping[str, Mapping[str, str]]
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
            builtin_args(canary="c", stable="s", namespace="ns"), "ns", read_secret
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
