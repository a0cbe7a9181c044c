"""What an SRE sees: a real Prometheus scrapes the daemon during real rollouts, as the
ServiceMonitor component makes the Prometheus Operator scrape it (job="argo-rollouts-metrics").

One Kubernetes-mode world (the emulator, the real client, the in-process daemon) holds a
rollout in each of Argo's phases, and rollouts that ended in each of Argo's completion
statuses, with notifications delivered and refused. Then:

- every panel query of Argo Rollouts' own dashboard (tests/data/dashboards, byte for byte)
  returns data over the run, but the one reading a Go runtime series (`go_memstats_*`);
- so does every panel query of meshshift's dashboard (manifests/grafana/dashboard.json);
- /metrics has every family of Argo Rollouts and Flagger (tests/data/argo-metrics/families.yaml)
  with their type, label names, label values and buckets;
- a Deployment with invalid annotations is `rollout_info{phase="InvalidSpec"} 1`;
- controller_clientset_k8s_request_total counts what the API server saw.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from meshshift.demo.prometheus import PrometheusServer, ScrapeTarget, find_prometheus, prometheus_server
from meshshift.kube.operator import Operator
from meshshift.kube.resources import request_labels
from meshshift.observe.status import ArgoPhase, argo_phase
from meshshift.processes import free_port
from tests.kube.harness import HANG_GUARD, REPO_ROOT, Observer, World, fast_options, running_daemon, world
from tests.kube.scenarios import deployment, new_version, requests_of
from tests.ship.support import emulated_cluster, installed_with_servicemonitor, scrape_job

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

NAMESPACE = "shop"
DATA = REPO_ROOT / "tests" / "data"
ARGO_DASHBOARD = DATA / "dashboards" / "argo-rollouts-dashboard.json"
OUR_DASHBOARD = REPO_ROOT / "manifests" / "grafana" / "dashboard.json"
FAMILIES = yaml.safe_load((DATA / "argo-metrics" / "families.yaml").read_text())
# Argo's dashboard panel that reads the Go runtime: a Python daemon has no such series.
GO_RUNTIME = re.compile(r"\bgo_[a-z_]+")

ANALYSIS_STEPS = """\
- setWeight: 20
- analysis:
    templates: [{templateName: web-check}]
    args: [{name: check, value: CHECK}]
