"""The sequential builtins (sequential-error-rate, sequential-latency) through the real executor:
on a real Prometheus (Istio, NGINX, Envoy and Traefik series) and on a real Envoy's admin
endpoint, with raw counters, resets, and a daemon restart in the middle of a measurement."""

from __future__ import annotations

from typing import Any

import pytest

from meshshift.analysis.providers import BuiltinTarget, BuiltinTemplates, default_providers
from meshshift.analysis.providers.envoy_admin import parse_cluster_stats
from meshshift.analysis.run import AnalysisRun, in_progress
from meshshift.codec import decode, encode
from meshshift.ports import MetricProvider
from meshshift.spec.model import AnalysisPhase
from tests.analysis.helpers import Runs
from tests.analysis.stack import NGINX_SPLIT_INGRESS, Stack

ON_THE_SHARED_LOOP = pytest.mark.asyncio(loop_scope="package")  # the package fixtures live on it

ERROR_RATE, LATENCY = "sequential-error-rate", "sequential-latency"
# Looks every 0.5 s (Prometheus scrapes every second); undecided passes after 8 s.
QUICK = {"interval": "0.5s", "max-duration": "8s"}


def providers(stack: Stack, *, canary: str = "canary", stable: str = "stable") -> dict[str, MetricProvider]:
    return default_providers(
        environ={},
        prometheus_address=stack.prometheus.url,
        envoy_admin_url=stack.envoy.admin_url,
        envoy_cluster=canary,
        envoy_stable_cluster=stable,
    )


async def judged(
    templates: BuiltinTemplates, providers: dict[str, MetricProvider], name: str, **args: str
) -> AnalysisRun:
    runs = Runs(templates, providers)
    try:
        await runs.start(name, args={**QUICK, **args})
        return await runs.completed()
    finally:
        await runs.close()


def last(run: AnalysisRun, name: str) -> tuple[AnalysisPhase, Any, str]:
    measurement = run.result(name).measurements[-1]
    return measurement.phase, measurement.value, measurement.message


# --- Prometheus: raw counters of each mesh ------------------------------------------------------


@pytest.mark.parametrize(
    ("mesh", "bad", "good"),
    [
        (
            "istio",
            BuiltinTarget(namespace="shop", target="api-bad", stable_target="api"),
            BuiltinTarget(namespace="shop", target="api", stable_target="api-bad"),
        ),
        ("envoy", BuiltinTarget(canary_cluster="canary_bad"), BuiltinTarget(canary_cluster="canary")),
        ("traefik", BuiltinTarget(), None),
        ("nginx", BuiltinTarget(namespace="shop", ingress=NGINX_SPLIT_INGRESS), None),
    ],
)
@ON_THE_SHARED_LOOP
async def test_a_bad_canary_is_worse_on_every_mesh_through_prometheus(
    stack: Stack, mesh: str, bad: BuiltinTarget, good: BuiltinTarget | None
) -> None:
    run = await judged(BuiltinTemplates(mesh, bad), providers(stack), ERROR_RATE)
    phase, value, message = last(run, ERROR_RATE)
    assert run.phase == AnalysisPhase.FAILED and phase == AnalysisPhase.FAILED
    assert value["verdict"] == "worse" and value["mode"] == "paired"
    assert value["canary"]["errors"] > 0 and value["stable"]["errors"] == 0
    assert value["canary"]["requests"] > 0 and value["stable"]["requests"] > value["canary"]["requests"] / 20
    assert value["evidence"]["worse"] == "inf" or value["evidence"]["worse"] >= 100
    assert value["evidence"]["threshold"] == 100 and value["alpha"] == 0.01
    assert message.startswith("worse: canary ") and ">= 1/alpha = 100" in message
    query = run.result(ERROR_RATE).measurements[-1].query
    assert "against stable" in query and "raw" in query
    run = await judged(BuiltinTemplates(mesh, bad), providers(stack), LATENCY)
    phase, value, message = last(run, LATENCY)
    assert phase == AnalysisPhase.FAILED and value["verdict"] == "worse", message
    assert value["canary"]["slow"] > 0 and value["threshold"] is not None
    assert "above 5%" in message  # the canary's slow share also beats 1 - quantile
    if good is not None:
        # The stable is the bad one here: the canary is better, which passes at once.
        run = await judged(BuiltinTemplates(mesh, good), providers(stack), ERROR_RATE)
        phase, value, message = last(run, ERROR_RATE)
        if mesh == "istio":  # 10 % errors per tick on the stable: the evidence is quick
            assert (phase, value["verdict"]) == (AnalysisPhase.SUCCESSFUL, "not-worse"), message
            assert value["elapsed"] < 8 and "below 1.25 x the stable's" in message
        else:  # Envoy's canary has no errors and its stable neither: undecided, passes at max-duration
            assert phase == AnalysisPhase.SUCCESSFUL and value["verdict"] in ("undecided", "not-worse")


