"""Builtin templates (request-success-rate, request-duration) for istio, nginx and envoy, resolved
when no user template has their name, measured against the real Prometheus and a real Envoy."""

from __future__ import annotations

from typing import Any

import pytest

from meshshift.analysis.providers import (
    BuiltinTarget,
    BuiltinTemplates,
    ChainedTemplates,
    EnvoyAdminProvider,
    InlineTemplates,
    default_providers,
)
from meshshift.ports import MetricProvider
from meshshift.spec.model import AnalysisPhase
from meshshift.spec.templates import parse_template
from tests.analysis.helpers import Runs
from tests.analysis.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="package")

# One measurement over a 10 s window (the stack has run for longer than that).
QUICK = {"count": "1", "interval": "10s"}


def providers(stack: Stack) -> dict[str, MetricProvider]:
    return default_providers(
        environ={}, prometheus_address=stack.prometheus.url, envoy_admin_url=stack.envoy.admin_url
    )


async def run_builtin(
    stack: Stack, mesh: str, target: BuiltinTarget, name: str, **args: str
) -> tuple[AnalysisPhase, Any, str]:
    runs = Runs(ChainedTemplates(InlineTemplates(), BuiltinTemplates(mesh, target)), providers(stack))
    await runs.start(name, args={**QUICK, **args})
    run = await runs.completed()
    measurement = run.result(name).measurements[0]
    return run.phase, measurement.value, measurement.message


@pytest.mark.parametrize(
    ("mesh", "good", "bad"),
    [
        (
            "istio",
            BuiltinTarget(namespace="shop", target="api"),
            BuiltinTarget(namespace="shop", target="api-bad"),
        ),
        (
            "nginx",
            BuiltinTarget(namespace="shop", ingress="web"),
            BuiltinTarget(namespace="shop", ingress="web-bad"),
        ),
    ],
)
async def test_mesh_builtins_pass_a_good_canary_and_fail_a_bad_one(
    stack: Stack, mesh: str, good: BuiltinTarget, bad: BuiltinTarget
) -> None:
    assert await run_builtin(stack, mesh, good, "request-success-rate") == (
        AnalysisPhase.SUCCESSFUL,
        [100.0],
        "",
    )
    phase, value, message = await run_builtin(stack, mesh, bad, "request-success-rate")
    assert (phase, value) == (AnalysisPhase.FAILED, [pytest.approx(90.0)])  # a percentage, as in Flagger
    assert "result[0] >= 99" in message
    phase, value, _ = await run_builtin(stack, mesh, good, "request-duration")
    assert (phase, value) == (AnalysisPhase.SUCCESSFUL, [pytest.approx(24.85)])  # p99 of 20 ms, in ms
    phase, value, _ = await run_builtin(stack, mesh, bad, "request-duration")
    assert (phase, value) == (AnalysisPhase.FAILED, [pytest.approx(995.0)])  # p99 of 800 ms > 500 ms


async def test_envoy_builtins_read_the_real_envoy_through_prometheus(stack: Stack) -> None:
    good, bad = BuiltinTarget(canary_cluster="canary"), BuiltinTarget(canary_cluster="canary_bad")
    assert await run_builtin(stack, "envoy", good, "request-success-rate") == (
        AnalysisPhase.SUCCESSFUL,
        [100.0],
        "",
    )
    phase, value, _ = await run_builtin(stack, "envoy", bad, "request-success-rate")
    assert phase == AnalysisPhase.FAILED and 70 < value[0] < 90  # every 5th answer is a 503
    phase, value, _ = await run_builtin(stack, "envoy", good, "request-duration")
    assert phase == AnalysisPhase.SUCCESSFUL and value[0] >= 5  # 10 ms answers (slower on a busy machine)
    phase, value, _ = await run_builtin(stack, "envoy", bad, "request-duration")
    assert phase == AnalysisPhase.FAILED and value[0] > 500  # 600 ms answers


async def test_thresholds_are_args(stack: Stack) -> None:
    bad = BuiltinTarget(namespace="shop", target="api-bad")
    phase, value, _ = await run_builtin(
        stack, "istio", bad, "request-success-rate", **{"min-success-rate": "85"}
    )
    assert (phase, value) == (AnalysisPhase.SUCCESSFUL, [pytest.approx(90.0)])
    phase, _, _ = await run_builtin(stack, "istio", bad, "request-duration", **{"max-duration": "1000"})
    assert phase == AnalysisPhase.SUCCESSFUL


async def test_no_traffic_is_an_error_naming_the_query(stack: Stack) -> None:
    nobody = BuiltinTarget(namespace="shop", target="nobody")
    for name in ("request-success-rate", "request-duration"):
        runs = Runs(BuiltinTemplates("istio", nobody), providers(stack))
        await runs.start(name, args=QUICK)
        run = await runs.measured_once()
        measurement = run.result(name).measurements[0]
        assert measurement.phase == AnalysisPhase.ERROR
        assert measurement.value == []
        assert 'destination_workload=~"nobody"' in measurement.message
        assert "len(result) > 0" in measurement.message


async def test_the_executor_fills_the_namespace(stack: Stack) -> None:
    runs = Runs(
        BuiltinTemplates("istio", BuiltinTarget(namespace="elsewhere", target="api")),
        providers(stack),
        namespace="shop",
    )
    await runs.start("request-success-rate", args=QUICK)
    run = await runs.completed()
    assert run.phase == AnalysisPhase.SUCCESSFUL
    assert 'destination_workload_namespace="shop"' in run.result("request-success-rate").measurements[0].query


async def test_a_user_template_of_the_same_name_wins(stack: Stack) -> None:
    mine = parse_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "request-success-rate"},
            "spec": {"metrics": [{"name": "mine", "provider": {"prometheus": {"query": "vector(42)"}}}]},
        }
    )
    templates = ChainedTemplates(InlineTemplates(mine), BuiltinTemplates("istio"))
    runs = Runs(templates, providers(stack))
    await runs.start("request-success-rate")
    run = await runs.completed()
    assert [r.name for r in run.results] == ["mine"]
    assert run.result("mine").measurements[0].value == [42.0]
    assert await templates.get("request-duration") is not None
    assert await templates.get("nope") is None


# --- standalone Envoy without Prometheus: the meshshift provider reads the admin endpoint ---------


async def test_envoy_admin_builtins_through_the_executor(stack: Stack) -> None:
    quick = {"count": "1", "interval": "2s"}
    outcomes = {}
    for cluster in ("canary", "canary_bad"):
        provider = EnvoyAdminProvider(admin_url=stack.envoy.admin_url, cluster=cluster)
        runs = Runs(BuiltinTemplates("envoy", source="envoy-admin"), {"meshshift": provider})
        await runs.start("request-success-rate", args=quick, name="rate")
        await runs.start("request-duration", args=quick, name="duration")
        rate, duration = await runs.completed("rate"), await runs.completed("duration")
        outcomes[cluster] = (rate, duration)
    rate, duration = outcomes["canary"]
    assert rate.phase == AnalysisPhase.SUCCESSFUL and rate.results[0].measurements[0].value == [100.0]
    assert duration.phase == AnalysisPhase.SUCCESSFUL
    rate, duration = outcomes["canary_bad"]
    assert rate.phase == AnalysisPhase.FAILED and 70 < rate.results[0].measurements[0].value[0] < 90
    assert duration.phase == AnalysisPhase.FAILED and duration.results[0].measurements[0].value[0] > 500
    assert "Envoy cluster canary_bad" in duration.results[0].measurements[0].query