- setWeight: 50
- pause: {}
"""
HOLD_STEPS = "- setWeight: 30\n- pause: {}\n"
PHASE_PANELS = ("Stable", "Progressing", "Paused", "Error", "Invalid Spec", "Timeout", "Aborted")


@dataclass
class Receivers:
    """Webhook receivers: /ok takes every notification, /refuse answers 400 (not retried)."""

    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def answer(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            return web.Response(status=200 if request.path == "/ok" else 400)

        app = web.Application()
        app.router.add_post("/{path}", answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Run:
    """What the world left behind for the tests: Prometheus (still running), the last scrape,
    the request counts, the API server's log of the daemon's requests."""

    prometheus: PrometheusServer
    job: str
    start: float
    end: float
    metrics_text: str
    kube_requests: dict[tuple[str, str, str, str, str], int]
    logged_requests: Counter[tuple[str, str]]  # (verb, kind) the API server received from the daemon
    receivers: Receivers
    observer: Observer


def opt_in(steps: str, **extra: str) -> dict[str, str]:
    values = {"meshshift.io/enabled": "true", "meshshift.io/router": "istio", "meshshift.io/steps": steps}
    values.update({f"meshshift.io/{k.replace('_', '-')}": v for k, v in extra.items()})
    return values


def state_of(observer: Observer, name: str) -> dict[str, Any] | None:
    return observer.state(name)


async def wait_for_state(w: World, name: str, what: str, **expected: Any) -> dict[str, Any]:
    def matches(observer: Observer) -> dict[str, Any] | None:
        state = state_of(observer, name)
        if state is not None and all(state.get(k) == v for k, v in expected.items()):
            return state
        return None

    return await w.observer.wait_for(matches, what=f"{name}: {what}")


async def wait_for_outcome(w: World, name: str, outcome: str, count: int = 1) -> None:
    def done(observer: Observer) -> bool:
        state = state_of(observer, name) or {}
        outcomes = [r["outcome"] for r in state.get("history", [])]
        return outcomes.count(outcome) >= count and state.get("phase") == "Healthy"

    await w.observer.wait_for(done, what=f"{name}: {outcome} #{count}")


async def command(w: World, name: str, value: str) -> None:
    await w.cluster.annotate(name, **{"meshshift.io/command": value})


async def release(w: World, name: str, version: str) -> None:
    await w.cluster.patch_deployment(name, new_version(version))


async def sre_scenario(w: World, receivers: Receivers, prometheus: PrometheusServer) -> None:
    """Every Argo phase held by some rollout, every completion status reached once."""
    await w.cluster.create_template(w.metrics.template("web-check", interval="200ms", count=2))
    w.metrics.values["cart"] = 0.1  # cart's analysis fails: Abort
    rollouts = {
        "web": opt_in(ANALYSIS_STEPS.replace("CHECK", "web"), webhook_url=f"{receivers.url}/ok"),
        "api": opt_in(HOLD_STEPS, webhook_url=f"{receivers.url}/refuse"),
        "cart": opt_in(ANALYSIS_STEPS.replace("CHECK", "cart")),
        "search": opt_in(HOLD_STEPS, progress_deadline="2s"),  # its canary never gets ready: Timeout
        "feed": opt_in(HOLD_STEPS),  # its canary is not ready yet: Progressing
        "ads": opt_in(HOLD_STEPS),  # Paused
        "news": opt_in(HOLD_STEPS),  # Superseded, then Paused
        "docs": opt_in(HOLD_STEPS),  # back to the stable mid-rollout: FastRolledBack
    }
    for name, wanted in rollouts.items():
        await w.cluster.create_deployment(deployment(name, annotations=wanted))
    # orders names an Ingress that does not exist: every reconcile fails (Error).
    orders = opt_in(HOLD_STEPS, nginx_ingress="orders-missing")
    orders["meshshift.io/router"] = "nginx"
    await w.cluster.create_deployment(deployment("orders", annotations=orders))
    broken = opt_in(HOLD_STEPS)
    broken["meshshift.io/router"] = "istoi"  # a typo: InvalidSpec, nothing changes
    await w.cluster.create_deployment(deployment("broken", annotations=broken))

    for name in rollouts:
        await wait_for_state(w, name, "initialized", phase="Healthy", stage="Idle")
    w.sim.hold("search")
    w.sim.hold("feed")
    for name in rollouts:
        await release(w, name, "v2")
    await wait_for_state(w, "web", "the pause", phase="Paused", stepIndex=3)
    await wait_for_state(w, "cart", "the abort", phase="Degraded", abortReason="AnalysisRunFailed")
    await wait_for_state(w, "search", "the timeout", phase="Degraded", abortReason="ProgressDeadlineExceeded")
    await wait_for_state(w, "feed", "waiting for its canary", phase="Progressing", stepIndex=0)
    for name in ("api", "ads", "news", "docs"):
        await wait_for_state(w, name, "the pause", phase="Paused", stepIndex=1)

    await release(w, "news", "v3")  # mid-rollout: v2 is Superseded
    await wait_for_state(w, "news", "v3's pause", phase="Paused", stepIndex=1, attempt=2)
    await release(w, "docs", "v1")  # back to the stable: Argo's SkipSteps
    await wait_for_outcome(w, "docs", "Undone")
    await command(w, "api", "promote-full/1")  # FastPromoted
    await wait_for_outcome(w, "api", "Promoted")
    # An SRE looks at web's pause before promoting it (Prometheus' first scrape comes ~5 s in).
    await prometheus.wait_for_data('rollout_info{name="web",phase="Paused"}', wait_seconds=HANG_GUARD)
    await command(w, "web", "promote/1")  # Promoted
    await wait_for_outcome(w, "web", "Promoted")
    await release(w, "web", "v1")  # the earlier stable again: RolledBack once promoted
    await wait_for_state(w, "web", "v1's pause", phase="Paused", stepIndex=3, attempt=2)
    await command(w, "web", "promote/2")
    await wait_for_outcome(w, "web", "Promoted", count=2)
    await w.observer.wait_for(lambda o: receivers.hits["/refuse"] >= 1, what="a refused notification")


FINAL_PHASES = {
    "web": ArgoPhase.COMPLETED,
    "api": ArgoPhase.COMPLETED,
    "docs": ArgoPhase.COMPLETED,
    "feed": ArgoPhase.PROGRESSING,
    "ads": ArgoPhase.PAUSED,
    "news": ArgoPhase.PAUSED,
    "orders": ArgoPhase.ERROR,
    "broken": ArgoPhase.INVALID_SPEC,
    "search": ArgoPhase.TIMEOUT,
    "cart": ArgoPhase.ABORT,
}


async def daemon_shows_final_phases(operator: Operator) -> None:
    """The daemon publishes a pass once its actions are applied, after the state the observer
    reads from the ConfigMap: wait until its own view (what /metrics shows) has caught up."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        phases = {key.name: argo_phase(s) for key, s in operator.registry.snapshots.items()}
        if phases == FINAL_PHASES:
            return
        assert time.monotonic() < deadline, f"the daemon shows {phases}"
        await asyncio.sleep(0.2)


