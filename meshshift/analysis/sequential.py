"""One sequential measurement across its looks: raw counter readings in, the judge's verdict out.

The builtins `sequential-error-rate` and `sequential-latency` take one in-progress measurement
that looks at the canary's and the stable's counters every few seconds. Each look reads every
series raw (a request counter per response code, or a latency histogram's buckets) for both
sides; the first look is the baseline, so the counts are those since the analysis started.
This module turns the readings into the judge's per-look tallies (through `counters.advance`,
which survives resets) and keeps what the next look needs, as one JSON-able value.

Series are named `<class>|<identity>` by the adapter that read them: class `bad` or `ok` for
the error rate (a 5xx response code is bad); for latency, the bucket's upper bound `le`, so
that a request is slow when it is above the threshold bucket.

`sequential-latency` compares the share of requests slower than a threshold: the smallest
bucket bound at or above the stable's `quantile` (from the stable's history when it has
served enough requests before the analysis, else from its first requests of the analysis,
which are then left out of the test). A canary is worse when its slow share is above the
stable's (times 1 + relative-tolerance) and above 1 - quantile, i.e. its quantile is above the
stable's to the resolution of the buckets.

Pure code: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshshift.analysis import judge as judging
from meshshift.analysis.counters import advance
from meshshift.analysis.judge import Judgement, JudgeSettings, JudgeState, Tally, Verdict
from meshshift.spec.model import AnalysisPhase
from meshshift.spec.templates import SEQUENTIAL_METRICS

SEQUENTIAL_BUILTINS = SEQUENTIAL_METRICS
ERROR_RATE, LATENCY = SEQUENTIAL_METRICS
BAD, OK = "bad", "ok"
INF = math.inf


def error_key(bad: bool, identity: str) -> str:
    return f"{BAD if bad else OK}|{identity}"


def bucket_key(le: float, identity: str) -> str:
    return f"{'+Inf' if math.isinf(le) else repr(float(le))}|{identity}"


def _split(key: str) -> tuple[str, str]:
    kind, _, identity = key.partition("|")
    return kind, identity


def threshold_sample_size(quantile: float) -> int:
    """Stable requests needed before a latency threshold is chosen from them: enough to see
    about 4 requests above the quantile (80 for p95, 400 for p99)."""
    return max(40, math.ceil(4 / (1 - quantile)))


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at both sides: series key -> raw counter value."""

    canary: Mapping[str, float]
    stable: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Progress:
    """What a sequential measurement keeps between looks (persisted with the measurement)."""

    builtin: str
    started_at: float
    quantile: float
    unit: str = ""  # latency: the histogram's unit, for messages
    canary_last: Mapping[str, float] = field(default_factory=dict)
    stable_last: Mapping[str, float] = field(default_factory=dict)
    judge: JudgeState | None = None  # None: latency, waiting for its threshold
    threshold: float | None = None  # latency: the bucket bound a slow request is above
    stable_seen: Mapping[str, float] = field(default_factory=dict)  # latency, before a threshold
    looks: int = 0
    resets: int = 0
    failures: int = 0  # looks in a row that could not read the counters


# --- tallies ------------------------------------------------------------------------------


def error_tally(series: Mapping[str, float]) -> Tally:
    requests = bad = 0.0
    for key, value in series.items():
        requests += value
        if _split(key)[0] == BAD:
            bad += value
    return Tally(requests, bad)


def _buckets(series: Mapping[str, float]) -> dict[str, dict[float, float]]:
    """identity -> {le: count}."""
    groups: dict[str, dict[float, float]] = {}
    for key, value in series.items():
        le, identity = _split(key)
        try:
            bound = float(le)  # float() reads "+Inf"
        except ValueError:
            continue
        groups.setdefault(identity, {})[bound] = value
    return groups


def latency_tally(series: Mapping[str, float], threshold: float) -> Tally:
    """Requests (the +Inf buckets) and those slower than `threshold`, summed over the series."""
    requests = slow = 0.0
    for buckets in _buckets(series).values():
        total = buckets.get(INF)
        if total is None:
            continue
        fast = buckets.get(threshold, total)
        requests += total
        slow += max(0.0, total - fast)
    return Tally(requests, slow)


def by_bound(series: Mapping[str, float]) -> dict[float, float]:
    """Cumulative counts per bucket bound, summed over the series."""
    totals: dict[float, float] = {}
    for buckets in _buckets(series).values():
        for bound, count in buckets.items():
            totals[bound] = totals.get(bound, 0.0) + count
    return totals


def choose_threshold(buckets: Mapping[float, float], quantile: float) -> float | None:
    """The smallest finite bucket bound holding at least `quantile` of the requests (else the
    largest finite bound); None without a +Inf bucket or a finite one."""
    total = buckets.get(INF, 0.0)
    finite = sorted(bound for bound in buckets if not math.isinf(bound))
    if total <= 0 or not finite:
        return None
    for bound in finite:
        if buckets[bound] >= quantile * total:
            return bound
    return finite[-1]


# --- looks ------------------------------------------------------------------------------------


