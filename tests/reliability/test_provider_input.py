"""Provider answers of any size, and args that cannot change where a request goes (12.4, 12.5).

Against a local aiohttp server that records what reached it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from meshshift.analysis.providers import PrometheusProvider, WebProvider
from meshshift.analysis.providers.http import MAX_BODY_BYTES
from meshshift.ports import ProviderError
from tests.analysis.helpers import measure, serve


class Upstream:
    """Answers big, chunked or nested JSON, and records every raw path it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_get("/big", self.big)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_route("*", "/api/v1/query", self.vector)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.app = app

    async def big(self, request: web.Request) -> web.Response:
        size = int(request.query["kb"]) * 1024
        return web.json_response({"pad": "x" * size, "value": 0.97})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(int(request.query["mb"])):
            await response.write(b" " * (1024 * 1024))
        await response.write(b"{}")
        await response.write_eof()
        return response

    async def vector(self, request: web.Request) -> web.Response:
        series = [
            {"metric": {"pod": f"pod-{i:05d}", "pad": "y" * 40}, "value": [1.0, "0.99"]} for i in range(4000)
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": series}})

    async def echo(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        return web.json_response({"path": request.raw_path})


@pytest.mark.parametrize("kb", [300, 2048])
async def test_a_large_answer_is_read_to_its_end(kb: int) -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        result = await measure(WebProvider(), "web", {"url": f"{url}/big?kb={kb}", "jsonPath": "{$.value}"})
    assert result.value == 0.97


async def test_a_large_prometheus_vector_is_read_whole() -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        result = await measure(PrometheusProvider(), "prometheus", {"address": url, "query": "up"})
    assert result.value == [0.99] * 4000


@pytest.mark.parametrize("path", ["/big?kb=9000", "/chunked?mb=9"])
async def test_an_answer_past_the_cap_is_a_clear_error(path: str) -> None:
    assert MAX_BODY_BYTES == 8 * 1024 * 1024
    upstream = Upstream()
    async with serve(upstream.app) as url:
        with pytest.raises(ProviderError, match=r"answered more than 8 MiB; refusing it"):
            await measure(WebProvider(), "web", {"url": url + path})


async def test_deeply_nested_json_is_a_provider_error() -> None:
    nested = "[" * 100_000 + "]" * 100_000

    async def deep(request: web.Request) -> web.Response:
        return web.Response(text=nested, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", deep)
    app.router.add_get("/deep", deep)
    async with serve(app) as url:
        with pytest.raises(ProviderError, match="nested too deeply"):
            await measure(WebProvider(), "web", {"url": url + "/deep"})
        with pytest.raises(ProviderError, match="nested too deeply"):
            await measure(PrometheusProvider(), "prometheus", {"address": url, "query": "up"})


HOSTILE_WEB_ARGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty-label-host", {"url": "http://{{args.h}}/check"}, ".evil.com", "is not a host"),
    ("double-dot-host", {"url": "http://{{args.h}}:80/check"}, "a..b", "is not a host"),
    ("base-url-empty-label", {"url": "{{args.h}}/x"}, "http://.evil.com", r"is not an http\(s\) base URL"),
    (
        "vertical-tab-header",
        {"url": "/check", "headers": [{"key": "X-Team", "value": "{{args.h}}"}]},
        "a\x0bb",
        "control character",
    ),
    (
        "form-feed-header",
        {"url": "/check", "headers": [{"key": "X-Team", "value": "{{args.h}}"}]},
        "a\x0cX-Admin: 1",
        "control character",
    ),
    (
        "header-name",
        {"url": "/check", "headers": [{"key": "{{args.h}}", "value": "1"}]},
        "X a",
        "is not a header name",
    ),
]


@pytest.mark.parametrize(
    ("options", "value", "reason"),
    [(o, v, r) for _, o, v, r in HOSTILE_WEB_ARGS],
    ids=[i for i, _, _, _ in HOSTILE_WEB_ARGS],
)
async def test_hostile_web_args_are_provider_errors(options: dict[str, Any], value: str, reason: str) -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        options = json.loads(json.dumps(options))
        if options["url"].startswith("/"):
            options["url"] = url + options["url"]
        with pytest.raises(ProviderError, match=reason):
            await measure(WebProvider(), "web", options, h=value)
    assert upstream.paths == []  # nothing was sent


PATH_TEMPLATE = "/v1/services/{{args.s}}/health"


@pytest.mark.parametrize(
    ("template", "value"),
    [
        (PATH_TEMPLATE, ".."),
        (PATH_TEMPLATE, "."),
        ("/v1/services/.{{args.s}}/health", "."),
        ("/v1/services/{{args.s}}{{args.t}}/health", "."),
        ("/v1/services/{{args.s}}", ".."),
        ("/v1/services/{{args.s}}?x=1", ".."),
        ("/v1/services/{{args.s}}#top", ".."),
    ],
)
async def test_a_path_arg_is_never_a_dot_segment(template: str, value: str) -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        with pytest.raises(ProviderError, match=r"arg '[st]' .* makes the path segment '\.{1,2}'"):
            await measure(WebProvider(), "web", {"url": url + template}, s=value, t=value)
    assert upstream.paths == []


@pytest.mark.parametrize(
    ("value", "raw_path"),
    [
        ("a/../../admin", "/v1/services/a%2F..%2F..%2Fadmin/health"),
        ("%2e%2e", "/v1/services/%252e%252e/health"),
        ("...", "/v1/services/.../health"),
        ("..a", "/v1/services/..a/health"),
        ("my app", "/v1/services/my%20app/health"),
    ],
)
async def test_a_path_arg_stays_in_its_segment(value: str, raw_path: str) -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        result = await measure(
            WebProvider(), "web", {"url": url + PATH_TEMPLATE, "jsonPath": "{$.path}"}, s=value
        )
    assert upstream.paths == [raw_path] and result.value == raw_path


async def test_dots_in_the_query_and_literal_dot_segments_are_left_alone() -> None:
    upstream = Upstream()
    async with serve(upstream.app) as url:
        await measure(WebProvider(), "web", {"url": url + "/v1/health?service={{args.s}}"}, s="..")
        await measure(WebProvider(), "web", {"url": url + "/v1/x/../{{args.s}}"}, s="health")
    assert upstream.paths == ["/v1/health?service=..", "/v1/health"]  # the template's own `..` is its own
