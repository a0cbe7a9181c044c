"""The demo service: `python -m meshshift.demo.app --version canary --error-rate 0.2`.

Every request (any path but /metrics and /healthz) answers `hello from <version>` with an
`X-Version` header, after `--latency-ms`, and fails with HTTP 500 at `--error-rate`, and also
for every request beyond `--overload-rps` in the last second (a version that holds a few
testers' requests but breaks under production load). It serves the metrics the tutorial's
queries read, unchanged:

    http_requests_total{service, version, status}
    http_request_duration_seconds_bucket{service, version, le}  (and _sum, _count)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

VERSION_HEADER = "X-Version"
# Prometheus' defaults plus 0.3: the tutorial's latency threshold (500 ms) falls between buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class AppConfig:
    version: str
    service: str = "demo"
    error_rate: float = 0.0
    latency_ms: float = 0.0
    jitter: float = 0.1  # latency varies by +-10 %, so a histogram has some spread
    overload_rps: float | None = None  # beyond this many requests in the last second, HTTP 500


class DemoApp:
    def __init__(self, config: AppConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.recent: deque[float] = deque()  # arrival times of the last second's requests
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests served, by outcome.",
            ["service", "version", "status"],
            registry=self.registry,
        )
        # Both outcomes exist from the start, at 0 (Prometheus' advice for labelled counters):
        # rate() ignores a series until its second sample, so the first 500s of a series born
        # mid-analysis would read as a perfect success rate.
        for status in ("200", "500"):
            self.requests.labels(config.service, config.version, status)
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve an HTTP request.",
            ["service", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/{tail:.*}", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        config = self.config
        overloaded = self._overloaded(time.monotonic())
        if config.latency_ms > 0:
            spread = 1 + self.rng.uniform(-config.jitter, config.jitter)
            await asyncio.sleep(config.latency_ms * spread / 1000)
        failed = overloaded or self.rng.random() < config.error_rate
        status = 500 if failed else 200
        text = f"{'error' if failed else 'hello'} from {config.version}\n"
        self.requests.labels(config.service, config.version, str(status)).inc()
        self.duration.labels(config.service, config.version).observe(time.perf_counter() - started)
        return web.Response(status=status, text=text, headers={VERSION_HEADER: config.version})

    def _overloaded(self, now: float) -> bool:
        limit = self.config.overload_rps
        if limit is None:
            return False
        self.recent.append(now)
        while self.recent and self.recent[0] < now - 1.0:
            self.recent.popleft()
        return len(self.recent) > limit

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={VERSION_HEADER: self.config.version})


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meshshift.demo.app", description=__doc__.split("\n")[0])
    parser.add_argument("--version", required=True, help="the version label (e.g. stable, canary)")
    parser.add_argument("--service", default="demo", help="the service label (default: demo)")
    parser.add_argument("--error-rate", type=_rate, default=0.0, help="share of requests answered 500")
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0, help="added latency per request")
    parser.add_argument(
        "--overload-rps", type=_non_negative, default=None, help="answer 500 beyond this many requests/s"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = AppConfig(
        version=args.version,
        service=args.service,
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        overload_rps=args.overload_rps,
    )
    print(f"demo app {config.version} on http://{args.host}:{args.port}/", flush=True)
    web.run_app(DemoApp(config).build(), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
