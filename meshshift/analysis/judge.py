"""The sequential judge: is the canary worse than the stable? Anytime-valid, so it may look
as often as it likes.

A request is "bad" when it failed (`sequential-error-rate`) or was slower than a latency
threshold (`sequential-latency`). The judge is fed, at every look, how many requests each
side served since the previous look and how many of them were bad, and answers `worse`,
`not-worse` or `undecided`. The probability that it ever says `worse` about a canary that is
not worse (beyond the tolerance) is at most `alpha`, whenever and however often it looks.

The test (after Lindon, Sanden & Shirikian, "Rapid Regression Detection in Software
Deployments through Sequential Testing", KDD 2022, and Lindon & Malek, "Anytime-Valid
Inference for Multinomial Count Data", NeurIPS 2022):

- Between two looks the canary served n_c requests with x_c bad ones, the stable n_s with
  x_s. Bad requests are rare events (a Poisson process per side, with intensity "requests
  served x bad rate"), so given that x = x_c + x_s bad requests happened, each one is the
  canary's with probability theta = n_c p_c / (n_c p_c + n_s p_s). Everything the two
  sides share (load, time of day, a slow database) cancels out of theta.
- "Not worse" (the null) is p_c <= rho0 p_s with rho0 = 1 + relative-tolerance, that is
  theta <= theta0 = n_c rho0 / (n_c rho0 + n_s).
- The evidence against it is a mixture likelihood ratio, one factor per look:

      E_worse = sum_k w_k prod_looks (theta_k / theta0)^x_c ((1 - theta_k) / (1 - theta0))^x_s

  where theta_k has k times the odds of theta0, over a fixed grid of k > 1 (KAPPAS) and
  k = infinity ("every bad request is the canary's"). Under the null each factor has
  expectation at most 1 given the past, so E_worse is a nonnegative supermartingale and,
  by Ville's inequality, P(E_worse ever >= 1/alpha) <= alpha. That is the whole
  guarantee: it does not depend on when or how often we look. (With exact Bernoulli
  requests and relative-tolerance 0, the conditional law of x_c is hypergeometric, which
  is smaller in convex order than the binomial (Hoeffding 1963), so the bound still holds.)
- `not-worse` is the mirror test of the null p_c >= rho0 p_s (grid k < 1, and k = 0):
  E_not_worse >= 1/alpha claims "the canary's bad rate is below (1 + relative-tolerance)
  times the stable's", with the same alpha guarantee for that claim.
- Two optional extra conditions narrow what counts as worse, each tested at alpha on its
  own (a worse verdict needs every test to reject, so the bound stays alpha):
  `absolute-tolerance` a > 0 also requires p_c > rho0 p_s + a, shown with anytime-valid
  confidence bounds (Beta-binomial mixtures, alpha/2 per side); a `floor` f > 0 (the
  latency judge uses 1 - quantile) requires p_c > f, shown by a one-sample e-process (the
  Beta(1,1) mixture over the largest likelihood the null allows: Wasserman, Ramdas &
  Balakrishnan 2020, "universal inference").
- No stable traffic at all: the canary is compared with the stable's history (what it
  served before the analysis started), with the history's upper confidence bound at
  alpha/2 and a one-sample e-process at alpha/2. With no history either, the judge says so
  and ends Inconclusive at max-duration.

Pure code: no I/O, no clock (callers pass `now`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meshshift.spec.model import AnalysisPhase

# The mixture over "how much worse": 16 odds multipliers from 1.5 to 3000, log-spaced, with
# half the prior mass on k = infinity. A bad canary next to a stable without bad requests
# (the common case) is then caught after 3 bad canary requests at 10 % weight; the grid
# costs at most log(32) in evidence against any single alternative.
_GRID_SIZE = 16
KAPPAS: tuple[float, ...] = tuple(
    math.exp(math.log(1.5) + i * (math.log(3000.0) - math.log(1.5)) / (_GRID_SIZE - 1))
    for i in range(_GRID_SIZE)
)
EXTREME_WEIGHT = 0.5  # prior mass of k = infinity (worse) and k = 0 (not worse)
_LOG_GRID_WEIGHT = math.log((1.0 - EXTREME_WEIGHT) / _GRID_SIZE)
_LOG_EXTREME_WEIGHT = math.log(EXTREME_WEIGHT)


class Verdict(StrEnum):
    WORSE = "worse"
    NOT_WORSE = "not-worse"
    UNDECIDED = "undecided"


class Mode(StrEnum):
    WAITING = "waiting"  # no traffic on both sides yet
    PAIRED = "paired"  # canary against the stable's concurrent traffic
    HISTORY = "history"  # no stable traffic: canary against the stable's history


@dataclass(frozen=True, slots=True)
class Tally:
    """Requests served and how many of them were bad."""

    requests: float = 0.0
    bad: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.requests + other.requests, self.bad + other.bad)

    @property
    def rate(self) -> float | None:
        return self.bad / self.requests if self.requests > 0 else None

    def clamped(self) -> Tally:
        """Non-negative, and never more bad requests than requests."""
        requests = max(0.0, self.requests)
        return Tally(requests, min(max(0.0, self.bad), requests))


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    alpha: float = 0.01
    relative_tolerance: float = 0.25
    absolute_tolerance: float = 0.0
    floor: float = 0.0  # worse also needs the canary's bad rate above this (0: no floor)
    max_duration: float = 600.0  # seconds
    require_evidence: bool = False  # undecided at max-duration: Inconclusive instead of a pass

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {self.alpha:g}")
        if not 0 <= self.relative_tolerance < 1e6:
            raise ValueError(f"relative-tolerance must be 0 or more, got {self.relative_tolerance:g}")
        if not 0 <= self.absolute_tolerance < 1:
            raise ValueError(
                f"absolute-tolerance must be at least 0 and below 1, got {self.absolute_tolerance:g}"
            )
        if not 0 <= self.floor < 1:
            raise ValueError(f"the floor must be at least 0 and below 1, got {self.floor:g}")
        if not self.max_duration > 0:
            raise ValueError(f"max-duration must be positive, got {self.max_duration:g}")

    @property
    def rho0(self) -> float:
        return 1.0 + self.relative_tolerance

    @property
    def log_threshold(self) -> float:
        return math.log(1.0 / self.alpha)


@dataclass(frozen=True, slots=True)
class JudgeState:
    """Everything the judge keeps between looks (a few dozen numbers; it is persisted)."""

    started_at: float
    canary: Tally = Tally()  # since the analysis started
    stable: Tally = Tally()
    history: Tally | None = None  # the stable's counts before the analysis started
    mode: Mode = Mode.WAITING
    looks: int = 0
    # Paired mode: the log likelihood ratio of each grid component, summed over looks.
    log_worse: tuple[float, ...] = (0.0,) * _GRID_SIZE
    log_worse_extreme: float = 0.0  # k = infinity: alive while the stable has no bad request
    stable_bad_seen: bool = False
    log_better: tuple[float, ...] = (0.0,) * _GRID_SIZE
    log_better_extreme: float = 0.0  # k = 0: alive while the canary has no bad request
    canary_bad_seen: bool = False
    peak_log_worse: float = 0.0  # the largest log E_worse so far (for the anytime p-value)


def start(now: float, history: Tally | None = None) -> JudgeState:
    """A judge at the start of an analysis; `history` is the stable's earlier counts, if known."""
    if history is not None:
        history = history.clamped()
        if history.requests <= 0:
            history = None
    return JudgeState(started_at=now, history=history)