async def scraped_after(prometheus: PrometheusServer, job: str, moment: float) -> None:
    """Wait until Prometheus holds a scrape of the daemon taken a few seconds after `moment`."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        data = await prometheus.query(f'timestamp(up{{job="{job}"}} == 1)')
        if any(float(r["value"][1]) > moment + 3 for r in data.get("result", [])):
            return
        assert time.monotonic() < deadline, "Prometheus stopped scraping the daemon"
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    assert find_prometheus() is not None, "prometheus is missing: apt-get install prometheus (make test does)"
    directory = tmp_path_factory.mktemp("sre")
    job = scrape_job(installed_with_servicemonitor())  # what the ServiceMonitor component sets
    port = free_port()
    receivers = Receivers()
    await receivers.start()
    targets = [ScrapeTarget(job, f"127.0.0.1:{port}")]
    try:
        async with (
            emulated_cluster(directory, NAMESPACE) as env,
            world(env) as w,
            prometheus_server(targets, scrape_interval="1s", workdir=directory / "prometheus") as prometheus,
        ):
            start = time.time()
            # Ten rollouts on a busy machine: no leader election (its 2 s test lease is not what is
            # tested here) and the default request timeout.
            options = fast_options(request_timeout=30.0)
            async with running_daemon(
                env, listen=f"127.0.0.1:{port}", options=options, leader_elect=False
            ) as operator:
                await sre_scenario(w, receivers, prometheus)
                await daemon_shows_final_phases(operator)
                await scraped_after(prometheus, job, time.time())
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as response,
                ):
                    metrics_text = await response.text()
            end = time.time()  # the daemon has stopped: its request counts are final
            logged: Counter[tuple[str, str]] = Counter()
            assert env.kmock is not None
            for request in requests_of(env.kmock):
                query = list(request.params.items())
                labels = request_labels(request.method.value, request.url.path, query, None, 200)
                logged[(labels[3], labels[0])] += 1
            yield Run(
                prometheus,
                job,
                start,
                end,
                metrics_text,
                operator.kube_requests.counts(),
                logged,
                receivers,
                w.observer,
            )
    finally:
        await receivers.stop()


async def query_range(prometheus: PrometheusServer, run: Run, promql: str) -> list[Mapping[str, Any]]:
    params = {"query": promql, "start": f"{run.start:.3f}", "end": f"{run.end:.3f}", "step": "1"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{prometheus.url}/api/v1/query_range", data=params) as response,
    ):
        body = await response.json(content_type=None)
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[Mapping[str, Any]] = body["data"]["result"]
    return result


def panel_queries(path: Path, variables: Mapping[str, str]) -> dict[str, str]:
    """Every query of every panel (rows' panels too), with Grafana's variables substituted."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))

    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in (item, *panels(item.get("panels", [])))]

    queries = {}
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            queries[f"{panel['title']} [{panel['id']}/{target.get('refId', '')}]"] = expr
    return queries


async def test_argos_dashboard_answers_every_panel_but_the_go_runtime_one(run: Run) -> None:
    queries = panel_queries(ARGO_DASHBOARD, {"$rollout_namespace": NAMESPACE, "$rollout_name": "web"})
    assert len(queries) == 17
    answered, empty = {}, []
    for title, query in queries.items():
        result = await query_range(run.prometheus, run, query)
        if GO_RUNTIME.search(query):
            assert result == [], f"{title} reads the Go runtime; a Python daemon has no such series"
            continue
        if result:
            answered[title] = result
        else:
            empty.append(f"{title}: {query}")
    assert empty == []
    assert len(answered) == 16
    # The data is the daemon's, scraped under the job the component's jobLabel gives.
    phase = answered["Phase [42/A]"]
    assert {r["metric"]["job"] for r in phase} == {"argo-rollouts-metrics"} == {run.job}
    # web in turn: Completed, Paused (seen before its promote), Progressing if a scrape caught it.
    assert (
        {"Completed", "Paused"}
        <= {r["metric"]["phase"] for r in phase}
        <= {"Completed", "Progressing", "Paused"}
    )
    # The phase stats, as the run left them (each series' last sample).
    last = {title.split(" [")[0]: float(result[0]["values"][-1][1]) for title, result in answered.items()}
    assert {title: last[title] for title in PHASE_PANELS} == {
        "Stable": 3,  # web, api, docs
        "Progressing": 1,  # feed
        "Paused": 2,  # ads, news
        "Error": 1,  # orders
        "Invalid Spec": 1,  # broken
        "Timeout": 1,  # search
        "Aborted": 1,  # cart
    }
    assert last["Total Rollouts"] == 10


