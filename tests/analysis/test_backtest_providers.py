"""Providers measuring at a past time (MeasureContext.evaluation_time), and replays through the real
AnalysisExecutor on a replay clock: Prometheus' `time=` and rangeQuery on the real Prometheus,
Datadog's and New Relic's windows on local fakes, the refusals of providers without history."""

from __future__ import annotations

import time
from typing import Any

import pytest

from meshshift.analysis.providers import (
    BuiltinTarget,
    BuiltinTemplates,
    NewRelicProvider,
    PrometheusProvider,
    WebProvider,
    default_providers,
)
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.ports import MeasureContext, ProviderError
from meshshift.runtime.analysis import ArgContext
from meshshift.runtime.replay import ReplayRefusedError, replay
from meshshift.spec.model import AnalysisPhase, AnalysisRef, Arg, TemplateRef
from tests.analysis.helpers import metric, serve
from tests.analysis.stack import Stack
from tests.analysis.test_datadog_newrelic import NOW, FakeDatadog, FakeNerdGraph, datadog, nerdgraph_results

pytestmark = pytest.mark.asyncio(loop_scope="package")

AT = 1_699_990_000.0  # a past moment, NOW - 10000 s


async def test_prometheus_evaluates_an_instant_query_at_the_given_time(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    at = time.time() - 3600.5
    result = await provider.measure(
        metric("prometheus", {"query": "time()"}), MeasureContext(args={}, evaluation_time=at)
    )
    assert result.value == pytest.approx(round(at, 3))
    now = await provider.measure(metric("prometheus", {"query": "time()"}), MeasureContext(args={}))
    assert now.value > at + 3000  # without an evaluation time: now


async def test_a_range_query_ends_at_the_given_time(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    at = 1_700_000_000.0
    options = {
        "query": "time()",
        "rangeQuery": {"start": 'now() - duration("2m")', "end": "now()", "step": "1m"},
    }
    result = await provider.measure(
        metric("prometheus", options), MeasureContext(args={}, evaluation_time=at)
    )
    assert result.value == [at - 120, at - 60, at]


async def test_datadog_asks_for_the_window_ending_at_the_given_time() -> None:
    fake = FakeDatadog()
    async with serve(fake.app) as url:
        provider = datadog(url)
        context = MeasureContext(args={}, evaluation_time=AT)
        await provider.measure(metric("datadog", {"query": "avg:errors{*}", "interval": "5m"}), context)
        await provider.measure(
            metric("datadog", {"apiVersion": "v2", "queries": {"a": "avg:errors{*}"}}), context
        )
        await provider.measure(metric("datadog", {"query": "avg:errors{*}"}), MeasureContext(args={}))
    v1, v2, live = fake.seen
    assert (v1["query"]["from"], v1["query"]["to"]) == (str(int(AT) - 300), str(int(AT)))
    attributes = v2["body"]["data"]["attributes"]
    assert (attributes["from"], attributes["to"]) == ((int(AT) - 300) * 1000, int(AT) * 1000)
    assert live["query"]["to"] == str(NOW)  # a live measurement keeps the provider's clock
    assert provider.history_refusal(metric("datadog", {"query": "x"})) is None


async def test_new_relic_sends_nrql_moved_to_the_given_time() -> None:
    fake = FakeNerdGraph(nerdgraph_results({"count": 3}))
    env = {"NEWRELIC_API_KEY": "NRAK-TEST", "NEWRELIC_ACCOUNT_ID": "42"}
    async with serve(fake.app) as url:
        provider = NewRelicProvider(environ={**env, "NEWRELIC_BASE_URL_NERDGRAPH": f"{url}/graphql"})
        options = {
            "query": "SELECT count(*) FROM Transaction WHERE appName = '{{args.app}}' SINCE 5 minutes ago"
        }
        result = await provider.measure(
            metric("newRelic", options), MeasureContext(args={"app": "shop"}, evaluation_time=AT)
        )
    sent = fake.seen[0]["body"]["variables"]["nrql"]
    window = f"SINCE {int(AT - 300) * 1000} UNTIL {int(AT) * 1000}"
    expected = f"SELECT count(*) FROM Transaction WHERE appName = 'shop' {window}"
    assert sent == expected and result.query == expected
    absolute = metric("newRelic", {"query": "SELECT count(*) FROM Transaction SINCE today"})
    refusal = provider.history_refusal(absolute)
    assert refusal is not None and "'SINCE today'" in refusal and "cannot be replayed" in refusal
    assert provider.history_refusal(metric("newRelic", options)) is None


async def test_the_web_provider_refuses_a_past_time() -> None:
    provider = WebProvider()
    web_metric = metric("web", {"url": "http://127.0.0.1:1/health"})
    with pytest.raises(ProviderError, match="keeps no history"):
        await provider.measure(web_metric, MeasureContext(args={}, evaluation_time=AT))
    assert "the web provider asks an endpoint about now" in (provider.history_refusal(web_metric) or "")


def action(*templates: str, **args: str) -> StartAnalysis:
    ref = AnalysisRef(
        templates=tuple(TemplateRef(t) for t in templates), args=tuple(Arg(k, v) for k, v in args.items())
    )
    return StartAnalysis(
        run_name="replay", kind=AnalysisKind.STEP, analysis=ref, revision="", stable_revision=""
    )


async def test_the_sequential_judge_replays_over_prometheus_history(stack: Stack) -> None:
    # The Istio series of the stack: api-bad fails 10 % of its requests, api none. Looking once a
    # second over the last 12 s of real history, the judge says worse before its max-duration.
    await stack.prometheus.wait_for_data("count_over_time(istio_requests_total[30s]) > 20")
    providers = default_providers(environ={}, prometheus_address=stack.prometheus.url)
    templates = BuiltinTemplates(
        "istio", BuiltinTarget(namespace="shop", target="api-bad", stable_target="api")
    )
    until = time.time() - 2
    start = until - 12
    result = await replay(
        action("sequential-error-rate", interval="1s", **{"max-duration": "10s"}),
        templates=templates,
        providers=providers,
        arg_context=ArgContext(builtin_args={}),
        start=start,
        until=until,
    )
    assert result.run.phase == AnalysisPhase.FAILED, result.run.message
    assert result.completed_at is not None and start < result.completed_at <= start + 10
    looks = [entry.measurement for entry in result.timeline]
    assert looks[-1].phase == AnalysisPhase.FAILED and looks[-1].value["verdict"] == "worse"
    # One look a second of the replay's clock, each at its own time of the past.
    assert [round(m.finished_at - start) for m in looks] == list(range(len(looks)))
    assert all(m.phase == AnalysisPhase.RUNNING for m in looks[:-1])


async def test_a_replay_refuses_envoy_admin_before_measuring(stack: Stack) -> None:
    providers = default_providers(environ={}, envoy_admin_url=stack.envoy.admin_url)
    templates = BuiltinTemplates("envoy", source="envoy-admin")
    with pytest.raises(ReplayRefusedError, match="Envoy's admin endpoint holds only the counters of now"):
        await replay(
            action("request-success-rate"),
            templates=templates,
            providers=providers,
            arg_context=ArgContext(builtin_args={}),
            start=time.time() - 60,
            until=time.time(),
        )


class NoHistory:
    """A provider that knows nothing of history (no history_refusal): refused as such."""

    kind = "prometheus"

    async def measure(self, metric: Any, context: MeasureContext) -> Any:
        raise AssertionError("a replay must not measure with it")


async def test_a_provider_without_the_history_port_is_refused() -> None:
    templates = BuiltinTemplates("istio")
    with pytest.raises(ReplayRefusedError, match="the prometheus provider keeps no history to replay"):
        await replay(
            action("request-success-rate"),
            templates=templates,
            providers={"prometheus": NoHistory()},
            arg_context=ArgContext(builtin_args={}),
            start=AT,
            until=AT + 60,
        )