def observe(state: JudgeState, settings: JudgeSettings, canary: Tally, stable: Tally) -> JudgeState:
    """The state after one look: `canary` and `stable` are what each served since the last look."""
    canary, stable = canary.clamped(), stable.clamped()
    totals_canary, totals_stable = state.canary + canary, state.stable + stable
    mode = state.mode
    if mode == Mode.WAITING:
        if totals_stable.requests > 0:
            mode = Mode.PAIRED
        elif totals_canary.requests > 0 and state.history is not None:
            mode = Mode.HISTORY  # chosen from traffic alone, before any bad request is weighed
    new = dataclasses.replace(
        state, canary=totals_canary, stable=totals_stable, mode=mode, looks=state.looks + 1
    )
    if mode == Mode.PAIRED:
        new = _paired_update(new, settings, canary, stable)
        new = dataclasses.replace(new, peak_log_worse=max(new.peak_log_worse, log_evidence_worse(new)))
    return new


def _paired_update(state: JudgeState, settings: JudgeSettings, canary: Tally, stable: Tally) -> JudgeState:
    bad = canary.bad + stable.bad
    if canary.requests <= 0 or stable.requests <= 0 or bad <= 0:
        return state  # no bad request, or one side idle: this look says nothing about theta
    weighted = canary.requests * settings.rho0
    theta0 = weighted / (weighted + stable.requests)
    log_worse = tuple(
        s + canary.bad * math.log(k) - bad * math.log(theta0 * k + 1.0 - theta0)
        for s, k in zip(state.log_worse, KAPPAS, strict=True)
    )
    log_better = tuple(
        s - canary.bad * math.log(k) - bad * math.log(theta0 / k + 1.0 - theta0)
        for s, k in zip(state.log_better, KAPPAS, strict=True)
    )
    return dataclasses.replace(
        state,
        log_worse=log_worse,
        log_worse_extreme=state.log_worse_extreme - canary.bad * math.log(theta0),
        stable_bad_seen=state.stable_bad_seen or stable.bad > 0,
        log_better=log_better,
        log_better_extreme=state.log_better_extreme - stable.bad * math.log1p(-theta0),
        canary_bad_seen=state.canary_bad_seen or canary.bad > 0,
    )