async def test_meshshifts_dashboard_answers_every_panel(run: Run) -> None:
    variables = {"$namespace": NAMESPACE, "$rollout": "web", "$__rate_interval": "30s", "$__range": "5m"}
    queries = panel_queries(OUR_DASHBOARD, variables)
    empty = [
        f"{title}: {query}"
        for title, query in queries.items()
        if not await query_range(run.prometheus, run, query)
    ]
    assert empty == []
    finished = await query_range(
        run.prometheus, run, "sum by (status) (increase(rollout_duration_seconds_count[30s]))"
    )
    assert {r["metric"]["status"] for r in finished} == {
        "Promoted",
        "FastPromoted",
        "Aborted",
        "Superseded",
        "RolledBack",
        "FastRolledBack",
    }


# --- /metrics against the anchors' families -------------------------------------------------

SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Exposition:
    types: dict[str, str]
    samples: dict[str, list[tuple[dict[str, str], float]]]


def parse_exposition(text: str) -> Exposition:
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
        elif line and not line.startswith("#"):
            match = SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            labels = dict(LABEL.findall(match["labels"] or ""))
            samples[match["name"]].append((labels, float(match["value"])))
    return Exposition(types, samples)


def _go(value: float) -> str:
    return "+Inf" if value == float("inf") else f"{value:g}"


def family_problems(family: Mapping[str, Any], found: Exposition) -> list[str]:
    """What differs between /metrics and the family as its source defines it."""
    name, kind, labels = family["name"], family["type"], set(family["labels"])
    problems: list[str] = []
    if found.types.get(name) != kind:
        problems.append(f"TYPE {found.types.get(name)!r}, Argo/Flagger say {kind!r}")
    if kind == "histogram":
        series = {"_bucket": labels | {"le"}, "_sum": labels, "_count": labels}
    else:
        series = {"": labels}
    allowed = {
        label: set(values) | set(family.get("meshshift_values", {}).get(label, []))
        for label, values in family.get("values", {}).items()
    }
    for suffix, names in series.items():
        samples = found.samples.get(name + suffix, [])
        if not samples:
            problems.append(f"no {name + suffix} sample")
        for sample_labels, value in samples:
            if set(sample_labels) != names:
                problems.append(f"{name + suffix} labels {sorted(sample_labels)}, expected {sorted(names)}")
            for label, values in allowed.items():
                if sample_labels.get(label) not in values:
                    problems.append(
                        f"{name + suffix}{{{label}={sample_labels.get(label)!r}}} is not one of {values}"
                    )
            if "sample_values" in family and value not in family["sample_values"]:
                problems.append(f"{name} value {value} is not one of {family['sample_values']}")
    if "buckets" in family:
        expected = [*(_go(float(b)) for b in family["buckets"]), "+Inf"]
        per_series: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
        for sample_labels, _ in found.samples.get(name + "_bucket", []):
            key = tuple(sorted((k, v) for k, v in sample_labels.items() if k != "le"))
            per_series[key].append(sample_labels["le"])
        for key, les in per_series.items():
            if les != expected:
                problems.append(f"{name}{dict(key)} buckets {les}, expected {expected}")
    if "every_value_per_series" in family:
        label = family["every_value_per_series"]
        groups: dict[tuple[tuple[str, str], ...], set[str]] = defaultdict(set)
        for sample_labels, _ in found.samples.get(name, []):
            groups[tuple(sorted((k, v) for k, v in sample_labels.items() if k != label))].add(
                sample_labels[label]
            )
        for key, values in groups.items():
            if values != set(family["values"][label]):
                problems.append(
                    f"{name}{dict(key)} has {label} {sorted(values)}, expected one series per value"
                )
    return problems


