"""The `meshshift` provider with `source: envoy-admin`: builtin metrics without Prometheus.

A standalone Envoy counts every upstream request per cluster on its admin endpoint
(`/stats/prometheus`): `envoy_cluster_upstream_rq{envoy_response_code, envoy_cluster_name}`
counters and the `envoy_cluster_upstream_rq_time` histogram, in milliseconds. This
provider reads them at every measurement and compares the reading with an earlier one, so
a measurement covers the requests of (about) the last `window`:

- `request-success-rate`: the share of requests that did not answer 5xx, in percent
  (Flagger's unit, so the same `result[0] >= 99` works with the Prometheus builtins);
- `request-duration`: the `quantile` (default 0.99) of the request time in milliseconds,
  interpolated inside the histogram buckets as Prometheus' histogram_quantile does.

`result` is `[value]`, or `[]` when no request reached the cluster in the window (so a
condition on `result[0]` is an Error saying the result is empty, as with Prometheus).

Options: `builtin` (required), `window` (default 1m), `quantile`, and, to override what the
runtime configured, `source` (only envoy-admin), `adminUrl`, `cluster`.

Caveats (measured on Envoy 1.40): counters are live, but Envoy refreshes histograms
only when it flushes stats (every 5 s by default; set `stats_flush_interval: 1s`), so the
latency lags by up to one flush. The first measurement has no earlier reading: it takes
two, `first_sample_wait` apart (at most `window`). Envoy restarting resets its counters;
a reading lower than the previous one is taken as a reset.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshshift.analysis.providers.http import fetch, seconds_option
from meshshift.analysis.providers.templating import render_plain, render_url
from meshshift.ports import MeasureContext, ProviderError, ProviderResult
from meshshift.spec.model import Metric

SOURCE = "envoy-admin"
DEFAULT_WINDOW = 60.0
DEFAULT_QUANTILE = 0.99
SUCCESS_RATE, DURATION = "request-success-rate", "request-duration"

# Per-code counters and the latency buckets appear with a cluster's first request; its
# `_total` counter is there from the start (0), which tells a quiet cluster from a wrong name.
_LINE = re.compile(
    r"^(envoy_cluster_upstream_rq|envoy_cluster_upstream_rq_total|envoy_cluster_upstream_rq_time_bucket)"
    r"\{([^}]*)\} (\S+)",
    re.M,
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class ClusterReading:
    """One read of a cluster's request counters and latency histogram."""

    at: float
    responses: Mapping[str, float]  # response code -> requests so far
    buckets: tuple[tuple[float, float], ...]  # (upper bound in ms, cumulative count), +Inf last

    @property
    def requests(self) -> float:
        return sum(self.responses.values())


def parse_cluster_stats(text: str, cluster: str, at: float) -> ClusterReading | None:
    """The cluster's reading from `/stats/prometheus` text, None when Envoy reports nothing for it."""
    responses: dict[str, float] = {}
    buckets: dict[float, float] = {}
    seen = False
    for name, raw_labels, raw_value in _LINE.findall(text):
        labels = dict(_LABEL.findall(raw_labels))
        if labels.get("envoy_cluster_name") != cluster:
            continue
        seen = True
        value = float(raw_value)
        if name == "envoy_cluster_upstream_rq":
            code = labels.get("envoy_response_code", "")
            responses[code] = responses.get(code, 0.0) + value
        elif name == "envoy_cluster_upstream_rq_time_bucket" and "le" in labels:
            buckets[float(labels["le"])] = value  # float() reads "+Inf"
    if not seen:
        return None
    return ClusterReading(at, responses, tuple(sorted(buckets.items())))


def _increase(now: float, before: float, reset: bool) -> float:
    return now if reset else max(0.0, now - before)


def success_rate(now: ClusterReading, before: ClusterReading) -> tuple[float | None, float]:
    """(percent of non-5xx requests or None without requests, requests) between two readings."""
    reset = now.requests < before.requests
    total = errors = 0.0
    for code, count in now.responses.items():
        increase = _increase(count, before.responses.get(code, 0.0), reset)
        total += increase
        if code.startswith("5"):
            errors += increase
    if total <= 0:
        return None, 0.0
    return 100.0 * (total - errors) / total, total


def bucket_increase(now: ClusterReading, before: ClusterReading) -> list[tuple[float, float]]:
    previous = dict(before.buckets)
    reset = bool(now.buckets) and bool(before.buckets) and now.buckets[-1][1] < before.buckets[-1][1]
    return [(bound, _increase(count, previous.get(bound, 0.0), reset)) for bound, count in now.buckets]


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, +Inf last."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = quantile * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    bound, count = buckets[index]
    if math.isinf(bound):
        # Above the highest finite bucket: Prometheus answers that bucket's bound.
        return buckets[-2][0] if len(buckets) > 1 else None
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    if count == below:
        return bound
    return lower + (bound - lower) * (rank - below) / (count - below)


