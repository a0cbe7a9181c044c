"""How long one Prometheus measurement takes: query sent, answer parsed, condition assessed.

Starts a throwaway Prometheus (Debian's /usr/bin/prometheus) scraping the test exporter,
waits until rate() has data, then takes 20 measurements of the tutorial's success-rate
query (one PromQL evaluation over two 5m rates) through PrometheusProvider + assess_value,
one after the other, and prints the median round trip.

Run: .venv/bin/python bench/providers.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from meshshift.analysis.assess import assess_value
from meshshift.analysis.providers import PrometheusProvider
from meshshift.demo.exporter import ServiceTraffic, TrafficExporter, VersionTraffic
from meshshift.demo.prometheus import ScrapeTarget, prometheus_server
from meshshift.logs import configure_logging
from meshshift.ports import MeasureContext
from meshshift.spec.model import Metric, ProviderSpec

ROUNDS = 20
QUERY = """\
sum(rate(http_requests_total{service="{{args.service-name}}", status!~"5.."}[5m]))
/
sum(rate(http_requests_total{service="{{args.service-name}}"}[5m]))
"""


async def main() -> None:
    exporter = TrafficExporter(
        {"myapp": ServiceTraffic({"stable": VersionTraffic(50, 1), "canary": VersionTraffic(50, 1)})}
    )
    with tempfile.TemporaryDirectory(prefix="meshshift-bench-") as tmp:
        async with (
            exporter.serving() as address,
            prometheus_server([ScrapeTarget("app", address)], workdir=Path(tmp)) as prometheus,
        ):
            await prometheus.wait_for_data('rate(http_requests_total{service="myapp"}[5s])')
            provider = PrometheusProvider(default_address=prometheus.url, environ={})
            metric = Metric(
                name="success-rate",
                provider=ProviderSpec("prometheus", {"query": QUERY}),
                success_condition="result[0] >= 0.95",
            )
            context = MeasureContext(args={"service-name": "myapp"})
            timings = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                result = await provider.measure(metric, context)
                phase, _ = assess_value(metric, result.value, query=result.query)
                timings.append(time.perf_counter() - started)
                assert phase.value == "Successful", (phase, result)
    print(
        f"prometheus measurement round trip: median {statistics.median(timings) * 1000:.2f} ms "
        f"(min {min(timings) * 1000:.2f}, max {max(timings) * 1000:.2f}, {ROUNDS} rounds)"
    )


if __name__ == "__main__":
    configure_logging("console", "WARNING")  # the figures, not the proxies' chatter
    asyncio.run(main())
