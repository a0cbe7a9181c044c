"""/metrics during a live rollout: every name and label set of DESIGN.md §4, exactly."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from meshshift.analysis.run import Measurement, record_measurement, start_run
from meshshift.engine.actions import EventType, RecordEvent
from meshshift.engine.state import RolloutPhase, RolloutState, Stage
from meshshift.kube.resources import KubeRequests
from meshshift.observe.metrics import RolloutMetrics, render, render_off_loop
from meshshift.observe.server import serve
from meshshift.ports import AppliedRoutes, WorkloadStatus
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings
from meshshift.spec.model import AnalysisPhase, Metric, ProviderSpec
from tests.support.inmemory import (
    PAUSING_SPEC,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)

Sample = tuple[str, dict[str, str], float]
SAMPLE_LINE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# DESIGN.md §4: Argo Rollouts' names and label sets, then the tutorial's.
ARGO_LABELS: dict[str, set[str]] = {
    "rollout_info": {"namespace", "name", "strategy", "traffic_router", "phase"},
    "rollout_info_replicas_available": {"namespace", "name"},
    "rollout_info_replicas_unavailable": {"namespace", "name"},
    "rollout_info_replicas_desired": {"namespace", "name"},
    "rollout_info_replicas_updated": {"namespace", "name"},
    "rollout_phase": {"namespace", "name", "strategy", "phase"},
    "rollout_reconcile_bucket": {"namespace", "name", "le"},
    "rollout_reconcile_sum": {"namespace", "name"},
    "rollout_reconcile_count": {"namespace", "name"},
    "rollout_reconcile_error": {"namespace", "name"},
    "rollout_events_total": {"namespace", "name", "type", "reason"},
    "analysis_run_info": {"namespace", "name", "phase"},
    "analysis_run_phase": {"namespace", "name", "phase"},
    "analysis_run_reconcile_bucket": {"namespace", "name", "le"},
    "analysis_run_reconcile_error": {"namespace", "name"},
    "analysis_template_info": {"namespace", "name"},
    "analysis_template_metric_info": {"namespace", "name", "type", "metric"},
    "analysis_run_metric_type": {"namespace", "name", "metric", "type"},
    "analysis_run_metric_phase": {"namespace", "name", "metric", "type", "dry_run", "phase"},
    "argo_rollouts_controller_info": {"version"},
    "build_info": {"version", "goversion", "goarch", "commit"},
    "process_start_time_seconds": set(),
}
TUTORIAL_LABELS: dict[str, set[str]] = {
    "argo_rollouts_info": {"namespace", "rollout", "strategy", "traffic_router", "phase"},
    "argo_rollouts_phase": {"namespace", "rollout", "strategy", "phase"},
    "argo_rollouts_analysis_run_phase": {"namespace", "rollout", "analysis_run", "phase"},
    "argo_rollouts_analysis_run_metric_phase": {
        "namespace",
        "rollout",
        "analysis_run",
        "metric",
        "type",
        "dry_run",
        "phase",
    },
    "argo_rollouts_rollout_duration_seconds": {"namespace", "rollout"},
}
OURS_LABELS: dict[str, set[str]] = {
    "flagger_info": {"version", "mesh_provider"},
    "flagger_canary_total": {"namespace"},
    "flagger_canary_duration_seconds_bucket": {"name", "namespace", "le"},
    "flagger_canary_weight": {"workload", "namespace"},
    "flagger_canary_status": {"name", "namespace"},
    "flagger_canary_metric_analysis": {"name", "namespace", "metric"},
    "meshshift_rollout_step": {"namespace", "rollout"},
    "meshshift_rollout_steps": {"namespace", "rollout"},
    "meshshift_rollout_desired_weight": {"namespace", "rollout"},
    "meshshift_rollout_applied_weight": {"namespace", "rollout", "router"},
    "meshshift_rollout_rollbacks_total": {"namespace", "rollout"},
    "meshshift_analysis_metric_value": {"namespace", "rollout", "analysis_run", "metric"},
}
ROLLOUT_PHASES = {"Completed", "Progressing", "Paused", "Timeout", "Error", "Abort"}  # rollout_phase
TUTORIAL_PHASES = ROLLOUT_PHASES | {"InvalidSpec"}
ANALYSIS_PHASES = {"Pending", "Running", "Successful", "Failed", "Error", "Inconclusive"}

SPEC = PAUSING_SPEC


def parse(text: str) -> list[Sample]:
    """The samples exactly as exposed (prometheus_client's parser renames counters)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_LINE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        labels = {
            key: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)
            for key, value in LABEL.findall(match["labels"] or "")
        }
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def by_name(samples: list[Sample]) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in samples:
        found[name].append((labels, value))
    return found


