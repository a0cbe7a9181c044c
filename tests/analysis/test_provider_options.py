"""Argo's provider options on the prometheus and web providers: `rangeQuery`, and
`authentication` (`basicAuth`, `oauth2` client credentials) against a real Prometheus behind
an authenticating proxy and a local OAuth2 token endpoint; `sigv4` is a lint error.

The proxy stands for what guards a Prometheus in production (Prometheus itself checks no
bearer token); the token endpoint for the OAuth2 server (docs/analysis/prometheus.md and
docs/analysis/web.md of Argo Rollouts).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from meshshift.analysis.providers import PrometheusProvider, WebProvider
from meshshift.ports import ProviderError
from meshshift.spec.errors import Findings
from meshshift.spec.templates import read_template
from tests.analysis.helpers import measure, serve
from tests.analysis.stack import Stack

ON_THE_SHARED_LOOP = pytest.mark.asyncio(loop_scope="package")  # the package fixtures live on it

CLIENT_ID, CLIENT_SECRET, TOKEN = "my-client-id", "s3cr3t", "token-123"


@dataclass
class Gateway:
    """An OAuth2 token endpoint, and a proxy to Prometheus that wants a token or a password."""

    prometheus: str
    seen: list[str] = field(default_factory=list)  # Authorization headers the proxy got
    grants: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_route("*", "/prom/{path:.*}", self.proxy)
        app.router.add_get("/web/measure", self.web_measure)
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.grants.append({k: str(v) for k, v in form.items()})
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if form.get("grant_type") != "client_credentials" or request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600})

    def allowed(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        self.seen.append(header)
        basic = "Basic " + base64.b64encode(b"reader:pa55").decode()
        return header in (f"Bearer {TOKEN}", basic)

    async def proxy(self, request: web.Request) -> web.Response:
        if not self.allowed(request):
            return web.Response(status=401, text="unauthorized")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.prometheus}/api/v1/{request.match_info['path'].removeprefix('api/v1/')}",
                data=await request.post(),
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    async def web_measure(self, request: web.Request) -> web.Response:
        if not self.allowed(request):
            return web.Response(status=401, text="unauthorized")
        return web.json_response({"data": {"ok": True}})


@pytest_asyncio.fixture(loop_scope="package")
async def gateway(stack: Stack) -> AsyncIterator[tuple[Gateway, str]]:
    gate = Gateway(stack.prometheus.url)
    async with serve(gate.app()) as url:
        yield gate, url


OAUTH2 = {"tokenUrl": "", "clientId": CLIENT_ID, "clientSecret": "{{args.oauthSecret}}", "scopes": ["read"]}


@ON_THE_SHARED_LOOP
async def test_range_query_returns_every_sample_of_the_range(stack: Stack) -> None:
    # docs/analysis/prometheus.md, "Range query": start/end in expr, step a duration.
    provider = PrometheusProvider(environ={})
    options = {
        "address": stack.prometheus.url,
        "query": 'up{job="app"}',
        "rangeQuery": {"start": 'now() - duration("{{args.lookback}}")', "end": "now()", "step": "1s"},
    }
    result = await measure(provider, "prometheus", options, lookback="5s")
    assert isinstance(result.value, list) and len(result.value) >= 2  # one sample a second, since data began
    assert set(result.value) == {1.0}
    instant = await measure(
        provider, "prometheus", {"address": stack.prometheus.url, "query": 'up{job="app"}'}
    )
    assert instant.value == [1.0]


@ON_THE_SHARED_LOOP
async def test_prometheus_oauth2_client_credentials(gateway: tuple[Gateway, str]) -> None:
    gate, url = gateway
    provider = PrometheusProvider(environ={})
    options = {
        "address": f"{url}/prom",
        "query": "vector(7)",
        "authentication": {"oauth2": {**OAUTH2, "tokenUrl": f"{url}/token"}},
    }
    result = await measure(provider, "prometheus", options, oauthSecret=CLIENT_SECRET)
    assert result.value == [7.0]
    assert gate.seen[-1] == f"Bearer {TOKEN}"
    assert gate.grants[-1] == {"grant_type": "client_credentials", "scope": "read"}


@ON_THE_SHARED_LOOP
async def test_prometheus_basic_auth(gateway: tuple[Gateway, str]) -> None:
    gate, url = gateway
    gate.seen.clear()
    provider = PrometheusProvider(environ={})
    options = {
        "address": f"{url}/prom",
        "query": "vector(3)",
        "authentication": {"basicAuth": {"username": "{{ args.user }}", "password": "{{ args.password }}"}},
    }
    result = await measure(provider, "prometheus", options, user="reader", password="pa55")
    assert result.value == [3.0]
    assert gate.seen == ["Basic " + base64.b64encode(b"reader:pa55").decode()]
    with pytest.raises(ProviderError, match="HTTP 401"):
        await measure(provider, "prometheus", options, user="reader", password="wrong")


@ON_THE_SHARED_LOOP
async def test_web_oauth2_client_credentials(gateway: tuple[Gateway, str]) -> None:
    # docs/analysis/web.md: the web provider with authentication.oauth2.
    gate, url = gateway
    options = {
        "url": f"{url}/web/measure",
        "jsonPath": "{$.data.ok}",
        "authentication": {"oauth2": {**OAUTH2, "tokenUrl": f"{url}/token"}},
    }
    result = await measure(WebProvider(), "web", options, oauthSecret=CLIENT_SECRET)
    assert result.value is True
    assert gate.seen[-1] == f"Bearer {TOKEN}"


@ON_THE_SHARED_LOOP
async def test_a_refused_client_secret_is_an_error_that_does_not_show_it(
    gateway: tuple[Gateway, str],
) -> None:
    _, url = gateway
    options = {
        "url": f"{url}/web/measure",
        "authentication": {"oauth2": {**OAUTH2, "tokenUrl": f"{url}/token"}},
    }
    with pytest.raises(ProviderError, match=r"token endpoint .* answered HTTP 401") as raised:
        await measure(WebProvider(), "web", options, oauthSecret="not-the-secret")
    assert "not-the-secret" not in str(raised.value)


def test_sigv4_is_a_lint_error_never_an_error_at_run_time() -> None:
    findings = Findings()
    read_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "amp"},
            "spec": {
                "metrics": [
                    {
                        "name": "m",
                        "provider": {
                            "prometheus": {
                                "address": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1",
                                "query": "up",
                                "authentication": {"sigv4": {"region": "us-east-1"}},
                            }
                        },
                    }
                ]
            },
        },
        findings,
    )
    errors = [(issue.path, issue.reason) for issue in findings.issues if issue.severity == "error"]
    assert len(errors) == 1
    assert errors[0][0] == "spec.metrics[0].provider.prometheus.authentication.sigv4"
    assert "sigv4 (AWS request signing, for Amazon Managed Prometheus) is not supported" in errors[0][1]


def test_range_query_times_are_checked_by_lint() -> None:
    findings = Findings()
    read_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "r"},
            "spec": {
                "metrics": [
                    {
                        "name": "m",
                        "provider": {
                            "prometheus": {
                                "address": "http://p:9090",
                                "query": "up",
                                "rangeQuery": {"start": "yesterday", "end": "now()", "step": "1m"},
                            }
                        },
                    }
                ]
            },
        },
        findings,
    )
    assert [(i.path, i.reason) for i in findings.issues] == [
        (
            "spec.metrics[0].provider.prometheus.rangeQuery.start",
            '"yesterday" is not a time meshshift can evaluate; write now(), or now() - duration("5m") '
            "(or + a duration)",
        )
    ]