def _log_mixture(components: Sequence[float], extreme: float | None) -> float:
    terms = [_LOG_GRID_WEIGHT + s for s in components]
    if extreme is not None:
        terms.append(_LOG_EXTREME_WEIGHT + extreme)
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def log_evidence_worse(state: JudgeState) -> float:
    """log E_worse of paired mode (0 before any informative look)."""
    extreme = None if state.stable_bad_seen else state.log_worse_extreme
    return _log_mixture(state.log_worse, extreme)


def log_evidence_not_worse(state: JudgeState) -> float:
    extreme = None if state.canary_bad_seen else state.log_better_extreme
    return _log_mixture(state.log_better, extreme)


# --- one-sample pieces: Beta(1,1) mixtures over one side's cumulative counts ----------------


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def _log_likelihood(tally: Tally, p: float) -> float:
    return _xlogy(tally.bad, p) + _xlogy(tally.requests - tally.bad, 1.0 - p)


def _log_marginal(tally: Tally) -> float:
    """log of the Beta(1,1) mixture of Bernoulli likelihoods: log B(x + 1, n - x + 1)."""
    x, n = tally.bad, tally.requests
    return math.lgamma(x + 1) + math.lgamma(n - x + 1) - math.lgamma(n + 2)


def log_evidence_above(tally: Tally, p0: float) -> float:
    """log e-value against "the bad rate is at most p0" (0 when the data agree with it)."""
    if tally.requests <= 0:
        return 0.0
    if p0 <= 0:
        return math.inf if tally.bad > 0 else 0.0
    estimate = tally.bad / tally.requests
    return max(0.0, _log_marginal(tally) - _log_likelihood(tally, min(estimate, p0)))


def log_evidence_below(tally: Tally, p1: float) -> float:
    """log e-value against "the bad rate is at least p1"."""
    if tally.requests <= 0:
        return 0.0
    if p1 >= 1:
        return math.inf if tally.bad < tally.requests else 0.0
    if p1 <= 0:
        return 0.0  # nothing is below 0
    estimate = tally.bad / tally.requests
    return max(0.0, _log_marginal(tally) - _log_likelihood(tally, max(estimate, p1)))


def confidence_bounds(tally: Tally, alpha: float) -> tuple[float, float]:
    """Anytime-valid (lower, upper) bounds of a bad rate: the p where the Beta(1,1) mixture
    martingale stays below 1/alpha (a confidence sequence, so valid at every look at once)."""
    if tally.requests <= 0:
        return 0.0, 1.0
    limit = math.log(1.0 / alpha)
    marginal = _log_marginal(tally)
    estimate = tally.bad / tally.requests

    def excluded(p: float) -> bool:
        return marginal - _log_likelihood(tally, p) >= limit

    def boundary(inside: float, outside: float) -> float:
        for _ in range(60):
            middle = (inside + outside) / 2
            if excluded(middle):
                outside = middle
            else:
                inside = middle
        return inside

    # The estimate itself is never excluded (the mixture is below the largest likelihood), and
    # the likelihood vanishes towards 0 (with a bad request) and 1 (with a good one).
    lower = 0.0 if tally.bad <= 0 else boundary(estimate, 0.0)
    upper = 1.0 if tally.bad >= tally.requests else boundary(estimate, 1.0)
    return lower, upper


