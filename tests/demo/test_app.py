"""The demo app: its answers, its faults, and the metrics the tutorial's queries read."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from meshshift.demo.app import AppConfig, DemoApp, build_parser

Client = TestClient[web.Request, web.Application]
ClientFor = Callable[[AppConfig], Awaitable[Client]]


@pytest_asyncio.fixture
async def client_for() -> AsyncIterator[ClientFor]:
    clients: list[Client] = []

    async def make(config: AppConfig) -> Client:
        client: Client = TestClient(TestServer(DemoApp(config, rng=random.Random(7)).build()))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_answers_carry_the_version_and_are_counted(client_for: ClientFor) -> None:
    client = await client_for(AppConfig(version="canary", service="shop"))
    for path in ("/", "/api/orders", "/checkout?x=1"):
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["X-Version"] == "canary"
        assert await response.text() == "hello from canary\n"
    assert (await client.get("/healthz")).status == 200  # not counted
    text = await (await client.get("/metrics")).text()
    assert samples(text, "http_requests_total") == {
        (("service", "shop"), ("status", "200"), ("version", "canary")): 3.0,
        # The 500 series is there from the start, at 0, so rate() sees the first error.
        (("service", "shop"), ("status", "500"), ("version", "canary")): 0.0,
    }
    assert samples(text, "http_request_duration_seconds_count") == {
        (("service", "shop"), ("version", "canary")): 3.0
    }
    buckets = samples(text, "http_request_duration_seconds_bucket")
    assert {dict(labels)["le"] for labels in buckets} >= {"0.3", "0.5", "+Inf"}


async def test_error_rate_answers_500_and_labels_it(client_for: ClientFor) -> None:
    always = await client_for(AppConfig(version="bad", error_rate=1.0))
    statuses = [(await always.get("/")).status for _ in range(20)]
    assert statuses == [500] * 20
    text = await (await always.get("/metrics")).text()
    assert samples(text, "http_requests_total") == {
        (("service", "demo"), ("status", "200"), ("version", "bad")): 0.0,
        (("service", "demo"), ("status", "500"), ("version", "bad")): 20.0,
    }

    some = await client_for(AppConfig(version="flaky", error_rate=0.3))
    failed = sum([(await some.get("/")).status == 500 for _ in range(400)])
    assert 60 <= failed <= 180  # 30 % of 400, far from 0 and from all


async def test_latency_is_added_and_measured(client_for: ClientFor) -> None:
    client = await client_for(AppConfig(version="slow", latency_ms=200))
    for _ in range(3):
        assert (await client.get("/")).status == 200
    text = await (await client.get("/metrics")).text()
    total = samples(text, "http_request_duration_seconds_sum")[(("service", "demo"), ("version", "slow"))]
    assert total >= 3 * 0.2 * 0.9  # each waited at least its latency, less the 10 % jitter
    below = samples(text, "http_request_duration_seconds_bucket")[
        (("le", "0.1"), ("service", "demo"), ("version", "slow"))
    ]
    assert below == 0


def test_the_command_line_checks_its_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["--version", "canary", "--error-rate", "0.25", "--latency-ms", "30", "--port", "9"]
    )
    assert (args.version, args.error_rate, args.latency_ms, args.port) == ("canary", 0.25, 30.0, 9)
    with pytest.raises(SystemExit):
        parser.parse_args(["--version", "x", "--error-rate", "1.5"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--version", "x", "--latency-ms", "-1"])


async def test_beyond_overload_rps_in_the_last_second_it_answers_500(client_for: ClientFor) -> None:
    # A revision that holds a tester's few requests but breaks under the users' load.
    app = DemoApp(AppConfig(version="canary", overload_rps=3))
    arrivals = [0.0, 0.1, 0.2, 0.3, 0.4, 1.25, 1.28, 2.5]  # seconds
    assert [app._overloaded(t) for t in arrivals] == [False] * 3 + [True] * 2 + [False, True, False]
    assert not any(DemoApp(AppConfig(version="stable"))._overloaded(0.0) for _ in range(50))
    # Served: beyond the limit the answers are HTTP 500 (the load is all at once here).
    client = await client_for(AppConfig(version="canary", overload_rps=0))
    response = await client.get("/")
    assert (response.status, await response.text()) == (500, "error from canary\n")
    args = build_parser().parse_args(["--version=canary", "--overload-rps=15"])
    assert args.overload_rps == 15.0
