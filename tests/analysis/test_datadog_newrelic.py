"""Datadog (v1 and v2) and New Relic (NerdGraph) providers against local aiohttp servers
that check the request's path, headers and body and answer with the documented shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web

from meshshift.analysis.providers import DatadogProvider, NewRelicProvider
from meshshift.ports import MeasureContext, ProviderError
from meshshift.spec.model import AnalysisPhase
from tests.analysis.helpers import Runs, metric, seed_document, serve

NOW = 1_700_000_000
API_KEY, APP_KEY = "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.asyncio(loop_scope="package")  # the shared stack's loop (conftest.py)


class FakeDatadog:
    """Checks the keys and records each request; answers what the test set."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.v1_answer: Any = {"status": "ok", "series": []}
        self.v2_answer: Any = {"data": {"type": "scalar_response", "attributes": {"columns": []}}}
        self.status = 200
        self.delay = 0.0
        app = web.Application()
        app.router.add_get("/api/v1/query", self.v1)
        app.router.add_post("/api/v2/query/scalar", self.v2)
        self.app = app

    def _auth(self, request: web.Request) -> web.Response | None:
        if (
            request.headers.get("DD-API-KEY") != API_KEY
            or request.headers.get("DD-APPLICATION-KEY") != APP_KEY
        ):
            return web.json_response({"errors": ["Forbidden"]}, status=403)
        return None

    async def v1(self, request: web.Request) -> web.Response:
        self.seen.append(
            {"path": request.path, "query": dict(request.query), "headers": dict(request.headers)}
        )
        await asyncio.sleep(self.delay)
        return self._auth(request) or web.json_response(self.v1_answer, status=self.status)

    async def v2(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        return self._auth(request) or web.json_response(self.v2_answer, status=self.status)


def datadog(url: str, **env: str) -> DatadogProvider:
    return DatadogProvider(
        environ={"DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY, "DD_ADDRESS": url, **env}, clock=lambda: NOW
    )


async def dd_measure(provider: DatadogProvider, options: Mapping[str, Any], **args: str) -> Any:
    return await provider.measure(metric("datadog", options), MeasureContext(args=args))


async def test_the_tutorial_datadog_metric_v1() -> None:
    fake = FakeDatadog()
    fake.v1_answer = {
        "status": "ok",
        "res_type": "time_series",
        "series": [
            {
                "metric": "trace.http.request.errors",
                "pointlist": [[1.6e12, 0.5], [1.6e12 + 1, 0.02], [1.6e12 + 2, None]],
            }
        ],
    }
    seed = seed_document("06-metrics-datadog.yaml")["metrics"][0]
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "dd"},
        "spec": {
            "args": [{"name": "service-name"}],
            "metrics": [{**seed, "successCondition": "result < 0.05"}],
        },
    }
    async with serve(fake.app) as url:
        runs = Runs([template], {"datadog": datadog(url)})
        await runs.start("dd", args={"service-name": "checkout"})
        run = await runs.completed()
    assert run.phase == AnalysisPhase.SUCCESSFUL, run.message
    measurement = run.result("datadog-error-rate").measurements[0]
    assert measurement.value == 0.02  # the last non-null point
    request = fake.seen[0]
    assert request["path"] == "/api/v1/query"
    assert request["query"] == {
        "query": "avg:trace.http.request.errors{service:checkout}\n.as_rate()",
        "from": str(NOW - 300),  # the provider's interval: 5m
        "to": str(NOW),
    }
    assert measurement.query == request["query"]["query"]


async def test_v1_without_series_is_nil_for_default() -> None:
    fake = FakeDatadog()
    async with serve(fake.app) as url:
        result = await dd_measure(datadog(url), {"query": "avg:x{*}", "interval": "10m"})
    assert result.value is None
    assert fake.seen[0]["query"]["from"] == str(NOW - 600)


async def test_v2_queries_and_a_formula() -> None:
    fake = FakeDatadog()
    fake.v2_answer = {
        "data": {
            "type": "scalar_response",
            "attributes": {
                "columns": [{"name": "formula", "type": "number", "values": [0.031], "meta": {"unit": None}}]
            },
        }
    }
    options = {
        "apiVersion": "v2",
        "interval": "5m",
        "queries": {
            "a": "sum:requests.errors{service:{{args.service-name}}}.as_count()",
            "b": "sum:requests{service:{{args.service-name}}}.as_count()",
        },
        "formula": "moving_rollup(a, 60, 'sum') / b",
        "aggregator": "sum",
    }
    async with serve(fake.app) as url:
        result = await dd_measure(datadog(url), options, **{"service-name": "checkout"})
    assert result.value == 0.031
    request = fake.seen[0]
    assert request["path"] == "/api/v2/query/scalar"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "data": {
            "type": "scalar_request",
            "attributes": {
                "from": (NOW - 300) * 1000,
                "to": NOW * 1000,
                "queries": [
                    {
                        "data_source": "metrics",
                        "name": "a",
                        "query": "sum:requests.errors{service:checkout}.as_count()",
                        "aggregator": "sum",
                    },
                    {
                        "data_source": "metrics",
                        "name": "b",
                        "query": "sum:requests{service:checkout}.as_count()",
                        "aggregator": "sum",
                    },
                ],
                "formulas": [{"formula": "moving_rollup(a, 60, 'sum') / b"}],
            },
        }
    }


