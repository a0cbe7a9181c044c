"""Draw the README's backtest plot, and print how long the backtest took.

    .venv/bin/python -m tests.backtest.readme_plot [OUTPUT.png]   (default docs/backtest.png)

It loads the synthetic week of tests/backtest/history.py into a throwaway Prometheus (Debian's,
through promtool, as the tests do), then runs, as a user would:

    meshshift analyze tests/data/seed/02-template-success-rate.yaml --arg service-name=myapp \\
        --prometheus-address URL --from 2026-11-03T00:00:00Z --to 2026-11-05T00:00:00Z \\
        --every 2h --duration 1h --plot OUTPUT.png

two days holding blip A (a false rollback at 06:15 on the 3rd) and blip B (three failed
measurements on the 4th, within failureLimit 3), with the tutorial's success-rate template.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from meshshift.demo.prometheus import prometheus_server
from tests.backtest.history import write_tsdb
from tests.support.command import meshshift

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "tests" / "data" / "seed" / "02-template-success-rate.yaml"
DEFAULT_OUTPUT = ROOT / "docs" / "backtest.png"


async def main(output: Path) -> float:
    """The backtest's wall time, in seconds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshshift-backtest-") as tmp:
        workdir = Path(tmp)
        await write_tsdb(workdir / "data")
        async with prometheus_server([], workdir=workdir, retention="3650d") as prometheus:
            await prometheus.wait_for_data('count_over_time(http_requests_total{service="myapp"}[40d])')
            started = time.perf_counter()
            result = await meshshift(
                "analyze",
                TEMPLATE,
                "--arg",
                "service-name=myapp",
                "--prometheus-address",
                prometheus.url,
                "--from",
                "2026-11-03T00:00:00Z",
                "--to",
                "2026-11-05T00:00:00Z",
                "--every",
                "2h",
                "--duration",
                "1h",
                "--plot",
                output,
            )
            elapsed = time.perf_counter() - started
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    return elapsed


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    seconds = asyncio.run(main(target))
    measurements = 24 * 61 * 2  # 24 replays of an hour, a measurement a minute of each of 2 metrics
    print(f"{seconds:.1f} s for 24 replays ({measurements} measurements, {measurements / seconds:.0f}/s)")
    print(f"{target}: {target.stat().st_size} bytes")