async def test_every_argo_and_flagger_family_is_served_as_its_source_defines_it(run: Run) -> None:
    found = parse_exposition(run.metrics_text)
    families = [*FAMILIES["argo"], *FAMILIES["flagger"]]
    assert len(FAMILIES["argo"]) == 32 and len(FAMILIES["flagger"]) == 8
    problems = {f["name"]: p for f in families if (p := family_problems(f, found))}
    assert problems == {}
    # The label values a run like this one writes, all of them.
    info = {labels["phase"] for labels, _ in found.samples["rollout_info"]}
    assert info == {"Completed", "Progressing", "Paused", "Timeout", "Error", "Abort", "InvalidSpec"}
    assert {labels["traffic_router"] for labels, _ in found.samples["rollout_info"]} == {"Istio", "Nginx", ""}
    statuses = {labels["status"] for labels, _ in found.samples["rollout_duration_seconds_count"]}
    assert statuses == set(FAMILIES["argo"][9]["values"]["status"])
    verbs = {labels["verb"] for labels, _ in found.samples["controller_clientset_k8s_request_total"]}
    assert {"List", "Watch", "Get", "Create", "Patch"} <= verbs
    outcomes = {
        (name, labels["name"], labels["analysis_status"])
        for name in ("flagger_canary_successes_total", "flagger_canary_failures_total")
        for labels, _ in found.samples[name]
    }
    assert outcomes == {
        ("flagger_canary_successes_total", "web", "completed"),
        ("flagger_canary_successes_total", "api", "skipped"),  # promote-full skips the analysis
        ("flagger_canary_failures_total", "cart", "completed"),
        ("flagger_canary_failures_total", "search", "completed"),
    }
    sent = {(labels["name"], labels["reason"]) for labels, _ in found.samples["notification_send_success"]}
    refused = {(labels["name"], labels["reason"]) for labels, _ in found.samples["notification_send_error"]}
    assert {("web", "RolloutUpdated"), ("web", "RolloutStepCompleted"), ("web", "RolloutCompleted")} <= sent
    assert ("api", "RolloutUpdated") in refused and not {n for n, _ in refused} - {"api"}
    assert sum(v for _, v in found.samples["notification_send_success"]) == run.receivers.hits["/ok"]
    assert sum(v for _, v in found.samples["notification_send_error"]) == run.receivers.hits["/refuse"]


async def test_the_manual_pause_and_the_progression_add_up_to_the_rollout_duration(run: Run) -> None:
    found = parse_exposition(run.metrics_text)

    def total(name: str, status: str) -> float:
        return sum(v for labels, v in found.samples[name] if labels["status"] == status)

    for status in ("Promoted", "FastPromoted", "Aborted", "Superseded", "RolledBack", "FastRolledBack"):
        whole = total("rollout_duration_seconds_sum", status)
        parts = total("rollout_progression_duration_seconds_sum", status) + total(
            "rollout_manual_pause_duration_seconds_sum", status
        )
        assert parts == pytest.approx(whole), status
    # web waited at `pause: {}` for its promote: that is manual pause time; cart never paused.
    assert total("rollout_manual_pause_duration_seconds_sum", "Promoted") > 0
    assert total("rollout_manual_pause_duration_seconds_sum", "Aborted") == 0


async def test_an_invalid_deployment_is_rollout_info_phase_invalid_spec(run: Run) -> None:
    lines = run.metrics_text.splitlines()

    info = (
        'rollout_info{namespace="shop",name="broken",strategy="canary",traffic_router="",phase="InvalidSpec"}'
    )
    assert f"{info} 1" in lines
    assert 'rollout_phase{namespace="shop",name="broken",strategy="canary",phase="Completed"} 0' in lines
    assert not any(
        line.startswith("rollout_phase{") and 'name="broken"' in line and line.endswith(" 1")
        for line in lines
    )
    # Its replica counts are the Deployment's own; it got the Warning Event, and nothing else.
    assert 'rollout_info_replicas_desired{namespace="shop",name="broken"} 2' in lines
    assert [e["reason"] for e in run.observer.events("broken")] == ["InvalidSpec"]
    assert (
        'rollout_events_total{namespace="shop",name="broken",type="Warning",reason="InvalidSpec"} 1' in lines
    )
    assert run.observer.get("Deployment", "broken-primary") is None


async def test_invalid_spec_alerts_can_fire_from_prometheus(run: Run) -> None:
    result = await query_range(run.prometheus, run, 'rollout_info{phase="InvalidSpec"} == 1')
    assert [(r["metric"]["namespace"], r["metric"]["name"]) for r in result] == [(NAMESPACE, "broken")]


async def test_the_request_counter_counts_what_the_api_server_received(run: Run) -> None:
    counted: Counter[tuple[str, str]] = Counter()
    unanswered: Counter[tuple[str, str]] = Counter()  # cancelled when the daemon stopped: maybe never sent
    for (kind, _, _, verb, status), count in run.kube_requests.items():
        (unanswered if status == "0" else counted)[(verb, kind)] += count
    assert set(run.logged_requests) == set(counted) | set(unanswered)
    for key, logged in run.logged_requests.items():
        assert counted[key] <= logged <= counted[key] + unanswered[key], key
    assert counted[("Patch", "virtualservices")] > 0 and counted[("Watch", "deployments")] > 0