# --- the verdict -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    phase: AnalysisPhase  # RUNNING while undecided before max-duration
    message: str
    evidence_worse: float  # the e-value behind `worse` (compare with threshold)
    evidence_not_worse: float
    threshold: float  # what an e-value must reach: 1/alpha (2/alpha in history mode)
    p_value: float  # anytime-valid p-value of "not worse" (paired mode), 1 otherwise
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None  # (canary, stable) with abs tol


def judge(state: JudgeState, settings: JudgeSettings, now: float, *, bad: str = "errors") -> Judgement:
    """The verdict at `now`; `bad` names the bad requests in messages ("errors", "slow requests")."""
    elapsed = now - state.started_at
    counts = _describe_counts(state, bad)
    if state.mode == Mode.HISTORY:
        return _judge_history(state, settings, elapsed, counts)
    threshold = 1.0 / settings.alpha
    log_worse = log_evidence_worse(state) if state.mode == Mode.PAIRED else 0.0
    log_better = log_evidence_not_worse(state) if state.mode == Mode.PAIRED else 0.0
    evidence = (_exp(log_worse), _exp(log_better))
    p_value = min(1.0, math.exp(-state.peak_log_worse))
    bounds = None
    if state.mode == Mode.PAIRED:
        worse_reasons = _worse_conditions(state, settings, log_worse)
        if settings.absolute_tolerance > 0:
            bounds = (
                confidence_bounds(state.canary, settings.alpha / 2),
                confidence_bounds(state.stable, settings.alpha / 2),
            )
            worse_reasons.append(_absolute_condition(bounds, settings))
        if all(ok for ok, _ in worse_reasons):
            why = "; ".join(text for _, text in worse_reasons)
            return Judgement(
                Verdict.WORSE,
                AnalysisPhase.FAILED,
                f"worse: {counts}; {why}",
                *evidence,
                threshold,
                p_value,
                bounds,
            )
        if log_better >= settings.log_threshold:
            message = (
                f"not worse: {counts}; evidence {_fmt(evidence[1])} >= 1/alpha = {_fmt(threshold)} that "
                f"the canary's {bad} rate is below {settings.rho0:g} x the stable's"
            )
            return Judgement(
                Verdict.NOT_WORSE, AnalysisPhase.SUCCESSFUL, message, *evidence, threshold, p_value, bounds
            )
    status = f"evidence {_fmt(evidence[0])} of {_fmt(threshold)} needed"
    return _undecided(state, settings, elapsed, counts, status, evidence, threshold, p_value, bounds)


def _worse_conditions(state: JudgeState, settings: JudgeSettings, log_worse: float) -> list[tuple[bool, str]]:
    threshold = 1.0 / settings.alpha
    conditions = [
        (
            log_worse >= settings.log_threshold,
            f"evidence {_fmt(_exp(log_worse))} >= 1/alpha = {_fmt(threshold)} that the canary's rate "
            f"is above {settings.rho0:g} x the stable's",
        )
    ]
    if settings.floor > 0:
        log_floor = log_evidence_above(state.canary, settings.floor)
        conditions.append(
            (
                log_floor >= settings.log_threshold,
                f"evidence {_fmt(_exp(log_floor))} that it is above {_pct(settings.floor)}",
            )
        )
    return conditions


def _absolute_condition(
    bounds: tuple[tuple[float, float], tuple[float, float]], settings: JudgeSettings
) -> tuple[bool, str]:
    (canary_low, _), (_, stable_high) = bounds
    limit = settings.rho0 * stable_high + settings.absolute_tolerance
    return (
        canary_low > limit,
        f"its rate is at least {_pct(canary_low)} and the stable's at most {_pct(stable_high)} "
        f"(confidence {1 - settings.alpha:g}), more than {_pct(settings.absolute_tolerance)} apart",
    )


