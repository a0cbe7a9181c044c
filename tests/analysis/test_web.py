"""The web provider against a local aiohttp server that checks what it receives."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from meshshift.analysis.providers import WebProvider
from meshshift.analysis.providers.web import display_url, to_jsonpath
from meshshift.ports import ProviderError
from meshshift.spec.model import AnalysisPhase
from tests.analysis.helpers import Runs, measure, seed_document, serve

# Async tests run in the shared stack's loop (conftest.py); the plain ones need no loop.
in_stack_loop = pytest.mark.asyncio(loop_scope="package")


class HealthApi:
    """Records requests; answers like the tutorial's health API."""

    def __init__(self) -> None:
        self.requests: list[tuple[web.Request, bytes]] = []
        app = web.Application()
        app.router.add_get("/check", self.check)
        app.router.add_post("/query", self.query)
        app.router.add_get("/broken", self.broken)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/text", self.text)
        self.app = app

    async def check(self, request: web.Request) -> web.Response:
        self.requests.append((request, b""))
        service = request.query["service"]
        status = "healthy" if service == "myapp" else "degraded"
        return web.json_response(
            {"health": {"status": status, "score": 0.97, "checks": [1, 2]}, "service": service}
        )

    async def query(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request, body))
        return web.json_response(
            {"data": {"value": 42, "echo": json.loads(body) if body.startswith(b"{") else None}}
        )

    async def broken(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream overloaded")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    async def text(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")


@in_stack_loop
async def test_the_tutorial_web_metric_reads_the_json_path() -> None:
    api = HealthApi()
    seed = seed_document("08-metrics-web.yaml")  # a bare metrics list: wrap it in a template
    seed["metrics"][0]["provider"]["web"]["url"] = seed["metrics"][0]["provider"]["web"]["url"].replace(
        "https://my-health-api.com", "{{args.base}}"
    )
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "health"},
        "spec": {"args": [{"name": "service-name"}, {"name": "base"}], "metrics": seed["metrics"]},
    }
    async with serve(api.app) as url:
        for service, phase in (("myapp", AnalysisPhase.SUCCESSFUL), ("other", AnalysisPhase.FAILED)):
            runs = Runs([template], {"web": WebProvider()})
            await runs.start("health", args={"service-name": service, "base": url})
            run = await runs.completed()
            measurement = run.result("custom-health-check").measurements[0]
            assert (run.phase, measurement.phase) == (phase, phase)
            assert measurement.value == ("healthy" if service == "myapp" else "degraded")
            assert measurement.query == f"GET {url}/check?service={service}"
    assert [r.query["service"] for r, _ in api.requests] == ["myapp", "other"]


@in_stack_loop
async def test_post_with_headers_and_a_json_body() -> None:
    api = HealthApi()
    async with serve(api.app) as url:
        options = {
            "url": f"{url}/query",
            "method": "POST",
            "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
            "jsonBody": {"service": "{{args.service}}", "window": 5},
            "jsonPath": "{$.data.value}",
            "timeoutSeconds": 5,
        }
        result = await measure(WebProvider(), "web", options, token="t0k", service='my"app')
        assert result.value == 42
        request, body = api.requests[0]
        assert request.method == "POST"
        assert request.headers["Authorization"] == "Bearer t0k"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"service": 'my"app', "window": 5}

        text_body = {
            "url": f"{url}/query",
            "method": "POST",
            "body": '{"q": "{{args.q}}"}',
            "jsonPath": "{.data.echo}",
        }
        result = await measure(WebProvider(), "web", text_body, q='x", "admin": "1')
        assert result.value == {"q": 'x", "admin": "1'}


@in_stack_loop
async def test_json_values_of_any_type_become_the_result() -> None:
    api = HealthApi()
    async with serve(api.app) as url:
        provider = WebProvider()
        assert (
            await measure(
                provider, "web", {"url": f"{url}/check?service=myapp", "jsonPath": "{$.health.score}"}
            )
        ).value == 0.97
        assert (
            await measure(
                provider, "web", {"url": f"{url}/check?service=myapp", "jsonPath": "{$.health.checks}"}
            )
        ).value == [1, 2]
        whole = (await measure(provider, "web", {"url": f"{url}/check?service=myapp"})).value
        assert whole["service"] == "myapp"
        assert (await measure(provider, "web", {"url": f"{url}/text"})).value == "OK"


@in_stack_loop
async def test_failures_are_errors_with_the_url() -> None:
    api = HealthApi()
    async with serve(api.app) as url:
        provider = WebProvider()
        with pytest.raises(
            ProviderError, match=rf"web GET {url}/broken answered HTTP 503: 'upstream overloaded'"
        ):
            await measure(provider, "web", {"url": f"{url}/broken"})
        with pytest.raises(
            ProviderError, match=r"jsonPath '\{\$\.health\.nope\}' matched nothing in the answer of GET"
        ):
            await measure(
                provider, "web", {"url": f"{url}/check?service=myapp", "jsonPath": "{$.health.nope}"}
            )
        with pytest.raises(ProviderError, match=rf"web GET {url}/slow did not answer within 1s"):
            await measure(provider, "web", {"url": f"{url}/slow", "timeoutSeconds": 1})


@in_stack_loop
async def test_a_hanging_server_is_an_error_measurement_not_a_hang() -> None:
    api = HealthApi()
    metric = {"name": "slow", "provider": {"web": {"url": "{{args.base}}/slow", "timeoutSeconds": 60}}}
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "slow"},
        "spec": {"args": [{"name": "base"}], "metrics": [metric]},
    }
    async with serve(api.app) as url:
        runs = Runs([template], {"web": WebProvider()}, measurement_timeout=0.5)  # the executor's cut-off
        await runs.start("slow", args={"base": url})
        run = await runs.wait(lambda run: bool(run.results[0].measurements))
        await runs.close()
    measurement = run.result("slow").measurements[0]
    assert measurement.phase == AnalysisPhase.ERROR
    assert measurement.message == "web did not answer within 0.5s"


def test_argo_json_paths_translate() -> None:
    assert to_jsonpath("{$.health.status}") == "$.health.status"
    assert to_jsonpath("{.items[0].x}") == "$.items[0].x"
    assert to_jsonpath("{$}") == "$"


def test_credentials_in_query_strings_are_not_recorded() -> None:
    assert display_url("https://h/x?service=a&api_key=s3cret&token=t") == (
        "https://h/x?service=a&api_key=REDACTED&token=REDACTED"
    )
