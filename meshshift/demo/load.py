"""A steady load: `python -m meshshift.demo.load --url http://127.0.0.1:10000/ --rate 50`.

Requests start on a fixed schedule (an open loop: a slow answer does not slow the
rate down, as with real users), each counted under the version that answered it (the
`X-Version` header the demo app sets). A request that fails (HTTP 5xx, or no answer) is
counted as failed. The recent answers are kept to tell the canary's share right now.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from meshshift.demo.app import VERSION_HEADER

NO_ANSWER = "no-answer"  # the request failed before any version answered
UNKNOWN = "unknown"  # an answer without a version header (e.g. the proxy's own 503)
RECENT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    at: float
    version: str
    status: int  # 0 when there was no answer
    latency: float

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


@dataclass
class LoadStats:
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # version -> when its first request was sent
    recent: deque[Answer] = field(default_factory=deque)
    dropped: int = 0  # not sent: too many requests in flight

    def record(self, answer: Answer) -> None:
        self.requests[answer.version] += 1
        if answer.failed:
            self.failures[answer.version] += 1
        self.first_seen.setdefault(answer.version, answer.at - answer.latency)
        self.recent.append(answer)
        while self.recent and self.recent[0].at < answer.at - RECENT_SECONDS:
            self.recent.popleft()

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def share(self, version: str, *, since: float) -> float | None:
        """The share of answers from `version` among those at or after `since` (None: none)."""
        answers = [a for a in self.recent if a.at >= since]
        if not answers:
            return None
        return sum(1 for a in answers if a.version == version) / len(answers)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "failed": dict(self.failures),
            "total": self.total,
            "totalFailed": self.failed,
            "dropped": self.dropped,
        }


class LoadGenerator:
    """Sends `rate` requests per second to `url` until stopped."""

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        headers: Mapping[str, str] | None = None,
        max_in_flight: int = 200,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.url = url
        self.rate = rate
        self.headers = dict(headers or {})
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.clock = clock
        self.stats = LoadStats()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, duration: float | None = None) -> LoadStats:
        """Send on schedule for `duration` seconds (None: until cancelled), then wait for answers."""
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            started = self.clock()
            sent = 0
            try:
                while duration is None or self.clock() - started < duration:
                    if len(self._in_flight) >= self.max_in_flight:
                        self.stats.dropped += 1
                    else:
                        task = asyncio.create_task(self._one(session))
                        self._in_flight.add(task)
                        task.add_done_callback(self._in_flight.discard)
                    sent += 1
                    # The schedule is absolute: a late wake-up does not lower the rate.
                    await asyncio.sleep(max(0.0, started + sent / self.rate - self.clock()))
            finally:
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight), timeout=self.request_timeout)
                for task in list(self._in_flight):
                    task.cancel()
        return self.stats

    async def _one(self, session: aiohttp.ClientSession) -> None:
        started = self.clock()
        try:
            async with session.get(self.url, headers=self.headers) as response:
                await response.read()
                version = response.headers.get(VERSION_HEADER, UNKNOWN)
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            version, status = NO_ANSWER, 0
        now = self.clock()
        self.stats.record(Answer(now, version, status, now - started))


@contextlib.asynccontextmanager
async def running_load(generator: LoadGenerator) -> AsyncIterator[LoadGenerator]:
    """Send load while the block runs."""
    task = asyncio.create_task(generator.run(), name=f"load:{generator.url}")
    try:
        yield generator
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def count_versions(
    url: str, requests: int, *, headers: Mapping[str, str] | None = None, concurrency: int = 20
) -> Counter[str]:
    """Send `requests` requests as fast as allowed; the versions that answered them."""
    counts: Counter[str] = Counter()
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one() -> None:
            async with limit:
                try:
                    async with session.get(url, headers=dict(headers or {})) as response:
                        await response.read()
                        counts[response.headers.get(VERSION_HEADER, UNKNOWN)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts[NO_ANSWER] += 1

        await asyncio.gather(*(one() for _ in range(requests)))
    return counts


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshshift.demo.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--header", type=_header, action="append", default=[], metavar="NAME:VALUE")
    args = parser.parse_args(argv)
    generator = LoadGenerator(args.url, rate=args.rate, headers=dict(args.header))
    stats = asyncio.run(generator.run(args.duration))
    print(json.dumps(stats.as_dict(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