def _judge_history(state: JudgeState, settings: JudgeSettings, elapsed: float, counts: str) -> Judgement:
    """No stable traffic: the canary against the stable's history, alpha/2 for each."""
    assert state.history is not None
    half = settings.alpha / 2
    history_low, history_high = confidence_bounds(state.history, half)
    worse_limit = settings.rho0 * history_high + settings.absolute_tolerance
    log_worse = log_evidence_above(state.canary, worse_limit)
    log_better = log_evidence_below(state.canary, settings.rho0 * history_low)
    threshold = 2.0 / settings.alpha
    evidence = (_exp(log_worse), _exp(log_better))
    history_text = (
        f"no stable traffic since the analysis started: compared with the stable's history "
        f"({_count(state.history.bad)} in {_count(state.history.requests)}, at most {_pct(history_high)})"
    )
    floor_ok = (
        settings.floor <= 0 or log_evidence_above(state.canary, settings.floor) >= settings.log_threshold
    )
    if log_worse >= math.log(threshold) and floor_ok:
        message = (
            f"worse: {counts}; {history_text}; evidence {_fmt(evidence[0])} >= 2/alpha = {_fmt(threshold)} "
            f"that the canary's rate is above {_pct(worse_limit)}"
        )
        return Judgement(Verdict.WORSE, AnalysisPhase.FAILED, message, *evidence, threshold, 1.0)
    if log_better >= math.log(threshold):
        message = (
            f"not worse: {counts}; {history_text}; evidence {_fmt(evidence[1])} >= 2/alpha that the "
            f"canary's rate is below {_pct(settings.rho0 * history_low)}"
        )
        return Judgement(Verdict.NOT_WORSE, AnalysisPhase.SUCCESSFUL, message, *evidence, threshold, 1.0)
    status = f"{history_text}; evidence {_fmt(evidence[0])} of {_fmt(threshold)} needed"
    return _undecided(state, settings, elapsed, counts, status, evidence, threshold, 1.0, None)


def _undecided(
    state: JudgeState,
    settings: JudgeSettings,
    elapsed: float,
    counts: str,
    status: str,
    evidence: tuple[float, float],
    threshold: float,
    p_value: float,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None,
) -> Judgement:
    if state.mode == Mode.WAITING and state.canary.requests > 0:
        status = "no stable traffic since the analysis started and no stable history: nothing to compare with"
    if elapsed < settings.max_duration:
        phase, message = AnalysisPhase.RUNNING, f"undecided: {counts}; {status}"
    elif state.canary.requests <= 0:
        phase, message = AnalysisPhase.INCONCLUSIVE, "the canary served no request before max-duration"
    elif state.mode == Mode.WAITING:
        phase, message = AnalysisPhase.INCONCLUSIVE, f"undecided at max-duration: {counts}; {status}"
    elif settings.require_evidence:
        phase = AnalysisPhase.INCONCLUSIVE
        message = f"undecided at max-duration (require-evidence is set): {counts}; {status}"
    else:
        phase = AnalysisPhase.SUCCESSFUL
        message = (
            f"undecided at max-duration, which passes (as a fixed-horizon test that did not reject): "
            f"{counts}; {status}"
        )
    return Judgement(Verdict.UNDECIDED, phase, message, *evidence, threshold, p_value, bounds)


# --- what a measurement shows ---------------------------------------------------------------


def result_value(
    state: JudgeState, settings: JudgeSettings, judgement: Judgement, now: float, *, bad: str = "errors"
) -> dict[str, Any]:
    """The measurement's `result`: verdict, counts and rates per side, evidence against alpha."""

    def side(tally: Tally) -> dict[str, Any]:
        return {"requests": tally.requests, bad: tally.bad, "rate": tally.rate}

    value: dict[str, Any] = {
        "verdict": judgement.verdict.value,
        "canary": side(state.canary),
        "stable": side(state.stable),
        "evidence": {
            "worse": judgement.evidence_worse,
            "notWorse": judgement.evidence_not_worse,
            "threshold": judgement.threshold,
        },
        "pValue": judgement.p_value,
        "alpha": settings.alpha,
        "mode": state.mode.value,
        "elapsed": round(now - state.started_at, 3),
    }
    if state.history is not None:
        value["history"] = side(state.history)
    if judgement.bounds is not None:
        (canary_low, canary_high), (stable_low, stable_high) = judgement.bounds
        value["bounds"] = {"canary": [canary_low, canary_high], "stable": [stable_low, stable_high]}
    return value


def _exp(log_value: float) -> float:
    return math.inf if log_value > 700 else math.exp(log_value)


def _fmt(number: float) -> str:
    if math.isinf(number):
        return "inf"
    return f"{number:.3g}" if number < 1e4 else f"{number:.2e}"


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _count(value: float) -> str:
    return f"{value:g}"


def _describe_counts(state: JudgeState, bad: str) -> str:
    def side(name: str, tally: Tally) -> str:
        rate = "" if tally.rate is None else f" ({_pct(tally.rate)})"
        return f"{name} {_count(tally.bad)} {bad} in {_count(tally.requests)} requests{rate}"

    return f"{side('canary', state.canary)}, {side('stable', state.stable)}"
