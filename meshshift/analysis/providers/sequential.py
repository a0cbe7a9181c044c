"""The `meshshift` provider's sequential builtins: `sequential-error-rate`, `sequential-latency`.

One in-progress measurement per analysis run: the first look reads both sides' counters as the
baseline, each later look (every `lookEvery`) reads them again and hands the increases to the
judge (meshshift.analysis.judge, through meshshift.analysis.sequential). The measurement stays
Running while the judge is undecided, and completes Failed on `worse`, Successful on
`not-worse`, and at `maxDuration` Successful (or Inconclusive with `requireEvidence`).

Counters are read raw, one value per series, never through rate():
- `source: envoy-admin`: `/stats/prometheus` of the standalone Envoy, clusters `cluster`
  (canary) and `stableCluster`: `envoy_cluster_upstream_rq` per response code and the
  `envoy_cluster_upstream_rq_time` buckets (ms);
- `source: prometheus`: the instant vectors of the series selectors `canary` and `stable` (a
  request counter with a `codeLabel`, or a histogram's `_bucket` series), from `address` or
  meshshift's Prometheus.

Options (placeholders allowed): `alpha` (0.01), `relativeTolerance` (0.25), `absoluteTolerance`
(0), `quantile` (latency, 0.95), `maxDuration` (10m), `requireEvidence` ("false"), `lookEvery`
(1s from Envoy's admin endpoint, 10s from Prometheus), `unit` (latency, for messages).

A look that cannot read the counters keeps the measurement as it was and says so; after
MAX_FAILED_LOOKS in a row the measurement is an Error.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from meshshift.analysis import sequential
from meshshift.analysis.judge import JudgeSettings
from meshshift.analysis.providers.envoy_admin import EnvoyAdminProvider
from meshshift.analysis.providers.http import is_true, seconds_option
from meshshift.analysis.providers.prometheus import PrometheusProvider, parse_series_response
from meshshift.analysis.providers.templating import render_plain, render_promql
from meshshift.analysis.sequential import Progress, Reading, bucket_key, error_key
from meshshift.codec import decode, encode
from meshshift.ports import MeasureContext, ProviderError, ProviderResult
from meshshift.spec.model import AnalysisPhase, Metric

FIELD = "provider.meshshift"
SOURCES = ("envoy-admin", "prometheus")
DEFAULT_LOOK = {"envoy-admin": 1.0, "prometheus": 10.0}
MAX_FAILED_LOOKS = 5
PROGRESS_KEY = "progress"
_NO_HISTORY = (
    "Envoy's admin endpoint holds only the counters of now, so it cannot be replayed over history "
    "(scrape Envoy with Prometheus and use source: prometheus)"
)


class SequentialProvider:
    """Takes the sequential builtins' measurements (kind `meshshift`, see BuiltinProvider)."""

    kind = "meshshift"

    def __init__(
        self,
        *,
        envoy: EnvoyAdminProvider,
        prometheus: PrometheusProvider,
        stable_cluster: str = "stable",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.envoy = envoy
        self.prometheus = prometheus
        self.stable_cluster = stable_cluster
        self.clock = clock

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        args = context.args
        builtin = str(options.get("builtin"))
        if builtin not in sequential.SEQUENTIAL_BUILTINS:
            raise ProviderError(f"{FIELD}.builtin: {builtin!r} is not a sequential builtin")
        settings = _settings(options, args)
        quantile = _number(options, "quantile", 0.95, args, low=0, high=1)
        source = render_plain(str(options.get("source") or "envoy-admin"), args, field=f"{FIELD}.source")
        if source not in SOURCES:
            raise ProviderError(f"{FIELD}.source: {source!r} is not one of {', '.join(SOURCES)}")
        look_every = seconds_option(options, "lookEvery", DEFAULT_LOOK[source], args=args, field=FIELD)
        at = context.evaluation_time
        if at is not None and source != "prometheus":
            raise ProviderError(f"{FIELD}: {_NO_HISTORY}")
        progress = _resume(context)
        try:
            reading, described = await self._read(builtin, source, options, args, at)
        except ProviderError as error:
            if progress is None:
                raise
            return self._failed_look(progress, settings, look_every, error, context)
        now = self.clock() if at is None else at
        if progress is None:
            unit = render_plain(str(options.get("unit") or ""), args, field=f"{FIELD}.unit")
            progress = sequential.begin(builtin, now, reading, quantile=quantile, unit=unit)
        else:
            progress = sequential.look(progress, settings, reading)
        return _result(progress, settings, now, described, look_every)

    def _failed_look(
        self,
        progress: Progress,
        settings: JudgeSettings,
        look_every: float,
        error: ProviderError,
        context: MeasureContext,
    ) -> ProviderResult:
        progress = sequential.failed_look(progress)
        if progress.failures >= MAX_FAILED_LOOKS:
            raise ProviderError(f"{progress.failures} looks in a row could not read the counters: {error}")
        previous = context.in_progress
        assert previous is not None
        return ProviderResult(
            value=previous.value,
            query=previous.query,
            phase=AnalysisPhase.RUNNING,
            message=f"this look could not read the counters ({progress.failures} in a row): {error}",
            resume_after=look_every,
            stop_phase=sequential.stop_phase(progress, settings),
            metadata={PROGRESS_KEY: json.dumps(encode(progress))},
        )

    def history_refusal(self, metric: Metric) -> str | None:
        options = metric.provider.options if metric.provider else {}
        if str(options.get("source") or "envoy-admin") == "prometheus":
            return None  # the counters' history is in Prometheus: each look reads them at its time
        return f"metric {metric.name!r} reads Envoy's admin endpoint: {_NO_HISTORY}"

    async def _read(
        self,
        builtin: str,
        source: str,
        options: Mapping[str, Any],
        args: Mapping[str, str],
        at: float | None = None,
    ) -> tuple[Reading, str]:
        if source == "envoy-admin":
            return await self._read_envoy(builtin, options, args)
        return await self._read_prometheus(builtin, options, args, at)

    async def _read_envoy(
        self, builtin: str, options: Mapping[str, Any], args: Mapping[str, str]
    ) -> tuple[Reading, str]:
        admin_url = self.envoy.admin_url_for(options, args, FIELD)
        canary = render_plain(
            str(options.get("cluster") or self.envoy.cluster), args, field=f"{FIELD}.cluster"
        )
        stable = render_plain(
            str(options.get("stableCluster") or self.stable_cluster), args, field=f"{FIELD}.stableCluster"
        )
        canary_reading, stable_reading = await asyncio.gather(
            self.envoy.read(admin_url, canary), self.envoy.read(admin_url, stable)
        )

        def series(reading: Any) -> dict[str, float]:
            if builtin == sequential.ERROR_RATE:
                return {
                    error_key(code.startswith("5"), f"code={code}"): count
                    for code, count in reading.responses.items()
                }
            return {bucket_key(bound, ""): count for bound, count in reading.buckets}

        what = "responses by code" if builtin == sequential.ERROR_RATE else "request time buckets (ms)"
        described = (
            f"{builtin}: Envoy cluster {canary} (canary) against {stable} (stable), {what}, "
            f"raw counters from {admin_url}/stats/prometheus"
        )
        return Reading(series(canary_reading), series(stable_reading)), described

    async def _read_prometheus(
        self, builtin: str, options: Mapping[str, Any], args: Mapping[str, str], at: float | None
    ) -> tuple[Reading, str]:
        queries = {}
        for side in ("canary", "stable"):
            raw = options.get(side)
            if not isinstance(raw, str) or not raw.strip():
                raise ProviderError(f"{FIELD}.{side}: a series selector is required with source prometheus")
            queries[side] = render_promql(raw, args, field=f"{FIELD}.{side}")
        code_label = render_plain(str(options.get("codeLabel") or "code"), args, field=f"{FIELD}.codeLabel")
        answers = await asyncio.gather(
            *(
                self.prometheus.query(queries[side], options, args, FIELD, evaluation_time=at)
                for side in ("canary", "stable")
            )
        )
        sides = []
        what = ""
        for side, (body, what, status) in zip(("canary", "stable"), answers, strict=True):
            series = parse_series_response(body, what=what, query=queries[side], status=status)
            sides.append(_classify(builtin, series, code_label, f"{FIELD}.{side}"))
        described = (
            f"{builtin}: canary {queries['canary']} against stable {queries['stable']}, raw, from {what}"
        )
        return Reading(sides[0], sides[1]), described


def _classify(
    builtin: str, series: list[tuple[dict[str, str], float]], code_label: str, field: str
) -> dict[str, float]:
    named: dict[str, float] = {}
    for labels, value in series:
        if builtin == sequential.ERROR_RATE:
            if code_label not in labels:
                raise ProviderError(f"{field}: a series has no {code_label!r} label: {labels}")
            identity = _identity(labels)
            named[error_key(labels[code_label].startswith("5"), identity)] = value
        else:
            if "le" not in labels:
                raise ProviderError(
                    f"{field}: select a histogram's _bucket series; this one has no le: {labels}"
                )
            bound = float(labels.pop("le"))  # float() reads "+Inf"
            named[bucket_key(bound, _identity(labels))] = value
    return named


def _identity(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def _resume(context: MeasureContext) -> Progress | None:
    previous = context.in_progress
    if previous is None:
        return None
    raw = previous.metadata.get(PROGRESS_KEY)
    if raw is None:
        raise ProviderError("the in-progress measurement holds no judge state: it cannot be resumed")
    try:
        return decode(Progress, json.loads(raw))
    except (ValueError, TypeError, KeyError) as error:
        raise ProviderError(f"the in-progress measurement's judge state is unreadable: {error}") from None


def _result(
    progress: Progress, settings: JudgeSettings, now: float, described: str, look_every: float
) -> ProviderResult:
    judgement = sequential.verdict(progress, settings, now)
    value = sequential.result_value(progress, settings, judgement, now)
    running = judgement.phase == AnalysisPhase.RUNNING
    return ProviderResult(
        value=_json_safe(value),
        query=described,
        phase=judgement.phase,
        message=judgement.message,
        resume_after=look_every if running else None,
        stop_phase=sequential.stop_phase(progress, settings) if running else None,
        metadata={PROGRESS_KEY: json.dumps(encode(progress))} if running else {},
    )


def _json_safe(value: Any) -> Any:
    """Infinite evidence shown as a string, as JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _settings(options: Mapping[str, Any], args: Mapping[str, str]) -> JudgeSettings:
    try:
        return JudgeSettings(
            alpha=_number(options, "alpha", 0.01, args, low=0, high=1),
            relative_tolerance=_number(options, "relativeTolerance", 0.25, args, low=0),
            absolute_tolerance=_number(options, "absoluteTolerance", 0.0, args, low=0),
            max_duration=seconds_option(options, "maxDuration", 600.0, args=args, field=FIELD),
            require_evidence=is_true(
                render_plain(
                    str(options.get("requireEvidence", "false")), args, field=f"{FIELD}.requireEvidence"
                )
            ),
        )
    except ValueError as error:
        raise ProviderError(f"{FIELD}: {error}") from None


def _number(
    options: Mapping[str, Any],
    key: str,
    default: float,
    args: Mapping[str, str],
    *,
    low: float,
    high: float | None = None,
) -> float:
    """A number option in [low, high), or (low, high) when both are given (alpha, quantile)."""
    raw = options.get(key)
    if raw is None:
        return default
    text = render_plain(str(raw), args, field=f"{FIELD}.{key}")
    try:
        number = float(text)
    except ValueError:
        raise ProviderError(f"{FIELD}.{key}: {text!r} is not a number") from None
    if high is None:
        if not (math.isfinite(number) and number >= low):
            raise ProviderError(f"{FIELD}.{key}: must be at least {low:g}, got {text}")
    elif not low < number < high:
        raise ProviderError(f"{FIELD}.{key}: must be between {low:g} and {high:g} (exclusive), got {text}")
    return number


class MeshshiftProvider:
    """The `meshshift` provider kind: the builtins' measurements without a query language of
    the user's (Envoy's admin endpoint for the Flagger-style builtins, the sequential judge)."""

    kind = "meshshift"

    def __init__(self, envoy: EnvoyAdminProvider, judge: SequentialProvider) -> None:
        self.envoy = envoy
        self.judge = judge

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        if options.get("builtin") in sequential.SEQUENTIAL_BUILTINS:
            return await self.judge.measure(metric, context)
        if context.evaluation_time is not None:
            raise ProviderError(f"{FIELD}: {_NO_HISTORY}")
        return await self.envoy.measure(metric, context)

    def history_refusal(self, metric: Metric) -> str | None:
        options = metric.provider.options if metric.provider else {}
        if options.get("builtin") in sequential.SEQUENTIAL_BUILTINS:
            return self.judge.history_refusal(metric)
        return f"metric {metric.name!r} reads Envoy's admin endpoint: {_NO_HISTORY}"
