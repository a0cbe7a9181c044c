"""The load generator: a fixed schedule, answers counted per version, failures counted."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web

from meshshift.demo.app import AppConfig, DemoApp
from meshshift.demo.load import NO_ANSWER, Answer, LoadGenerator, LoadStats, count_versions
from meshshift.processes import free_port


@pytest_asyncio.fixture
async def flaky_app() -> AsyncIterator[str]:
    port = free_port()
    runner = web.AppRunner(DemoApp(AppConfig("canary", error_rate=0.5), rng=random.Random(3)).build())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def test_requests_follow_the_rate_and_are_counted_per_version(flaky_app: str) -> None:
    stats = await LoadGenerator(flaky_app, rate=200, max_in_flight=50).run(duration=1.0)
    # The schedule sends one request per 1/rate seconds: never more than rate * duration (+ the first).
    assert 0 < stats.total <= 201
    assert set(stats.requests) == {"canary"}
    assert 0 < stats.failures["canary"] < stats.requests["canary"]  # about half answered 500
    assert stats.dropped == 0
    assert "canary" in stats.first_seen


async def test_no_answer_is_a_failure() -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    stats = await LoadGenerator(closed, rate=50).run(duration=0.3)
    assert stats.total > 0
    assert stats.requests == stats.failures == {NO_ANSWER: stats.total}


async def test_count_versions_sends_exactly_that_many(flaky_app: str) -> None:
    counts = await count_versions(flaky_app, 123, concurrency=7)
    assert counts == {"canary": 123}


def test_share_counts_only_recent_answers() -> None:
    stats = LoadStats()
    for at, version in [(1.0, "stable"), (2.0, "canary"), (3.0, "stable"), (3.5, "canary"), (4.0, "canary")]:
        stats.record(Answer(at, version, 200, 0.01))
    assert stats.share("canary", since=3.0) == 2 / 3
    assert stats.share("canary", since=0.0) == 3 / 5
    assert stats.share("canary", since=9.0) is None
    assert stats.first_seen == {"stable": 0.99, "canary": 1.99}