async def test_v2_grouped_answers_are_lists_and_empty_answers_nil() -> None:
    fake = FakeDatadog()
    fake.v2_answer = {
        "data": {
            "type": "scalar_response",
            "attributes": {
                "columns": [
                    {"name": "resource_name", "type": "group", "values": [["GET /a"], ["GET /b"]]},
                    {"name": "query", "type": "number", "values": [0.01, 0.2]},
                ]
            },
        }
    }
    async with serve(fake.app) as url:
        provider = datadog(url)
        grouped = await dd_measure(provider, {"apiVersion": "v2", "query": "sum:x{*} by {resource_name}"})
        assert grouped.value == [0.01, 0.2]
        assert fake.seen[-1]["body"]["data"]["attributes"]["queries"][0]["aggregator"] == "last"
        fake.v2_answer = {
            "data": {
                "type": "scalar_response",
                "attributes": {"columns": [{"name": "query", "type": "number", "values": []}]},
            }
        }
        assert (await dd_measure(provider, {"apiVersion": "v2", "query": "sum:x{*}"})).value is None
        fake.v2_answer = {"data": {"attributes": {"columns": []}}, "errors": "unknown metric x"}
        with pytest.raises(ProviderError, match="reported errors in the query: unknown metric x"):
            await dd_measure(provider, {"apiVersion": "v2", "query": "sum:x{*}"})


async def test_datadog_failures_are_errors() -> None:
    fake = FakeDatadog()
    async with serve(fake.app) as url:
        wrong = DatadogProvider(environ={"DD_API_KEY": "nope", "DD_APP_KEY": "nope", "DD_ADDRESS": url})
        with pytest.raises(ProviderError, match=r"refused the credentials from the environment \(HTTP 403\)"):
            await dd_measure(wrong, {"query": "avg:x{*}"})
        fake.status = 500
        fake.v1_answer = {"errors": ["internal"]}
        with pytest.raises(ProviderError, match=rf"datadog at {url} \(v1\) answered HTTP 500"):
            await dd_measure(datadog(url), {"query": "avg:x{*}"})
        fake.status, fake.delay = 200, 30
        with pytest.raises(ProviderError, match="did not answer within 1s"):
            await dd_measure(datadog(url), {"query": "avg:x{*}", "requestTimeout": "1s"})
    with pytest.raises(ProviderError, match="service-name"):
        await dd_measure(
            datadog("http://127.0.0.1:1"),
            {"query": "avg:x{service:{{args.service-name}}}"},
            **{"service-name": "a} + avg:y{*"},
        )


async def test_datadog_credentials_from_secrets_in_argo_order() -> None:
    fake = FakeDatadog()
    fake.v1_answer = {"status": "ok", "series": [{"pointlist": [[1.0, 3.0]]}]}
    lookups: list[tuple[str, str | None]] = []
    async with serve(fake.app) as url:
        secret = {"address": url, "api-key": API_KEY, "app-key": APP_KEY}

        async def read_secret(name: str, namespace: str | None) -> Mapping[str, str] | None:
            lookups.append((name, namespace))
            return secret if (name, namespace) == ("dd-team", "shop") else None

        provider = DatadogProvider(secret_reader=read_secret, environ={}, clock=lambda: NOW)
        options = {"query": "avg:x{*}", "secretRef": {"name": "dd-team", "namespaced": True}}
        result = await provider.measure(metric("datadog", options), MeasureContext(args={}, namespace="shop"))
        assert result.value == 3.0
        assert lookups == [("dd-team", "shop")]
        # Without secretRef: the environment first, then the Secret "datadog" (resolved by the runtime).
        context = MeasureContext(args={}, secrets={"datadog": secret})
        assert (
            await DatadogProvider(environ={}).measure(metric("datadog", {"query": "avg:x{*}"}), context)
        ).value == 3.0
    assert DatadogProvider(
        environ={"DD_API_KEY": "k", "DD_APP_KEY": "a", "DD_SITE": "datadoghq.eu"}
    )._from_environment() == (
        DatadogProvider(
            environ={"DD_API_KEY": "k", "DD_APP_KEY": "a", "DD_ADDRESS": "https://api.datadoghq.eu"}
        )._from_environment()
    )


