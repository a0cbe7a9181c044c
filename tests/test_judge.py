"""The sequential judge on exact cases: each expected value is worked out by hand from the
test's definition (README, "The sequential judge"), not read back from the code."""

from __future__ import annotations

import math

import pytest

from meshshift.analysis import judge as j
from meshshift.analysis.counters import advance
from meshshift.analysis.judge import JudgeSettings, Mode, Tally, Verdict
from meshshift.codec import decode, encode
from meshshift.spec.model import AnalysisPhase

EXACT = JudgeSettings(relative_tolerance=0.0)  # theta0 is then the canary's share of requests


def looked(
    *looks: tuple[Tally, Tally], settings: JudgeSettings = EXACT, history: Tally | None = None
) -> j.JudgeState:
    state = j.start(0.0, history)
    for canary, stable in looks:
        state = j.observe(state, settings, canary, stable)
    return state


def evidence_by_hand(looks: list[tuple[Tally, Tally]], rho0: float) -> float:
    """E_worse straight from its definition: the mixture of per-look likelihood ratios."""
    total = 0.0
    stable_bad = any(stable.bad for _, stable in looks)
    for k in j.KAPPAS:
        product = 1.0
        for canary, stable in looks:
            theta0 = canary.requests * rho0 / (canary.requests * rho0 + stable.requests)
            theta = theta0 * k / (theta0 * k + 1 - theta0)
            product *= (theta / theta0) ** canary.bad * ((1 - theta) / (1 - theta0)) ** stable.bad
        total += (1 - j.EXTREME_WEIGHT) / len(j.KAPPAS) * product
    if not stable_bad:
        extreme = 1.0
        for canary, stable in looks:
            theta0 = canary.requests * rho0 / (canary.requests * rho0 + stable.requests)
            extreme *= (1 / theta0) ** canary.bad
        total += j.EXTREME_WEIGHT * extreme
    return total