class EnvoyAdminProvider:
    kind = "meshshift"

    def __init__(
        self,
        *,
        admin_url: str | None = None,
        cluster: str = "canary",
        clock: Callable[[], float] = time.monotonic,
        first_sample_wait: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.admin_url = admin_url
        self.cluster = cluster
        self.clock = clock
        self.first_sample_wait = first_sample_wait
        self.timeout = timeout
        self._history: dict[tuple[str, str], list[ClusterReading]] = {}

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        field, args = "provider.meshshift", context.args
        builtin = options.get("builtin")
        if builtin not in (SUCCESS_RATE, DURATION):
            raise ProviderError(f"{field}.builtin: must be {SUCCESS_RATE} or {DURATION}, not {builtin!r}")
        source = render_plain(str(options.get("source") or SOURCE), args, field=f"{field}.source")
        if source != SOURCE:
            raise ProviderError(f"{field}.source: {source!r} is not known; meshshift reads {SOURCE}")
        admin_url = self.admin_url_for(options, args, field)
        cluster = render_plain(str(options.get("cluster") or self.cluster), args, field=f"{field}.cluster")
        window = seconds_option(options, "window", DEFAULT_WINDOW, args=args, field=field)
        before, now = await self._readings(admin_url, cluster, window)
        elapsed = now.at - before.at
        if builtin == SUCCESS_RATE:
            value, requests = success_rate(now, before)
            shown = f"{builtin}: non-5xx share of {requests:g} requests"
        else:
            quantile = _quantile(options, args, field)
            buckets = bucket_increase(now, before)
            value = histogram_quantile(quantile, buckets)
            requests = buckets[-1][1] if buckets else 0.0
            shown = f"{builtin}: p{quantile * 100:g} of {requests:g} request times (ms)"
        query = f"{shown} to Envoy cluster {cluster} over {elapsed:.1f}s, from {admin_url}/stats/prometheus"
        return ProviderResult(value=[] if value is None else [value], query=query)

    def admin_url_for(self, options: Mapping[str, Any], args: Mapping[str, str], field: str) -> str:
        raw = options.get("adminUrl")
        if raw:
            return render_url(str(raw), args, field=f"{field}.adminUrl").rstrip("/")
        if self.admin_url:
            return self.admin_url.rstrip("/")
        raise ProviderError(
            f"{field}.adminUrl: no Envoy admin address (set adminUrl, or run with a standalone Envoy)"
        )

    async def _readings(
        self, admin_url: str, cluster: str, window: float
    ) -> tuple[ClusterReading, ClusterReading]:
        """An earlier reading (about `window` ago when there is one) and a reading now.

        Readings older than two windows are forgotten: a measurement never covers much more
        than its window, even after a long pause between runs.
        """
        history = self._history.setdefault((admin_url, cluster), [])
        now = await self.read(admin_url, cluster)
        recent = [reading for reading in history if reading.at >= now.at - 2 * window]
        older = [reading for reading in recent if reading.at <= now.at - window]
        if older:
            before = older[-1]
        elif recent:
            before = recent[0]  # read less than a window ago: use what there is
        else:
            await asyncio.sleep(min(window, self.first_sample_wait))
            before, now = now, await self.read(admin_url, cluster)
        kept = [reading for reading in recent if reading.at >= before.at]
        history[:] = [*kept, now] if kept else [before, now]
        return before, now

    async def read(self, admin_url: str, cluster: str) -> ClusterReading:
        """One reading of `cluster`'s counters from the admin endpoint."""
        what = f"envoy admin at {admin_url}"
        answer = await fetch(
            "GET",
            f"{admin_url}/stats/prometheus",
            what=what,
            within=self.timeout,
            params={"filter": rf"^cluster\.{re.escape(cluster)}\.upstream_rq"},
        )
        if not answer.ok:
            raise ProviderError(f"{what} answered HTTP {answer.status}: {answer.text(200)!r}")
        reading = parse_cluster_stats(answer.body.decode("utf-8", errors="replace"), cluster, self.clock())
        if reading is None:
            raise ProviderError(
                f"{what} reports no upstream requests stats for cluster {cluster!r}: is the name right?"
            )
        return reading


def _quantile(options: Mapping[str, Any], args: Mapping[str, str], field: str) -> float:
    raw = options.get("quantile")
    if raw is None:
        return DEFAULT_QUANTILE
    text = render_plain(str(raw), args, field=f"{field}.quantile")
    try:
        quantile = float(text)
    except ValueError:
        raise ProviderError(f"{field}.quantile: {text!r} is not a number") from None
    if not 0 < quantile < 1:
        raise ProviderError(f"{field}.quantile: must be between 0 and 1, got {text}")
    return quantile