# --- New Relic -----------------------------------------------------------------------------


class FakeNerdGraph:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        app = web.Application()
        app.router.add_post("/graphql", self.graphql)
        self.app = app

    async def graphql(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append({"headers": dict(request.headers), "body": body})
        await asyncio.sleep(self.delay)
        if request.headers.get("API-Key") != "NRAK-TEST":
            return web.json_response({"errors": [{"message": "Invalid API key"}]}, status=401)
        return web.json_response(self.answer, status=self.status)


def nerdgraph_results(*results: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": {"actor": {"account": {"nrql": {"results": list(results)}}}}}


async def test_the_tutorial_new_relic_metric() -> None:
    fake = FakeNerdGraph(nerdgraph_results({"apdex": 0.93}))
    seed = seed_document("07-metrics-newrelic.yaml")["metrics"][0]
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "nr"},
        "spec": {
            "args": [{"name": "service-name"}],
            "metrics": [{**seed, "successCondition": 'result["apdex"] >= 0.9'}],
        },
    }
    async with serve(fake.app) as url:
        profile = {
            "personal-api-key": "NRAK-TEST",
            "account-id": "1234567",
            "base-url-nerdgraph": f"{url}/graphql",
        }
        runs = Runs(
            [template], {"newRelic": NewRelicProvider(environ={})}, secrets={"my-newrelic-account": profile}
        )
        await runs.start("nr", args={"service-name": "o'shop"})
        run = await runs.completed()
    assert run.phase == AnalysisPhase.SUCCESSFUL, run.message
    measurement = run.result("newrelic-apdex").measurements[0]
    assert measurement.value == {"apdex": 0.93}
    request = fake.seen[0]
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert "actor { account(id: $accountId) { nrql(query: $nrql) { results } } }" in body["query"]
    assert body["variables"] == {
        "accountId": 1234567,
        "nrql": "SELECT apdex(duration) FROM Transaction WHERE appName = 'o\\'shop'",
    }
    assert measurement.query == body["variables"]["nrql"]


async def test_new_relic_results_errors_and_environment() -> None:
    fake = FakeNerdGraph(nerdgraph_results({"count": 1}, {"count": 2}))
    async with serve(fake.app) as url:
        env = {
            "NEWRELIC_API_KEY": "NRAK-TEST",
            "NEWRELIC_ACCOUNT_ID": "42",
            "NEWRELIC_BASE_URL_NERDGRAPH": f"{url}/graphql",
        }
        provider = NewRelicProvider(environ=env)
        context = MeasureContext(args={})
        facets = await provider.measure(
            metric("newRelic", {"query": "SELECT count(*) FROM T FACET x"}), context
        )
        assert facets.value == [{"count": 1}, {"count": 2}]
        assert fake.seen[-1]["body"]["variables"]["accountId"] == 42
        fake.answer = nerdgraph_results()
        assert (await provider.measure(metric("newRelic", {"query": "SELECT x FROM T"}), context)).value == []
        fake.answer = {"errors": [{"message": "NRQL Syntax Error: Error at line 1"}], "data": None}
        with pytest.raises(
            ProviderError, match=rf"New Relic NerdGraph at {url}/graphql reported: NRQL Syntax Error"
        ):
            await provider.measure(metric("newRelic", {"query": "SELEC x"}), context)
        fake.status = 502
        fake.answer = {"message": "bad gateway"}
        with pytest.raises(ProviderError, match="answered HTTP 502"):
            await provider.measure(metric("newRelic", {"query": "SELECT x FROM T"}), context)
        fake.status, fake.delay = 200, 30
        with pytest.raises(
            ProviderError, match=rf"New Relic NerdGraph at {url}/graphql did not answer within 1s"
        ):
            await provider.measure(metric("newRelic", {"query": "SELECT x FROM T", "timeout": 1}), context)
        fake.delay = 0
        wrong = NewRelicProvider(environ={**env, "NEWRELIC_API_KEY": "NRAK-WRONG"})
        with pytest.raises(ProviderError, match=r"refused the API key from the environment \(HTTP 401\)"):
            await wrong.measure(metric("newRelic", {"query": "SELECT x FROM T"}), context)
    with pytest.raises(ProviderError, match="no New Relic credentials: create the Secret 'newrelic'"):
        await NewRelicProvider(environ={}).measure(
            metric("newRelic", {"query": "SELECT x FROM T"}), MeasureContext(args={})
        )
