"""Argo Rollouts behaviours the conformance corpus found missing, each shown on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from textwrap import dedent

from meshshift.analysis.providers import InlineTemplates, default_providers
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.runtime.analysis import REDACTED, AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.documents import check_sources
from meshshift.spec.errors import Findings
from meshshift.spec.model import AnalysisPhase, AnalysisRef, AnalysisTemplate, Arg, TemplateRef
from meshshift.spec.templates import read_template
from meshshift.spec.yamldoc import load_all


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