def begin(builtin: str, now: float, reading: Reading, *, quantile: float = 0.95, unit: str = "") -> Progress:
    """The baseline look: nothing is counted yet; the stable's counts so far are its history."""
    if builtin not in SEQUENTIAL_BUILTINS:
        raise ValueError(f"not a sequential builtin: {builtin!r}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile:g}")
    progress = Progress(
        builtin=builtin,
        started_at=now,
        quantile=quantile,
        unit=unit,
        canary_last=dict(reading.canary),
        stable_last=dict(reading.stable),
        looks=1,
    )
    if builtin == ERROR_RATE:
        return dataclasses.replace(progress, judge=judging.start(now, error_tally(reading.stable)))
    history = by_bound(reading.stable)
    if history.get(INF, 0.0) >= threshold_sample_size(quantile):
        threshold = choose_threshold(history, quantile)
        if threshold is not None:
            tally = latency_tally(reading.stable, threshold)
            return dataclasses.replace(progress, judge=judging.start(now, tally), threshold=threshold)
    return progress


def look(progress: Progress, settings: JudgeSettings, reading: Reading) -> Progress:
    """The progress after one more look."""
    canary = advance(progress.canary_last, reading.canary)
    stable = advance(progress.stable_last, reading.stable)
    progress = dataclasses.replace(
        progress,
        canary_last=canary.last,
        stable_last=stable.last,
        looks=progress.looks + 1,
        resets=progress.resets + len(canary.resets) + len(stable.resets),
        failures=0,
    )
    if progress.builtin == ERROR_RATE:
        assert progress.judge is not None
        judge = judging.observe(
            progress.judge, settings, error_tally(canary.increases), error_tally(stable.increases)
        )
        return dataclasses.replace(progress, judge=judge)
    if progress.judge is None or progress.threshold is None:
        return _wait_for_threshold(progress, stable.increases)
    judge = judging.observe(
        progress.judge,
        settings,
        latency_tally(canary.increases, progress.threshold),
        latency_tally(stable.increases, progress.threshold),
    )
    return dataclasses.replace(progress, judge=judge)


def _wait_for_threshold(progress: Progress, stable_increases: Mapping[str, float]) -> Progress:
    seen = dict(progress.stable_seen)
    for key, value in stable_increases.items():
        seen[key] = seen.get(key, 0.0) + value
    buckets = by_bound(seen)
    if buckets.get(INF, 0.0) < threshold_sample_size(progress.quantile):
        return dataclasses.replace(progress, stable_seen=seen)
    threshold = choose_threshold(buckets, progress.quantile)
    if threshold is None:
        return dataclasses.replace(progress, stable_seen=seen)
    # The requests that chose the threshold are not tested against it: the test starts now.
    return dataclasses.replace(
        progress, stable_seen={}, threshold=threshold, judge=judging.start(progress.started_at)
    )


def failed_look(progress: Progress) -> Progress:
    return dataclasses.replace(progress, failures=progress.failures + 1)


# --- the verdict ---------------------------------------------------------------------------------


def settings_for(builtin: str, settings: JudgeSettings, quantile: float) -> JudgeSettings:
    """The latency judge also needs the canary's slow share above 1 - quantile."""
    if builtin == LATENCY:
        return dataclasses.replace(settings, floor=max(settings.floor, 1 - quantile))
    return settings


def bad_name(builtin: str) -> str:
    return "errors" if builtin == ERROR_RATE else "slow"


def verdict(progress: Progress, settings: JudgeSettings, now: float) -> Judgement:
    settings = settings_for(progress.builtin, settings, progress.quantile)
    if progress.judge is not None:
        return judging.judge(progress.judge, settings, now, bad=_bad_words(progress))
    seen = by_bound(progress.stable_seen).get(INF, 0.0)
    needed = threshold_sample_size(progress.quantile)
    waiting = (
        f"waiting for the stable's latency: {seen:g} of the {needed} requests that set the "
        f"p{progress.quantile * 100:g} threshold"
    )
    if now - progress.started_at < settings.max_duration:
        phase = AnalysisPhase.RUNNING
    else:
        phase, waiting = AnalysisPhase.INCONCLUSIVE, f"undecided at max-duration: {waiting}"
    return Judgement(Verdict.UNDECIDED, phase, waiting, 1.0, 1.0, 1.0 / settings.alpha, 1.0)


def stop_phase(progress: Progress, settings: JudgeSettings) -> AnalysisPhase:
    """What the measurement ends as if its run stops now: as at max-duration."""
    return verdict(progress, settings, progress.started_at + settings.max_duration).phase


def _bad_words(progress: Progress) -> str:
    if progress.builtin == ERROR_RATE:
        return "errors"
    return f"slow (> {progress.threshold:g}{progress.unit})"


def result_value(
    progress: Progress, settings: JudgeSettings, judgement: Judgement, now: float
) -> dict[str, Any]:
    """The measurement's `result`: verdict, counts and rates per side, evidence against alpha."""
    settings = settings_for(progress.builtin, settings, progress.quantile)
    name = bad_name(progress.builtin)
    if progress.judge is not None:
        value = judging.result_value(progress.judge, settings, judgement, now, bad=name)
    else:
        empty = {"requests": 0.0, name: 0.0, "rate": None}
        value = {
            "verdict": judgement.verdict.value,
            "canary": empty,
            "stable": empty,
            "evidence": {"worse": 1.0, "notWorse": 1.0, "threshold": judgement.threshold},
            "pValue": 1.0,
            "alpha": settings.alpha,
            "mode": "threshold",
            "elapsed": round(now - progress.started_at, 3),
        }
    if progress.builtin == LATENCY:
        value["quantile"] = progress.quantile
        value["threshold"] = progress.threshold
    if progress.resets:
        value["resets"] = progress.resets
    return value
