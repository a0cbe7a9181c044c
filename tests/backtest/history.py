"""A synthetic week of the tutorial's metrics, with known blips and one incident, for backtests.

`myapp` serves 600 requests a minute, every one in 50 ms (so the tutorial's p95 latency is
97.5 ms: healthy all week). Its error share per minute is 0.5 % (3 errors), except:

| when (UTC)                   | what                                  | per minute          |
|------------------------------|---------------------------------------|---------------------|
| 2026-11-03 06:10 .. 06:20    | blip A: a real false rollback          | 90 errors (15 %)    |
| 2026-11-04 18:10 .. 18:13    | blip B: tolerated by failureLimit 3    | 60 errors (10 %)    |
| 2026-11-05 12:01 .. 12:10    | gap C: no scrape (the counters go on) | no samples          |
| 2026-11-07 12:00 .. 13:00    | the incident                          | 120 errors (20 %)   |

"Minute m" is the minute ending at m: the counters at m minus the counters at m - 1.

One sample a minute, on the minute, from an hour before the week (so that the first 5m window
is full) to its end. Written as OpenMetrics and loaded with `promtool tsdb create-blocks-from
openmetrics` into a data folder a real Prometheus then serves.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path

from meshshift.spec.durations import parse_instant

WEEK_START = parse_instant("2026-11-02T00:00:00Z", now=0)  # a Monday
WEEK_END = WEEK_START + 7 * 86400
DATA_START = WEEK_START - 3600
REQUESTS_PER_MINUTE = 600
HEALTHY_ERRORS = 3
LATENCY_BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")  # every request lands in le=0.1


def at(text: str) -> float:
    return parse_instant(text, now=0)


BLIP_A = (at("2026-11-03T06:10:00Z"), at("2026-11-03T06:20:00Z"), 90)
BLIP_B = (at("2026-11-04T18:10:00Z"), at("2026-11-04T18:13:00Z"), 60)
GAP_C = (at("2026-11-05T12:01:00Z"), at("2026-11-05T12:10:00Z"))
INCIDENT = (at("2026-11-07T12:00:00Z"), at("2026-11-07T13:00:00Z"), 120)


def errors_in_minute(end: float) -> int:
    """The 5xx answers of the minute ending at `end`."""
    for start, stop, errors in (BLIP_A, BLIP_B, INCIDENT):
        if start < end <= stop:
            return errors
    return HEALTHY_ERRORS


def sampled(moment: float) -> bool:
    return not GAP_C[0] <= moment <= GAP_C[1]


def minutes() -> Iterator[float]:
    moment = DATA_START
    while moment <= WEEK_END:
        yield moment
        moment += 60


def openmetrics(first: float = DATA_START, last: float = WEEK_END) -> str:
    """The samples from `first` to `last` (both included) as OpenMetrics, each series in time
    order, one after the other."""
    good: list[tuple[float, int]] = []
    bad: list[tuple[float, int]] = []
    total_good = total_bad = 0
    for moment in minutes():
        if moment > DATA_START:
            errors = errors_in_minute(moment)
            total_bad += errors
            total_good += REQUESTS_PER_MINUTE - errors
        if sampled(moment) and first <= moment <= last:
            good.append((moment, total_good))
            bad.append((moment, total_bad))
    lines = ["# TYPE http_requests_total unknown"]
    for status, points in (("200", good), ("500", bad)):
        series = f'http_requests_total{{service="myapp",status="{status}"}}'
        lines.extend(f"{series} {v} {t:.0f}" for t, v in points)
    lines.append("# TYPE http_request_duration_seconds_bucket unknown")
    for le in LATENCY_BUCKETS:
        lines.extend(
            f'http_request_duration_seconds_bucket{{service="myapp",le="{le}"}} '
            f"{0 if le == '0.05' else g + b} {t:.0f}"
            for (t, g), (_, b) in zip(good, bad, strict=True)
        )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


async def write_tsdb(folder: Path) -> None:
    """The week as TSDB blocks in `folder` (a Prometheus data folder), through promtool.

    One OpenMetrics file per day: promtool (2.42) reads its whole input once for every 2-hour
    block it writes, so one file for the week would be read 85 times."""
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a test's setup, before anything runs)
    day = DATA_START - DATA_START % 86400
    while day <= WEEK_END:
        source = folder.parent / f"history-{iso(day)[:10]}.om"
        text = openmetrics(max(day, DATA_START), min(day + 86400 - 60, WEEK_END))
        source.write_text(text)
        process = await asyncio.create_subprocess_exec(
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(source),
            str(folder),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, f"promtool failed on {source}: {output.decode()}"
        day += 86400


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