def only(samples: list[tuple[dict[str, str], float]], **labels: str) -> list[float]:
    return [value for found, value in samples if all(found.get(k) == v for k, v in labels.items())]


@pytest.fixture
async def metrics_daemon(
    registry: RolloutRegistry, settings: DaemonSettings
) -> AsyncIterator[tuple[str, RolloutMetrics]]:
    metrics = RolloutMetrics(registry)
    async with serve(registry, settings, rollout_metrics=metrics) as base_url:
        yield base_url, metrics
    metrics.close()


async def scrape(http: aiohttp.ClientSession, base_url: str) -> str:
    async with http.get(f"{base_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


async def test_every_name_and_label_set_during_a_rollout(
    registry: RolloutRegistry, metrics_daemon: tuple[str, RolloutMetrics], http: aiohttp.ClientSession
) -> None:
    base_url, metrics = metrics_daemon
    sinks = [metrics.event_sink(RolloutKey("default", "myapp"))]
    harness = make_controller(
        registry,
        SPEC,
        templates=[success_rate_template(interval="100ms", count=2)],
        sinks=sinks,
        wrap_templates=metrics.template_source,
    )
    async with running(harness):
        await release_until_paused(harness, 3)
        found = by_name(parse(await scrape(http, base_url)))

    for name, labels in {**ARGO_LABELS, **TUTORIAL_LABELS, **OURS_LABELS}.items():
        assert found.get(name), f"{name} is missing"
        label_sets = {frozenset(series) for series, _ in found[name]}
        assert label_sets == {frozenset(labels)}, f"{name} has labels {label_sets}, expected {labels}"

    ours = {"namespace": "default", "name": "myapp"}
    assert only(found["rollout_info"], **ours, strategy="canary", traffic_router="Envoy", phase="Paused") == [
        1
    ]
    phases = {labels["phase"]: value for labels, value in found["rollout_phase"]}
    assert phases == {phase: float(phase == "Paused") for phase in ROLLOUT_PHASES}
    tutorial = {labels["phase"]: value for labels, value in found["argo_rollouts_phase"]}
    assert tutorial == {phase: float(phase == "Paused") for phase in TUTORIAL_PHASES}
    assert only(found["argo_rollouts_info"], rollout="myapp", phase="Paused") == [1]

    # The replica counts come from the workloads: 4 stable, the canary scaled to full.
    assert only(found["rollout_info_replicas_desired"], **ours) == [4]
    assert only(found["rollout_info_replicas_updated"], **ours) == [4]
    assert only(found["rollout_info_replicas_available"], **ours) == [8]
    assert only(found["rollout_info_replicas_unavailable"], **ours) == [0]

    buckets = [labels["le"] for labels, _ in found["rollout_reconcile_bucket"]]
    assert buckets == ["0.01", "0.15", "0.25", "0.5", "1", "+Inf"]
    assert only(found["rollout_reconcile_count"], **ours)[0] >= 3
    assert only(found["rollout_reconcile_error"], **ours) == [0]
    assert only(found["rollout_events_total"], **ours, type="Normal", reason="RolloutUpdated") == [1]
    assert only(found["rollout_events_total"], **ours, type="Normal", reason="RolloutPaused") == [1]
    assert "rollout_duration_seconds_count" not in found  # nothing finished yet: no empty histogram
    assert only(found["argo_rollouts_controller_info"]) == [1]
    template = {"namespace": "default", "name": "success-rate"}
    assert found["analysis_template_info"] == [(template, 1.0)]
    assert found["analysis_template_metric_info"] == [
        ({**template, "type": "Prometheus", "metric": "success-rate"}, 1.0)
    ]

    # One analysis run, named <rollout>-<run>, with one Prometheus metric that succeeded.
    runs = [labels for labels, _ in found["analysis_run_info"]]
    assert len(runs) == 1 and runs[0]["phase"] == "Successful"
    run_name = runs[0]["name"]
    assert run_name.startswith("myapp-v2-")
    assert found["analysis_run_metric_type"] == [
        ({"namespace": "default", "name": run_name, "metric": "success-rate", "type": "Prometheus"}, 1.0)
    ]
    metric_phases = {labels["phase"]: value for labels, value in found["analysis_run_metric_phase"]}
    assert metric_phases == {phase: float(phase == "Successful") for phase in ANALYSIS_PHASES}
    assert {labels["dry_run"] for labels, _ in found["analysis_run_metric_phase"]} == {"false"}
    tutorial_metric = only(
        found["argo_rollouts_analysis_run_metric_phase"], rollout="myapp", metric="success-rate"
    )
    assert sorted(tutorial_metric) == [0, 0, 0, 0, 0, 1]

    # Beyond Argo: what the analysis saw, the weights and the step.
    assert only(found["meshshift_analysis_metric_value"], rollout="myapp", metric="success-rate") == [0.99]
    assert only(found["flagger_canary_metric_analysis"], name="myapp", metric="success-rate") == [0.99]
    assert only(found["flagger_canary_weight"], workload="myapp") == [20]
    assert only(found["flagger_canary_weight"], workload="myapp-primary") == [80]
    assert only(found["flagger_canary_status"], name="myapp") == [1]  # paused: Flagger's WaitingPromotion
    assert only(found["flagger_canary_total"], namespace="default") == [1]
    assert only(found["flagger_canary_duration_seconds_count"], name="myapp")[0] >= 1
    assert only(found["meshshift_rollout_desired_weight"], rollout="myapp") == [20]
    assert only(found["meshshift_rollout_applied_weight"], rollout="myapp", router="envoy") == [20]
    assert only(found["meshshift_rollout_step"], rollout="myapp") == [4]
    assert only(found["meshshift_rollout_steps"], rollout="myapp") == [6]
    assert only(found["argo_rollouts_rollout_duration_seconds"], rollout="myapp")[0] >= 0


async def test_a_rollouts_series_go_when_it_is_removed(
    registry: RolloutRegistry, metrics_daemon: tuple[str, RolloutMetrics], http: aiohttp.ClientSession
) -> None:
    base_url, metrics = metrics_daemon
    key = RolloutKey("shop", "cart")
    other = make_controller(registry, SPEC, name="checkout", namespace="shop")
    harness = make_controller(
        registry,
        SPEC,
        name="cart",
        namespace="shop",
        templates=[success_rate_template(interval="100ms", count=1)],
        sinks=[metrics.event_sink(key)],
    )
    async with running(other), running(harness):
        await release_until_paused(harness, 3)
        before = parse(await scrape(http, base_url))
        registry.remove(key)
        after = parse(await scrape(http, base_url))

    def mentions_cart(labels: dict[str, str]) -> bool:
        return "cart" in (labels.get("name"), labels.get("rollout"), labels.get("workload")) or labels.get(
            "name", ""
        ).startswith("cart-")

    assert sum(mentions_cart(labels) for _, labels, _ in before) > 50
    assert [sample for sample in after if mentions_cart(sample[1])] == []
    # The other rollout and the controller-wide series stay.
    assert any(labels.get("name") == "checkout" for name, labels, _ in after if name == "rollout_info")
    assert any(name == "argo_rollouts_controller_info" for name, _, _ in after)
    assert any(name == "build_info" for name, _, _ in after)


async def test_an_aborted_rollout_counts_a_rollback(
    registry: RolloutRegistry, metrics_daemon: tuple[str, RolloutMetrics], http: aiohttp.ClientSession
) -> None:
    base_url, metrics = metrics_daemon
    harness = make_controller(
        registry,
        SPEC,
        templates=[success_rate_template(interval="100ms", count=2)],
        answer=lambda metric: [0.42],  # below the 0.95 the template asks for
        sinks=[metrics.event_sink(RolloutKey("default", "myapp"))],
    )
    async with running(harness):
        await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
        harness.workloads.release("v2")
        harness.controller.poke()
        await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        found = by_name(parse(await scrape(http, base_url)))

    ours = {"namespace": "default", "name": "myapp"}
    assert only(found["rollout_info"], **ours)[0] == 1
    assert [labels["phase"] for labels, _ in found["rollout_info"]] == ["Abort"]
    assert only(found["rollout_phase"], **ours, phase="Abort") == [1]
    assert only(found["meshshift_rollout_rollbacks_total"], rollout="myapp") == [1]
    assert only(found["rollout_duration_seconds_count"], status="Aborted") == [1]
    assert only(found["rollout_duration_seconds_count"], status="Promoted") == []
    assert only(found["flagger_canary_failures_total"], name="myapp", analysis_status="completed") == [1]
    assert only(found["rollout_progression_duration_seconds_count"], status="Aborted") == [1]
    assert only(found["rollout_manual_pause_duration_seconds_sum"], status="Aborted") == [0]
    assert only(found["rollout_events_total"], **ours, type="Warning", reason="RolloutAborted") == [1]
    assert only(found["flagger_canary_status"], name="myapp") == [2]
    assert only(found["flagger_canary_weight"], workload="myapp") == [0]
    assert only(found["meshshift_rollout_step"], rollout="myapp") == [0]
    assert only(found["meshshift_analysis_metric_value"], metric="success-rate") == [0.42]
    metric_phases = {labels["phase"]: value for labels, value in found["analysis_run_metric_phase"]}
    assert metric_phases["Failed"] == 1 and sum(metric_phases.values()) == 1


def synthetic_snapshot(index: int, *, weight: int = 50, in_rollout: bool = False) -> RolloutSnapshot:
    """A rollout with an analysis run of one metric: idle (Healthy) or paused in a rollout."""
    metric = Metric("success-rate", ProviderSpec("prometheus", {"query": "x"}), interval=60.0, count=3)
    run = start_run("v2-1-background", (metric,), args={}, now=0.0)
    run = record_measurement(run, metric.name, Measurement(AnalysisPhase.SUCCESSFUL, 1, 2, [0.99], "", "q"))
    phase, stage = (RolloutPhase.PAUSED, Stage.STEPPING) if in_rollout else (RolloutPhase.HEALTHY, Stage.IDLE)
    state = RolloutState("v1", phase, stage, "v2", 1, 1, desired_weight=weight, rollout_started_at=0.0)
    workloads = WorkloadStatus(
        "v2", "v1", True, True, {"stable": ("a:1",), "canary": ("a:2",)}, {"desired": 3}
    )
    return RolloutSnapshot(
        RolloutKey("ns", f"app{index}"), PAUSING_SPEC, None, state, {run.name: run}, workloads,
        {"istio": AppliedRoutes(weight)}, ("istio",), 0.0, None, 0.01,
    )  # fmt: skip


async def test_a_scrape_renders_only_the_rollouts_that_changed_and_shows_what_a_full_render_shows() -> None:
    registry = RolloutRegistry()
    requests = KubeRequests()
    collectors = CollectorRegistry(auto_describe=False)
    metrics = RolloutMetrics(registry, kube_requests=requests, clock=lambda: 100.0)
    collectors.register(metrics)
    for index in range(50):
        registry.publish(synthetic_snapshot(index))
        requests.record(("configmaps", "ns", f"app{index}-meshshift-state", "Patch", "200"))

    def full() -> bytes:  # what a collector that keeps nothing renders
        fresh = CollectorRegistry(auto_describe=False)
        fresh.register(metrics)  # its collect() outside a scrape renders everything anew
        return render(fresh)

    first = await render_off_loop(collectors, [metrics])
    assert first == full()
    assert metrics._lines.rendered == 50
    registry.publish(synthetic_snapshot(7, weight=20))  # one rollout moved
    metrics.count_event(RolloutKey("ns", "app9"), RecordEvent(EventType.NORMAL, "RolloutPaused", "x"))
    requests.record(("configmaps", "ns", "app3-meshshift-state", "Patch", "200"))  # a request counted
    second = await render_off_loop(collectors, [metrics])
    assert metrics._lines.rendered == 52  # app7 and app9 again, nobody else
    assert second == full() and second != first
    assert (
        'controller_clientset_k8s_request_total{kind="configmaps",namespace="ns",name="app3-meshshift-state",'
        'verb="Patch",status_code="200"} 2' in second.decode()
    )
    registry.publish(synthetic_snapshot(11, in_rollout=True))  # its duration so far: at every scrape
    await render_off_loop(collectors, [metrics])
    await render_off_loop(collectors, [metrics])
    assert metrics._lines.rendered == 54
    registry.remove(RolloutKey("ns", "app0"))
    assert b'name="app0"' not in await render_off_loop(collectors, [metrics])