def test_the_grid_is_what_the_readme_says() -> None:
    assert len(j.KAPPAS) == 16
    assert j.KAPPAS[0] == pytest.approx(1.5) and j.KAPPAS[-1] == pytest.approx(3000)
    ratios = [b / a for a, b in zip(j.KAPPAS, j.KAPPAS[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios))  # log-spaced


def test_three_bad_canary_requests_and_none_on_the_stable_are_worse_at_ten_percent() -> None:
    # theta0 = 10 / 100; the k = infinity half of the prior alone gives 0.5 * 10^3 = 500 >= 100.
    state = looked((Tally(10, 3), Tally(90, 0)))
    verdict = j.judge(state, EXACT, now=2.0)
    assert verdict.verdict == Verdict.WORSE and verdict.phase == AnalysisPhase.FAILED
    assert verdict.evidence_worse >= 500
    assert verdict.evidence_worse == pytest.approx(evidence_by_hand([(Tally(10, 3), Tally(90, 0))], 1.0))
    assert verdict.threshold == 100
    assert "canary 3 errors in 10 requests (30%)" in verdict.message


def test_two_bad_requests_can_never_be_enough_at_ten_percent_and_alpha_one_percent() -> None:
    # Every component is at most (1/theta0)^2 = 100 and only k = infinity reaches it: E < 100.
    state = looked((Tally(10, 2), Tally(90, 0)))
    verdict = j.judge(state, EXACT, now=2.0)
    assert verdict.verdict == Verdict.UNDECIDED and verdict.phase == AnalysisPhase.RUNNING
    assert 50 < verdict.evidence_worse < 100


def test_a_canary_that_looks_like_the_stable_brings_no_evidence() -> None:
    # Canary share of errors = its share of requests: every k > 1 gives k (0.1k + 0.9)^-10 < 1,
    # and the stable's errors kill the k = infinity component.
    state = looked((Tally(100, 1), Tally(900, 9)))
    verdict = j.judge(state, EXACT, now=1.0)
    assert verdict.verdict == Verdict.UNDECIDED
    assert verdict.evidence_worse < 1
    assert verdict.p_value == 1.0


def test_evidence_matches_its_definition_over_several_looks_with_changing_weights() -> None:
    looks = [
        (Tally(10, 1), Tally(90, 0)),
        (Tally(25, 2), Tally(75, 1)),
        (Tally(50, 3), Tally(50, 0)),
        (Tally(0, 0), Tally(100, 2)),  # canary idle: says nothing
    ]
    settings = JudgeSettings(relative_tolerance=0.25)
    state = looked(*looks, settings=settings)
    expected = evidence_by_hand([look for look in looks if look[0].requests], 1.25)
    assert j.judge(state, settings, now=4.0).evidence_worse == pytest.approx(expected, rel=1e-12)
    assert state.canary == Tally(85, 6) and state.stable == Tally(315, 3)


def test_with_a_constant_split_it_does_not_matter_how_often_the_judge_looks() -> None:
    once = looked((Tally(100, 6), Tally(900, 4)))
    often = looked(*[(Tally(10, 0.6), Tally(90, 0.4))] * 10)
    assert j.log_evidence_worse(often) == pytest.approx(j.log_evidence_worse(once), rel=1e-12)
    assert j.log_evidence_not_worse(often) == pytest.approx(j.log_evidence_not_worse(once), rel=1e-12)


def test_the_relative_tolerance_moves_the_null() -> None:
    # Canary 2x the stable's rate: worse with tolerance 0, not with tolerance 1 (2x allowed).
    look = (Tally(5000, 400), Tally(5000, 200))
    assert j.judge(looked(look), EXACT, now=1.0).verdict == Verdict.WORSE
    loose = JudgeSettings(relative_tolerance=1.0)
    assert j.judge(looked(look, settings=loose), loose, now=1.0).verdict == Verdict.UNDECIDED


def test_a_clearly_better_canary_is_not_worse_early() -> None:
    # k = 0 gives X = (1 / (1 - theta0))^100 with theta0 = 1.25 * 1000 / 2250, weighted 0.5; every
    # finite k < 1 gives less than X: so 0.5 X <= E < X.
    settings = JudgeSettings()
    verdict = j.judge(looked((Tally(1000, 0), Tally(1000, 100)), settings=settings), settings, now=5.0)
    assert verdict.verdict == Verdict.NOT_WORSE and verdict.phase == AnalysisPhase.SUCCESSFUL
    log_x = -100 * math.log(1 - 1250 / 2250)
    assert math.log(0.5) + log_x <= math.log(verdict.evidence_not_worse) < log_x
    assert "below 1.25 x the stable's" in verdict.message


def test_undecided_at_max_duration_passes_or_with_require_evidence_is_inconclusive() -> None:
    state = looked((Tally(100, 1), Tally(900, 9)))
    settings = JudgeSettings(max_duration=60)
    assert j.judge(state, settings, now=59.9).phase == AnalysisPhase.RUNNING
    passed = j.judge(state, settings, now=60.0)
    assert passed.phase == AnalysisPhase.SUCCESSFUL and passed.verdict == Verdict.UNDECIDED
    assert "fixed-horizon" in passed.message
    strict = JudgeSettings(max_duration=60, require_evidence=True)
    assert j.judge(state, strict, now=60.0).phase == AnalysisPhase.INCONCLUSIVE


def test_no_canary_traffic_is_never_a_pass_before_max_duration() -> None:
    state = looked(*[(Tally(0, 0), Tally(100, 5))] * 30)
    settings = JudgeSettings(max_duration=60)
    assert j.judge(state, settings, now=59.0).phase == AnalysisPhase.RUNNING
    ended = j.judge(state, settings, now=60.0)
    assert ended.phase == AnalysisPhase.INCONCLUSIVE and "no request" in ended.message


def test_no_stable_traffic_and_no_history_says_so_and_ends_inconclusive() -> None:
    state = looked(*[(Tally(100, 50), Tally(0, 0))] * 5)
    assert state.mode == Mode.WAITING
    settings = JudgeSettings(max_duration=60)
    running = j.judge(state, settings, now=5.0)
    assert running.phase == AnalysisPhase.RUNNING
    assert "no stable traffic since the analysis started and no stable history" in running.message
    assert j.judge(state, settings, now=61.0).phase == AnalysisPhase.INCONCLUSIVE


def test_no_stable_traffic_compares_with_the_stable_history() -> None:
    # History 0 errors in 10000: upper bound u at alpha/2 solves 10000 * -log(1 - u) = log(200 * 10001).
    history = Tally(10000, 0)
    upper = 1 - math.exp(-math.log(200 * 10001) / 10000)
    low, high = j.confidence_bounds(history, 0.005)
    assert low == 0 and high == pytest.approx(upper, rel=1e-6)
    settings = JudgeSettings()
    bad = looked((Tally(20, 10), Tally(0, 0)), settings=settings, history=history)
    assert bad.mode == Mode.HISTORY
    verdict = j.judge(bad, settings, now=3.0)
    assert verdict.verdict == Verdict.WORSE and verdict.threshold == 200
    # log E = log B(11, 11) - log L(1.25 u): worked out with the same closed forms.
    p0 = 1.25 * upper
    log_e = 2 * math.lgamma(11) - math.lgamma(22) - (10 * math.log(p0) + 10 * math.log(1 - p0))
    assert math.log(verdict.evidence_worse) == pytest.approx(log_e, rel=1e-6)
    assert "history" in verdict.message
    healthy = looked((Tally(2000, 0), Tally(0, 0)), settings=settings, history=history)
    assert j.judge(healthy, settings, now=3.0).verdict == Verdict.UNDECIDED


def test_the_mode_is_chosen_from_traffic_and_kept() -> None:
    state = looked((Tally(0, 0), Tally(0, 0)))
    assert state.mode == Mode.WAITING
    state = j.observe(state, EXACT, Tally(5, 0), Tally(0, 0))
    assert state.mode == Mode.WAITING  # no stable traffic, no history: wait for the stable
    state = j.observe(state, EXACT, Tally(5, 0), Tally(40, 0))
    assert state.mode == Mode.PAIRED
    with_history = looked((Tally(5, 0), Tally(0, 0)), history=Tally(100, 1))
    assert with_history.mode == Mode.HISTORY
    later = j.observe(with_history, EXACT, Tally(5, 0), Tally(50, 0))
    assert later.mode == Mode.HISTORY  # locked: the alpha was spent on one test only


def test_a_floor_keeps_a_small_bad_share_from_being_worse() -> None:
    # 3 slow canary requests in 100 against none of 900: worse as a rate, but 3 % < floor 5 %.
    look = (Tally(100, 3), Tally(900, 0))
    plain = JudgeSettings()
    assert j.judge(looked(look, settings=plain), plain, now=1.0).verdict == Verdict.WORSE
    floored = JudgeSettings(floor=0.05)
    assert j.judge(looked(look, settings=floored), floored, now=1.0).verdict == Verdict.UNDECIDED
    slow = (Tally(100, 40), Tally(900, 0))
    verdict = j.judge(looked(slow, settings=floored), floored, now=1.0)
    assert verdict.verdict == Verdict.WORSE and "above 5%" in verdict.message


def test_an_absolute_tolerance_needs_the_confidence_bounds_apart() -> None:
    look = (Tally(30, 3), Tally(270, 0))
    assert j.judge(looked(look), EXACT, now=1.0).verdict == Verdict.WORSE
    settings = JudgeSettings(relative_tolerance=0.0, absolute_tolerance=0.001)
    verdict = j.judge(looked(look, settings=settings), settings, now=1.0)
    assert verdict.verdict == Verdict.UNDECIDED and verdict.bounds is not None
    (canary_low, _), (_, stable_high) = verdict.bounds
    assert canary_low < stable_high + 0.001
    much = (Tally(3000, 300), Tally(27000, 0))
    verdict = j.judge(looked(much, settings=settings), settings, now=1.0)
    assert verdict.verdict == Verdict.WORSE


def test_confidence_bounds_are_where_the_mixture_reaches_one_over_alpha() -> None:
    tally = Tally(30, 3)
    low, high = j.confidence_bounds(tally, 0.01)
    log_marginal = math.lgamma(4) + math.lgamma(28) - math.lgamma(32)
    for bound in (low, high):
        log_likelihood = 3 * math.log(bound) + 27 * math.log(1 - bound)
        assert log_marginal - log_likelihood == pytest.approx(math.log(100), abs=1e-6)
    assert low < 0.1 < high


def test_one_sample_evidence_is_zero_when_the_data_agree_with_the_null() -> None:
    assert j.log_evidence_above(Tally(100, 3), 0.05) == 0.0
    assert j.log_evidence_above(Tally(0, 0), 0.05) == 0.0
    # 10 slow of 10 against p <= 0.05: log(1/11) - 10 log(0.05).
    assert j.log_evidence_above(Tally(10, 10), 0.05) == pytest.approx(-math.log(11) - 10 * math.log(0.05))
    assert j.log_evidence_below(Tally(100, 0), 0.0) == 0.0


def test_counts_are_clamped_and_settings_checked() -> None:
    state = looked((Tally(10, 12), Tally(-5, 1)))
    assert state.canary == Tally(10, 10) and state.stable == Tally(0, 0)
    for wrong in (
        {"alpha": 0},
        {"alpha": 1.5},
        {"relative_tolerance": -1},
        {"max_duration": 0},
        {"floor": 1},
    ):
        with pytest.raises(ValueError):
            JudgeSettings(**wrong)


def test_the_state_survives_json_and_the_result_says_everything() -> None:
    settings = JudgeSettings()
    state = looked((Tally(10, 3), Tally(90, 0)), (Tally(10, 1), Tally(90, 0)), settings=settings)
    assert decode(j.JudgeState, encode(state)) == state
    verdict = j.judge(state, settings, now=2.5)
    value = j.result_value(state, settings, verdict, now=2.5)
    assert value["verdict"] == "worse"
    assert value["canary"] == {"requests": 20, "errors": 4, "rate": 0.2}
    assert value["stable"] == {"requests": 180, "errors": 0, "rate": 0.0}
    assert value["evidence"]["threshold"] == 100 and value["evidence"]["worse"] >= 100
    assert value["alpha"] == 0.01 and value["mode"] == "paired" and value["elapsed"] == 2.5


def test_counters_survive_resets_and_new_series() -> None:
    first = advance({}, {"a": 10, "b": 5})
    assert first.increases == {"a": 10, "b": 5}
    step = advance({"a": 10, "b": 5}, {"a": 15, "b": 2, "c": 1})
    assert step.increases == {"a": 5, "b": 2, "c": 1} and step.resets == ("b",)
    gone = advance(step.last, {"a": 16})
    assert gone.increases == {"a": 1} and gone.last == {"a": 16, "b": 2, "c": 1}
    back = advance(gone.last, {"a": 16, "b": 4, "c": float("nan")})
    assert back.increases == {"a": 0, "b": 2}
