"""How fast the pure core decides: engine decisions/s and condition evaluations/s.

Run: .venv/bin/python bench/engine.py     (prints the median of 5 runs of each)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from meshshift.analysis.expr import compile_condition
from meshshift.engine.machine import Command, CommandKind, Observation, reconcile
from meshshift.engine.state import RolloutPhase, RolloutState, Stage
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    HeaderMatch,
    Pause,
    RolloutSpec,
    SetHeaderRoute,
    SetWeight,
    StepAnalysis,
    StringMatch,
    TemplateRef,
)

RUNS = 5

SPEC = RolloutSpec(
    steps=(
        SetWeight(10),
        SetHeaderRoute("qa", (HeaderMatch("X-Canary", StringMatch("exact", "true")),)),
        Pause(120),
        StepAnalysis(AnalysisRef((TemplateRef("success-rate"),))),
        SetWeight(25),
        Pause(120),
        StepAnalysis(AnalysisRef((TemplateRef("success-rate"),))),
        SetWeight(50),
        Pause(None),
    )
)


def one_rollout() -> int:
    """Drive a whole rollout, decision by decision; returns the number of decisions."""
    state = RolloutState(stable_revision="v1")
    now = 0.0
    verdicts: dict[str, AnalysisPhase] = {}
    stable = "v1"
    decisions = 0
    while not (state.stable_revision == "v2" and state.phase == RolloutPhase.HEALTHY):
        # A human promotes an indefinite pause; every analysis succeeds.
        waits_for_promote = state.phase == RolloutPhase.PAUSED and state.pause_until is None
        commands = (Command(CommandKind.PROMOTE, f"p{decisions}"),) if waits_for_promote else ()
        observed = Observation(revision="v2", stable_revision=stable, analysis=verdicts, commands=commands)
        decision = reconcile(SPEC, state, now, observed)
        decisions += 1
        state = decision.state
        for record in state.analysis_runs:
            verdicts.setdefault(record.name, AnalysisPhase.SUCCESSFUL)
        if state.stage == Stage.PROMOTING:
            stable = "v2"
        now = decision.wake_at or now + 1.0
    return decisions


def rate(work: Callable[[], int], seconds: float = 1.0) -> float:
    """Operations per second of `work` (which returns how many operations it did)."""
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def condition_evaluations() -> int:
    condition = compile_condition("result[0] >= 0.95 && !isNaN(result[0])")
    value = [0.97]
    for _ in range(1000):
        condition.test(value)
    return 1000


def main() -> None:
    decisions = [rate(one_rollout) for _ in range(RUNS)]
    evaluations = [rate(condition_evaluations) for _ in range(RUNS)]
    print(f"engine decisions/s (median of {RUNS}): {statistics.median(decisions):,.0f}")
    print(f"condition evaluations/s (median of {RUNS}): {statistics.median(evaluations):,.0f}")
    print(f"  decisions per whole rollout: {one_rollout()}")


if __name__ == "__main__":
    main()
