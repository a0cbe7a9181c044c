"""How the observability surface scales: /metrics and API views for N rollouts.

Run: .venv/bin/python bench/observe.py     (medians of 15 runs, synthetic snapshots)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from meshshift.analysis.run import Measurement, record_measurement, start_run
from meshshift.engine.actions import AnalysisKind
from meshshift.engine.state import AnalysisRunRecord, RolloutPhase, RolloutState, Stage
from meshshift.observe.api import rollout_summary, rollout_view
from meshshift.observe.metrics import metrics_registry, render
from meshshift.ports import AppliedRoutes, WorkloadStatus
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    Metric,
    Pause,
    ProviderSpec,
    RolloutSpec,
    SetWeight,
    TemplateRef,
)

RUNS = 15
SPEC = RolloutSpec(steps=(SetWeight(10), Pause(60), SetWeight(50), Pause()))
METRICS = (
    Metric("success-rate", ProviderSpec("prometheus", {"query": "x"}), interval=60.0, count=10),
    Metric("latency", ProviderSpec("prometheus", {"query": "y"}), interval=60.0, count=10),
)


def snapshot(index: int) -> RolloutSnapshot:
    """A paused rollout at 50% with a background analysis of two metrics, ten measurements each."""
    run = start_run("v2-1-background", METRICS, args={}, now=0.0)
    for second in range(10):
        for metric in METRICS:
            measurement = Measurement(AnalysisPhase.SUCCESSFUL, second, second + 0.5, [0.99], "", "q")
            run = record_measurement(run, metric.name, measurement)
    ref = AnalysisRef((TemplateRef("t"),))
    record = AnalysisRunRecord("v2-1-background", AnalysisKind.BACKGROUND, None, ref, AnalysisPhase.RUNNING)
    state = RolloutState(
        "v1", RolloutPhase.PAUSED, Stage.STEPPING, "v2", 1, 3,
        desired_weight=50, analysis_runs=(record,), rollout_started_at=0.0,
    )  # fmt: skip
    images = {"stable": ("a:1",), "canary": ("a:2",)}
    workloads = WorkloadStatus("v2", "v1", True, True, images, {"desired": 3})
    return RolloutSnapshot(
        RolloutKey("ns", f"app{index}"), SPEC, None, state, {run.name: run}, workloads,
        {"envoy": AppliedRoutes(50)}, ("envoy",), 0.0, None, 0.01,
    )  # fmt: skip


def median_ms(work: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(count: int) -> str:
    registry = RolloutRegistry()
    collectors, rollout_metrics = metrics_registry(registry)
    for index in range(count):
        registry.publish(snapshot(index))
    body = render(collectors)
    scrape = median_ms(lambda: render(collectors))
    listing = median_ms(lambda: json.dumps([rollout_summary(s) for s in registry.list()]))
    one = median_ms(lambda: json.dumps(rollout_view(registry.list()[0])))
    on_loop = median_ms(rollout_metrics.capture)
    return (
        f"{count:5d} rollouts: /metrics {scrape:7.1f} ms ({len(body) // 1024} KiB), "
        f"{on_loop:5.1f} ms of it on the event loop; list view {listing:6.1f} ms; one view {one:5.2f} ms"
    )


def series_of_one_rollout() -> str:
    """How many series one rollout adds to /metrics (this one: paused at 50%, one analysis run
    of two metrics, reconciled once; events, notifications and API calls add theirs)."""

    registry = RolloutRegistry()
    collectors, _ = metrics_registry(registry)

    def samples() -> int:
        return sum(1 for line in render(collectors).decode().splitlines() if not line.startswith("#"))

    before = samples()
    registry.publish(snapshot(0))
    with_one = samples()
    registry.publish(snapshot(1))
    with_two = samples()
    first, next_one = with_one - before, with_two - with_one
    return f"series per rollout: {first} (the first), {next_one} (the next, same namespace)"


def main() -> None:
    print(series_of_one_rollout())
    for count in (10, 100, 1000):
        print(measure(count))


if __name__ == "__main__":
    main()
