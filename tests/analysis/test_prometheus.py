"""The prometheus provider against a real Prometheus scraping the test exporter, and the
tutorial's templates end to end through the AnalysisExecutor."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from meshshift.analysis.providers import PrometheusProvider, default_providers
from meshshift.ports import MetricProvider, ProviderError
from meshshift.processes import free_port
from meshshift.spec.errors import SpecError
from meshshift.spec.model import AnalysisPhase
from meshshift.spec.templates import parse_template, substitute_args
from tests.analysis.helpers import (
    Runs,
    measure,
    phases,
    seed_document,
    serve,
    with_metric_fields,
    with_prometheus_address,
)
from tests.analysis.stack import TRICKY_SERVICE, Stack

pytestmark = pytest.mark.asyncio(loop_scope="package")

SUCCESS_RATE = "02-template-success-rate.yaml"
COMPARE_BASELINE = "04-template-compare-baseline.yaml"
BUSINESS = "05-template-business-metrics.yaml"


@pytest.fixture
def providers(stack: Stack) -> dict[str, MetricProvider]:
    return default_providers(environ={}, prometheus_address=stack.prometheus.url)


@pytest_asyncio.fixture(loop_scope="package")
async def dead_address() -> AsyncIterator[str]:
    yield f"http://127.0.0.1:{free_port()}"  # nothing listens there


def seed(filename: str, address: str) -> dict[str, object]:
    return with_prometheus_address(seed_document(filename), address)


# --- what a query's answer becomes -------------------------------------------------------


async def test_scalar_vector_and_matrix_answers(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    scalar = await measure(provider, "prometheus", {"query": "scalar(vector(1)) * 2"})
    assert scalar.value == 2.0
    vector = await measure(
        provider, "prometheus", {"query": 'sum by (version) (http_requests_total{service="healthy"})'}
    )
    assert isinstance(vector.value, list) and len(vector.value) == 2 and all(v > 0 for v in vector.value)
    matrix = await measure(
        provider,
        "prometheus",
        {"query": 'http_requests_total{service="healthy",version="canary",status="200"}[3s]'},
    )
    assert len(matrix.value) >= 2 and matrix.value == sorted(
        matrix.value
    )  # a counter's samples, oldest first


async def test_nan_and_infinities_are_kept(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    assert math.isnan((await measure(provider, "prometheus", {"query": "0/0"})).value)
    values = (
        await measure(
            provider, "prometheus", {"query": "vector(1/0) or label_replace(vector(-1/0), 'k', 'v', '', '')"}
        )
    ).value
    assert sorted(values) == [-math.inf, math.inf]


async def test_an_empty_vector_is_an_empty_list(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    result = await measure(provider, "prometheus", {"query": 'http_requests_total{service="no-such"}'})
    assert result.value == []


async def test_errors_name_the_address_and_the_query(stack: Stack, dead_address: str) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    with pytest.raises(ProviderError) as bad:
        await measure(provider, "prometheus", {"query": "sum(rate(x[5m]"})
    assert f"prometheus at {stack.prometheus.url} rejected the query (bad_data:" in str(bad.value)
    assert "'sum(rate(x[5m]'" in str(bad.value)
    with pytest.raises(ProviderError, match=r"answered a string result for query '\"hi\"'"):
        await measure(provider, "prometheus", {"query": '"hi"'})
    with pytest.raises(ProviderError, match=rf"cannot reach prometheus at {dead_address}"):
        await measure(provider, "prometheus", {"query": "up", "address": dead_address})


async def test_the_default_address_comes_from_the_environment(stack: Stack) -> None:
    provider = PrometheusProvider(environ={"MESHSHIFT_PROMETHEUS_ADDRESS": stack.prometheus.url})
    assert (await measure(provider, "prometheus", {"query": "vector(7)"})).value == [7.0]
    with pytest.raises(ProviderError, match="MESHSHIFT_PROMETHEUS_ADDRESS"):
        await measure(PrometheusProvider(environ={}), "prometheus", {"query": "vector(7)"})


async def test_the_resolved_query_is_returned(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    query = 'sum(rate(http_requests_total{service="{{ args.service-name }}"}[{{args.window}}]))'
    result = await measure(
        provider, "prometheus", {"query": query}, **{"service-name": "healthy", "window": "5s"}
    )
    assert result.query == 'sum(rate(http_requests_total{service="healthy"}[5s]))'
    assert result.value[0] > 0


# --- headers, bearer tokens, timeouts (a stand-in server that records the request) ---------


def fake_prometheus(seen: list[web.Request], delay: float = 0.0) -> web.Application:
    async def query(request: web.Request) -> web.Response:
        seen.append(request)
        form = await request.post()
        await asyncio.sleep(delay)
        assert form["query"] == "vector(1)"
        return web.json_response(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
            }
        )

    app = web.Application()
    app.router.add_post("/prefix/api/v1/query", query)
    return app


async def test_custom_headers_with_args(tmp_path: Path) -> None:
    seen: list[web.Request] = []
    async with serve(fake_prometheus(seen)) as url:
        options = {
            "address": f"{url}/prefix",
            "query": "vector(1)",
            "headers": [{"key": "X-Scope-OrgID", "value": "{{args.tenant}}"}],
        }
        result = await measure(PrometheusProvider(environ={}), "prometheus", options, tenant="team-a")
    assert result.value == [1.0]
    assert seen[0].headers["X-Scope-OrgID"] == "team-a"
    assert "Authorization" not in seen[0].headers


async def test_a_bearer_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    seen: list[web.Request] = []
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    async with serve(fake_prometheus(seen)) as url:
        options = {"address": f"{url}/prefix", "query": "vector(1)"}
        await measure(
            PrometheusProvider(environ={"MESHSHIFT_PROMETHEUS_BEARER_TOKEN": "from-env"}),
            "prometheus",
            options,
        )
        file_provider = PrometheusProvider(
            environ={"MESHSHIFT_PROMETHEUS_BEARER_TOKEN_FILE": str(token_file)}
        )
        await measure(file_provider, "prometheus", options)
        token_file.write_text("rotated")  # read again at every measurement
        await measure(file_provider, "prometheus", options)
    assert [r.headers["Authorization"] for r in seen] == [
        "Bearer from-env",
        "Bearer from-file",
        "Bearer rotated",
    ]


async def test_the_timeout_option_cuts_a_hanging_server_off() -> None:
    seen: list[web.Request] = []
    async with serve(fake_prometheus(seen, delay=30)) as url:
        with pytest.raises(ProviderError, match=rf"prometheus at {url}/prefix did not answer within 1s"):
            await measure(
                PrometheusProvider(environ={}),
                "prometheus",
                {"address": f"{url}/prefix", "query": "vector(1)", "timeout": 1},
            )


# --- the tutorial's templates, end to end ----------------------------------------------------


async def test_success_rate_seed_is_successful_on_a_healthy_service(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    runs = Runs([seed(SUCCESS_RATE, stack.prometheus.url)], providers)
    await runs.start("success-rate", args={"service-name": "healthy"})
    run = await runs.measured_once()
    assert run.phase == AnalysisPhase.SUCCESSFUL, run.message
    success = run.result("success-rate").measurements[0]
    assert success.phase == AnalysisPhase.SUCCESSFUL
    assert success.value == [pytest.approx(0.98)]
    assert 'service="healthy"' in success.query and "{{" not in success.query
    assert success.started_at <= success.finished_at
    latency = run.result("latency").measurements[0]
    assert latency.value == [pytest.approx(48.75)]  # p95 of 40 ms requests, in a 25-50 ms bucket


async def test_success_rate_seed_fails_on_a_degraded_service(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    runs = Runs([seed(SUCCESS_RATE, stack.prometheus.url)], providers)
    await runs.start("success-rate", args={"service-name": "degraded"})
    run = await runs.measured_once()
    assert run.phase == AnalysisPhase.FAILED
    assert phases(run) == {"success-rate": AnalysisPhase.FAILED, "latency": AnalysisPhase.FAILED}
    success = run.result("success-rate").measurements[0]
    assert success.value == [pytest.approx(0.74)]
    assert "successCondition `result[0] >= 0.95` is false" in success.message


async def test_success_rate_with_short_intervals_completes_by_itself(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    doc = with_metric_fields(seed(SUCCESS_RATE, stack.prometheus.url), interval="250ms", count=3)
    runs = Runs([doc], providers)
    await runs.start("success-rate", args={"service-name": "healthy"})
    run = await runs.completed()
    assert run.phase == AnalysisPhase.SUCCESSFUL and not run.terminated
    assert [len(r.measurements) for r in run.results] == [3, 3]


async def test_success_rate_is_an_error_while_prometheus_is_down(
    providers: dict[str, MetricProvider], dead_address: str
) -> None:
    doc = with_metric_fields(seed(SUCCESS_RATE, dead_address), interval="100ms")
    runs = Runs([doc], providers)
    await runs.start("success-rate", args={"service-name": "healthy"})
    run = await runs.completed()
    assert run.phase == AnalysisPhase.ERROR
    result = run.result("success-rate")
    assert result.counts.consecutive_error == 5  # consecutiveErrorLimit 4, Argo's default
    assert f"cannot reach prometheus at {dead_address}" in result.measurements[-1].message


async def test_both_conditions_unmet_is_inconclusive(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    doc = seed(SUCCESS_RATE, stack.prometheus.url)
    doc["spec"]["metrics"] = [doc["spec"]["metrics"][0]]  # type: ignore[index]
    doc = with_metric_fields(doc, successCondition="result[0] >= 0.99", failureCondition="result[0] < 0.9")
    runs = Runs([doc], providers)
    await runs.start("success-rate", args={"service-name": "healthy"})  # 0.98: neither
    run = await runs.completed()
    assert run.phase == AnalysisPhase.INCONCLUSIVE
    assert run.result("success-rate").measurements[0].phase == AnalysisPhase.INCONCLUSIVE


async def test_compare_baseline_seed_uses_the_revision_args(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    runs = Runs(
        [seed(COMPARE_BASELINE, stack.prometheus.url)], providers
    )  # canary-hash=canary, baseline-hash=stable
    await runs.start("compare-baseline", args={"service-name": "healthy"})
    run = await runs.measured_once()
    assert run.phase == AnalysisPhase.SUCCESSFUL, run.message
    errors = run.result("error-rate-comparison").measurements[0]
    assert errors.value == [pytest.approx(1.0)]
    assert 'version="canary"' in errors.query and 'version="stable"' in errors.query
    assert run.result("latency-comparison").measurements[0].value == [pytest.approx(1.0)]

    runs = Runs([seed(COMPARE_BASELINE, stack.prometheus.url)], providers)
    await runs.start("compare-baseline", args={"service-name": "degraded"})
    run = await runs.measured_once()
    assert phases(run) == {
        "error-rate-comparison": AnalysisPhase.FAILED,
        "latency-comparison": AnalysisPhase.FAILED,
    }
    assert run.result("error-rate-comparison").measurements[0].value == [pytest.approx(25.0)]


async def test_business_metrics_seed(stack: Stack, providers: dict[str, MetricProvider]) -> None:
    runs = Runs([seed(BUSINESS, stack.prometheus.url)], providers)
    await runs.start("business-metrics", args={"service-name": "healthy"})
    run = await runs.measured_once()
    assert run.phase == AnalysisPhase.SUCCESSFUL, run.message
    assert run.result("revenue-per-request").measurements[0].value == [pytest.approx(1.0)]
    assert run.result("conversion-rate").measurements[0].value == [pytest.approx(0.05)]

    runs = Runs([seed(BUSINESS, stack.prometheus.url)], providers)
    await runs.start("business-metrics", args={"service-name": "degraded"})
    run = await runs.measured_once()
    assert phases(run) == {
        "revenue-per-request": AnalysisPhase.FAILED,
        "conversion-rate": AnalysisPhase.FAILED,
    }


# --- injection, NaN and empty results against the real Prometheus ----------------------------

COUNT_QUERY = 'sum(http_requests_total{service="{{args.service-name}}"})'


async def test_an_injected_value_cannot_change_the_query(stack: Stack) -> None:
    injected = 'a"} or vector(1) or foo{x="'
    naive = substitute_args(COUNT_QUERY, {"service-name": injected})
    assert (await stack.prometheus.query(naive))["result"][0]["value"][1] == "1"  # what escaping prevents
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    result = await measure(provider, "prometheus", {"query": COUNT_QUERY}, **{"service-name": injected})
    assert result.value == []  # no service has that literal name


async def test_a_label_value_full_of_quotes_is_matched_exactly(stack: Stack) -> None:
    provider = PrometheusProvider(default_address=stack.prometheus.url, environ={})
    result = await measure(provider, "prometheus", {"query": COUNT_QUERY}, **{"service-name": TRICKY_SERVICE})
    assert len(result.value) == 1 and result.value[0] > 0
    single = await measure(
        provider, "prometheus", {"query": "sum(http_requests_total{service='{{args.s}}'})"}, s=TRICKY_SERVICE
    )
    assert single.value == result.value


IDLE_RATIO = (
    'sum(rate(http_requests_total{service="{{args.service-name}}",status!~"5.."}[5s])) / '
    'sum(rate(http_requests_total{service="{{args.service-name}}"}[5s]))'
)


def single_metric(name: str, query: str, **fields: object) -> dict[str, object]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": [{"name": "service-name"}],
            "metrics": [{"name": name, "provider": {"prometheus": {"query": query}}, **fields}],
        },
    }


async def test_nan_and_empty_results_follow_the_conditions(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    templates = [
        single_metric("nan-guarded", IDLE_RATIO, successCondition="isNaN(result[0]) || result[0] > 0.9"),
        single_metric("empty-guarded", COUNT_QUERY, successCondition="len(result) == 0 || result[0] < 1"),
        single_metric("empty-unguarded", COUNT_QUERY, successCondition="result[0] > 0.9"),
    ]
    outcomes = {}
    for name, service in (
        ("nan-guarded", "idle"),
        ("empty-guarded", "no-such"),
        ("empty-unguarded", "no-such"),
    ):
        runs = Runs(templates, providers)
        await runs.start(name, args={"service-name": service}, name=name)
        outcomes[name] = (await runs.measured_once(name)).result(name).measurements[0]
    assert math.isnan(outcomes["nan-guarded"].value[0])
    assert outcomes["nan-guarded"].phase == AnalysisPhase.SUCCESSFUL
    assert outcomes["empty-guarded"].value == []
    assert outcomes["empty-guarded"].phase == AnalysisPhase.SUCCESSFUL
    unguarded = outcomes["empty-unguarded"]
    assert unguarded.phase == AnalysisPhase.ERROR
    assert 'sum(http_requests_total{service="no-such"})' in unguarded.message  # names the query
    assert "len(result) > 0" in unguarded.message


async def test_an_arg_without_a_value_stops_the_run_before_any_query(
    stack: Stack, providers: dict[str, MetricProvider]
) -> None:
    doc = seed(SUCCESS_RATE, stack.prometheus.url)
    with pytest.raises(
        SpecError,
        match=re.escape('placeholder {{args.typo}} uses arg "typo", which spec.args does not declare'),
    ):
        parse_template(with_metric_fields(doc, successCondition="result[0] >= {{args.typo}}"))
    runs = Runs([doc], providers)
    await runs.start("success-rate")  # service-name is declared without a default and not given
    run = await runs.completed()
    assert run.phase == AnalysisPhase.ERROR
    assert 'missing arg "service-name"' in run.message
    assert run.results == ()


async def test_no_data_is_never_a_pass(stack: Stack, providers: dict[str, MetricProvider]) -> None:
    """Issue 12.1, against a real Prometheus: NaN under a failureCondition-only metric and an empty
    vector under `all(...)` were both promoted (as Argo promotes them: bugs #1466 and #4479)."""
    templates = [
        single_metric("nan-failure-only", IDLE_RATIO, failureCondition="result[0] < 0.9"),
        single_metric("empty-all", COUNT_QUERY, successCondition="all(result, {# >= 0.9})"),
    ]
    for name, service in (("nan-failure-only", "idle"), ("empty-all", "no-such")):
        runs = Runs(templates, providers)
        await runs.start(name, args={"service-name": service}, name=name)
        measurement = (await runs.measured_once(name)).result(name).measurements[0]
        assert measurement.phase == AnalysisPhase.ERROR, name
        assert measurement.message.startswith("no data: the result of query"), measurement.message