@ON_THE_SHARED_LOOP
async def test_an_equal_canary_stays_undecided_through_counter_resets(stack: Stack) -> None:
    # cart (canary) and cart-primary both fail 5 %; cart's counters restart every 3 s.
    target = BuiltinTarget(namespace="shop", target="cart")
    run = await judged(BuiltinTemplates("istio", target), providers(stack), ERROR_RATE)
    phase, value, message = last(run, ERROR_RATE)
    assert (phase, value["verdict"]) == (AnalysisPhase.SUCCESSFUL, "undecided"), message
    assert value["resets"] >= 2
    assert value["canary"]["rate"] == pytest.approx(0.05) and value["stable"]["rate"] == pytest.approx(0.05)
    assert "fixed-horizon" in message
    strict = await judged(
        BuiltinTemplates("istio", target), providers(stack), ERROR_RATE, **{"require-evidence": "true"}
    )
    assert strict.phase == AnalysisPhase.INCONCLUSIVE


@ON_THE_SHARED_LOOP
async def test_a_workload_without_traffic_is_never_a_pass(stack: Stack) -> None:
    nobody = BuiltinTarget(namespace="shop", target="nobody", stable_target="api")
    run = await judged(BuiltinTemplates("istio", nobody), providers(stack), ERROR_RATE)
    phase, value, message = last(run, ERROR_RATE)
    assert phase == AnalysisPhase.INCONCLUSIVE and value["canary"]["requests"] == 0
    assert "served no request" in message


# --- Envoy's admin endpoint, no Prometheus ----------------------------------------------------


@ON_THE_SHARED_LOOP
async def test_envoy_admin_judges_the_real_envoy(stack: Stack) -> None:
    templates = BuiltinTemplates("envoy", source="envoy-admin")
    run = await judged(templates, providers(stack, canary="canary_bad"), ERROR_RATE)
    phase, value, message = last(run, ERROR_RATE)
    assert (phase, value["verdict"]) == (AnalysisPhase.FAILED, "worse"), message
    assert value["canary"]["rate"] > 0.05 and value["stable"]["errors"] == 0
    assert "/stats/prometheus" in run.result(ERROR_RATE).measurements[-1].query
    run = await judged(templates, providers(stack, canary="canary_bad"), LATENCY)
    phase, value, message = last(run, LATENCY)
    assert (phase, value["verdict"]) == (AnalysisPhase.FAILED, "worse"), message
    assert "ms)" in message  # the threshold, in Envoy's unit
    healthy = await judged(templates, providers(stack, canary="canary"), ERROR_RATE, **{"max-duration": "3s"})
    phase, value, message = last(healthy, ERROR_RATE)
    assert (phase, value["verdict"]) == (AnalysisPhase.SUCCESSFUL, "undecided"), message
    assert value["canary"]["requests"] > 0 and value["canary"]["errors"] == 0


@ON_THE_SHARED_LOOP
async def test_a_restarted_daemon_resumes_the_measurement_where_it_was(stack: Stack) -> None:
    templates = BuiltinTemplates("envoy", source="envoy-admin")
    first = Runs(templates, providers(stack, canary="canary"))
    await first.start(ERROR_RATE, args={"interval": "0.5s", "max-duration": "60s"})
    run = await first.wait(
        lambda r: (m := in_progress(r.result(ERROR_RATE))) is not None and m.value["canary"]["requests"] > 0
    )
    await first.close()  # the daemon stops; the run stays as persisted
    persisted = decode(AnalysisRun, encode(run))
    before = in_progress(persisted.result(ERROR_RATE))
    assert before is not None
    second = Runs(templates, providers(stack, canary="canary"))
    second.executor.restore({"run": persisted})
    try:
        await second.start(ERROR_RATE)
        resumed = await second.wait(
            lambda r: (
                (m := in_progress(r.result(ERROR_RATE))) is not None
                and m.value["canary"]["requests"] > before.value["canary"]["requests"]
            )
        )
    finally:
        await second.executor.stop("run")
        await second.close()
    after = in_progress(resumed.result(ERROR_RATE))
    assert after is not None and after.started_at == before.started_at
    assert after.value["elapsed"] > before.value["elapsed"]
    stopped = second.executor.runs["run"]
    assert stopped.phase == AnalysisPhase.SUCCESSFUL  # stopped while undecided: as at max-duration
    assert stopped.result(ERROR_RATE).measurements[-1].message.startswith("Metric Terminated: undecided")


@ON_THE_SHARED_LOOP
async def test_bad_settings_are_errors_naming_the_option(stack: Stack) -> None:
    run = await judged(
        BuiltinTemplates("envoy", source="envoy-admin"), providers(stack), ERROR_RATE, alpha="2"
    )
    phase, _, message = last(run, ERROR_RATE)
    assert phase == AnalysisPhase.ERROR
    assert "provider.meshshift.alpha: must be between 0 and 1" in message


def test_a_quiet_envoy_cluster_reads_as_no_traffic_and_a_wrong_name_as_nothing() -> None:
    # Envoy 1.40's /stats/prometheus for a cluster that has not served a request yet.
    text = (
        "# TYPE envoy_cluster_upstream_rq_total counter\n"
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="shop-canary"} 0\n'
        'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="shop-primary"} 7\n'
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="shop-primary"} 7\n'
    )
    quiet = parse_cluster_stats(text, "shop-canary", 1.0)
    assert quiet is not None and quiet.requests == 0 and quiet.buckets == ()
    busy = parse_cluster_stats(text, "shop-primary", 1.0)
    assert busy is not None and dict(busy.responses) == {"200": 7.0}
    assert parse_cluster_stats(text, "nope", 1.0) is None
