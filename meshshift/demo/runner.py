"""`meshshift demo`: the whole loop on this machine, with real processes and real traffic.

It starts two versions of the demo app (`stable` and `canary`; the canary misbehaves in
the bad scenarios), the proxy (Envoy, NGINX or Traefik, from their wheels), Prometheus
scraping the apps (and the proxy's own metrics), a steady load through the proxy, and the
meshshift daemon in this process (controller, /metrics, API and dashboard on `--listen`).
The rollout is the tutorial's schedule with short intervals: 10 -> 25 -> 50 -> 100 % with
an analysis at each step, plus a header route (`X-Canary: true` always reaches the canary).
With `--judge sequential` the analysis at each weight is the sequential judge (error rate and
p95 latency, canary against stable) from the first request at that weight, and the summary
shows its evidence at the decision.

Without a `prometheus` binary the Envoy demo measures through Envoy's own admin endpoint
(the builtin templates' `envoy-admin` source) and says so. NGINX reports no per-upstream
metrics, so the NGINX demo needs Prometheus and says how to install it; so does the
Traefik demo, whose metrics only Prometheus reads.

With `--strategy blue-green` the rollout is Argo's blue-green instead of steps: the proxy gets
a preview listener, the users' load goes to the active listener and a QA tester's load to the
preview; the new revision is analysed on the preview (pre-promotion), switched to on its own
3 s later, analysed again while the old one still runs (post-promotion, a failure switches
back at once), and promoted. `bad-under-load` is a canary that holds the testers' traffic and
fails under the users' (above 15 requests/s): only the post-promotion analysis can catch it.

Exit code: 0 when the outcome is the scenario's expectation (healthy: promoted; bad-errors,
bad-latency and bad-under-load: rolled back; with blue-green, bad-errors and bad-latency also
need 0 failed user requests), 1 otherwise or on an error, 130 when interrupted (Ctrl-C or
SIGTERM; every child process is stopped either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml
from rich.console import Console

from meshshift.analysis.run import AnalysisRun
from meshshift.demo.load import LoadGenerator, LoadStats, running_load
from meshshift.demo.progress import DemoView, ProgressDisplay, Summary, build_view, print_summary
from meshshift.demo.prometheus import PrometheusServer, ScrapeTarget, find_prometheus, prometheus_server
from meshshift.engine.state import RevisionRecord
from meshshift.observe.status import judge_view
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.listen_ports import port_in_use
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.settings import DaemonSettings, NotificationSettings, split_host_port
from meshshift.spec.model import AnalysisPhase
from meshshift.standalone.daemon import (
    FATAL_ERRORS,
    StandaloneRuntime,
    parse_rollout_text,
    standalone_runtime,
)

log = structlog.get_logger(__name__)

SERVICE = "demo"
LOAD_RATE = 40.0  # requests per second through the weighted split
HEADER_RATE = 2.0  # requests per second carrying X-Canary: true
QA_RATE = 5.0  # blue-green: a QA tester's requests per second to the preview listener
CANARY, BLUE_GREEN = "canary", "blue-green"
STRATEGIES = (CANARY, BLUE_GREEN)
AUTO_PROMOTION_SECONDS = 3  # blue-green: the preview passed; switch on its own this long after
SCALE_DOWN_DELAY = 5  # blue-green: the old revision stays this long after the switch
STABLE_LATENCY_MS = 5.0
PAUSE = "3s"  # each step holds this long before its analysis
DEADLINE = 150.0  # seconds for the rollout to decide (it takes well under a minute)
AFTER_DECISION = 3.0  # seconds of traffic measured after the decision
HEADER_ROUTE = "canary-by-header"
# --judge: the tutorial's thresholds (after a pause), or the sequential judge (from the first request).
THRESHOLD, SEQUENTIAL = "threshold", "sequential"
JUDGES = (THRESHOLD, SEQUENTIAL)
JUDGE_MAX_DURATION = "6s"  # the judge's analysis passes after this while undecided
# Set to 1 to measure through Envoy's admin endpoint even when Prometheus is installed.
NO_PROMETHEUS_ENV = "MESHSHIFT_DEMO_NO_PROMETHEUS"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    canary_error_rate: float
    canary_latency_ms: float
    expected: str  # the outcome this scenario should end with
    story: str
    overload_rps: float | None = None  # the canary answers 500 beyond this many requests/s


SCENARIOS = {
    "healthy": Scenario("healthy", 0.0, STABLE_LATENCY_MS, "Promoted", "the canary is as good as the stable"),
    "bad-errors": Scenario(
        "bad-errors", 0.3, STABLE_LATENCY_MS, "Aborted", "the canary answers 30 % with HTTP 500"
    ),
    "bad-latency": Scenario("bad-latency", 0.0, 800.0, "Aborted", "the canary takes 800 ms per request"),
    "bad-under-load": Scenario(
        "bad-under-load",
        0.0,
        STABLE_LATENCY_MS,
        "Aborted",
        "the canary holds a tester's traffic but fails above 15 requests/s",
        overload_rps=15.0,
    ),
}


class DemoError(RuntimeError):
    """The demo cannot run here; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DemoPorts:
    stable: int
    canary: int
    proxy: int
    admin: int
    preview: int

    @classmethod
    def pick(cls) -> DemoPorts:
        return cls(
            stable=free_port(), canary=free_port(), proxy=free_port(), admin=free_port(), preview=free_port()
        )


# --- the rollout ------------------------------------------------------------------------


def prometheus_template(address: str, *, initial_delay: str | None = None) -> dict[str, Any]:
    """The tutorial's success-rate and latency queries, with windows short enough for a demo.

    `initial_delay` (blue-green: the analysis starts with the preview, or the switch) waits for
    the new revision's first requests, as the pause before each canary analysis does.
    """
    selector = 'service="{{args.service-name}}", version="{{args.canary-hash}}"'
    template = _prometheus_template(address, selector)
    if initial_delay is not None:
        for metric in template["spec"]["metrics"]:
            metric["initialDelay"] = initial_delay
    return template


def _prometheus_template(address: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "demo-health"},
        "spec": {
            "args": [{"name": "service-name"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "success-rate",
                    "interval": "2s",
                    "count": 2,
                    "successCondition": "result[0] >= 0.95",
                    "provider": {
                        "prometheus": {
                            "address": address,
                            "query": f'sum(rate(http_requests_total{{{selector}, status!~"5.."}}[10s]))\n'
                            f"/\nsum(rate(http_requests_total{{{selector}}}[10s]))",
                        }
                    },
                },
                {
                    "name": "latency-p95",
                    "interval": "2s",
                    "count": 2,
                    "successCondition": "result[0] <= 500",
                    "provider": {
                        "prometheus": {
                            "address": address,
                            "query": "histogram_quantile(0.95,\n  sum(rate("
                            f"http_request_duration_seconds_bucket{{{selector}}}[10s])) by (le)\n) * 1000",
                        }
                    },
                },
            ],
        },
    }


def judge_template(address: str) -> dict[str, Any]:
    """The sequential judge on the apps' own metrics, read raw from Prometheus: canary against
    stable, error rate and p95 latency (the `--judge sequential` demo with Prometheus)."""

    def side(version: str, metric: str) -> str:
        return f'{metric}{{service="{{{{args.service-name}}}}", version="{{{{args.{version}}}}}"}}'

    common = {
        "source": "prometheus",
        "address": address,
        "lookEvery": "1s",
        "maxDuration": JUDGE_MAX_DURATION,
    }
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "demo-judge"},
        "spec": {
            "args": [{"name": "service-name"}, {"name": "canary-hash"}, {"name": "baseline-hash"}],
            "metrics": [
                {
                    "name": "sequential-error-rate",
                    "provider": {
                        "meshshift": {
                            "builtin": "sequential-error-rate",
                            **common,
                            "canary": side("canary-hash", "http_requests_total"),
                            "stable": side("baseline-hash", "http_requests_total"),
                            "codeLabel": "status",
                        }
                    },
                },
                {
                    "name": "sequential-latency",
                    "provider": {
                        "meshshift": {
                            "builtin": "sequential-latency",
                            **common,
                            "canary": side("canary-hash", "http_request_duration_seconds_bucket"),
                            "stable": side("baseline-hash", "http_request_duration_seconds_bucket"),
                            "quantile": 0.95,
                            "unit": "s",
                        }
                    },
                },
            ],
        },
    }


def _judge_analysis(prometheus_url: str | None) -> dict[str, Any]:
    if prometheus_url is not None:
        return {
            "templates": [{"templateName": "demo-judge"}],
            "args": [{"name": "service-name", "value": SERVICE}],
        }
    # Envoy's admin endpoint through the builtin templates.
    return {
        "templates": [{"templateName": "sequential-error-rate"}, {"templateName": "sequential-latency"}],
        "args": [
            {"name": "interval", "value": "0.5s"},
            {"name": "max-duration", "value": JUDGE_MAX_DURATION},
        ],
    }


def rollout_document(
    ports: DemoPorts,
    router: str,
    prometheus_url: str | None,
    state_file: str,
    *,
    judge: str = THRESHOLD,
    strategy: str = CANARY,
) -> list[dict[str, Any]]:
    """The StandaloneRollout the demo runs (written to rollout.yaml for whoever wants to reuse it).

    With the sequential judge, each weight's analysis is the judge, from the first request on:
    it replaces the pause before the threshold analysis (and passes after JUDGE_MAX_DURATION
    while undecided).
    """
    analysis: dict[str, Any]
    if judge == SEQUENTIAL:
        analysis = _judge_analysis(prometheus_url)
    elif prometheus_url is not None:
        analysis = {
            "templates": [{"templateName": "demo-health"}],
            "args": [{"name": "service-name", "value": SERVICE}],
        }
    else:  # Envoy's admin endpoint through the builtin templates
        analysis = {
            "templates": [{"templateName": "request-success-rate"}, {"templateName": "request-duration"}],
            "args": [
                {"name": "interval", "value": "5s"},
                {"name": "count", "value": "2"},
                {"name": "failure-limit", "value": "0"},
                {"name": "min-success-rate", "value": "95"},
                {"name": "max-duration", "value": "500"},
                {"name": "quantile", "value": "0.95"},
            ],
        }
    steps: list[dict[str, Any]] = [
        {
            "setHeaderRoute": {
                "name": HEADER_ROUTE,
                "match": [{"headerName": "X-Canary", "headerValue": {"exact": "true"}}],
            }
        }
    ]
    for weight in (10, 25, 50, 100):
        if judge == SEQUENTIAL:
            steps += [{"setWeight": weight}, {"analysis": analysis}]
        else:
            steps += [{"setWeight": weight}, {"pause": {"duration": PAUSE}}, {"analysis": analysis}]
    router_options: dict[str, Any] = {"listen": f"127.0.0.1:{ports.proxy}"}
    if router == "envoy":
        router_options["admin"] = f"127.0.0.1:{ports.admin}"
    elif router == "traefik":  # Traefik's API, /ping and /metrics (which Prometheus scrapes)
        router_options["api"] = f"127.0.0.1:{ports.admin}"
    rollout: dict[str, Any] = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": SERVICE},
        "spec": {
            "router": {router: router_options},
            "stable": {"endpoints": [f"127.0.0.1:{ports.stable}"]},
            "canary": {"endpoints": [f"127.0.0.1:{ports.canary}"]},
            "steps": steps,
            "onFailure": "rollback",
            "progressDeadline": "1m",
            "abortScaleDownDelay": "0s",
            "stateFile": state_file,
        },
    }
    if strategy == BLUE_GREEN:
        # The same analysis against the preview (QA traffic), then after the switch (users').
        del rollout["spec"]["steps"]
        rollout["spec"]["blueGreen"] = {
            "prePromotionAnalysis": analysis,
            "postPromotionAnalysis": analysis,
            "autoPromotionSeconds": AUTO_PROMOTION_SECONDS,
            "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
        }
        rollout["spec"]["preview"] = {"listen": f"127.0.0.1:{ports.preview}"}
    templates = []
    if prometheus_url is not None:
        delay = PAUSE if strategy == BLUE_GREEN else None
        templates.append(
            judge_template(prometheus_url)
            if judge == SEQUENTIAL
            else prometheus_template(prometheus_url, initial_delay=delay)
        )
    return [rollout, *templates]


# --- processes --------------------------------------------------------------------------


def app_process(
    version: str,
    port: int,
    workdir: Path,
    *,
    error_rate: float,
    latency_ms: float,
    overload_rps: float | None = None,
) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "meshshift.demo.app",
        f"--version={version}",
        f"--service={SERVICE}",
        f"--port={port}",
        f"--error-rate={error_rate}",
        f"--latency-ms={latency_ms}",
    ]
    if overload_rps is not None:
        argv.append(f"--overload-rps={overload_rps}")
    return ManagedProcess(f"app-{version}", argv, workdir / f"app-{version}.log")


@contextlib.asynccontextmanager
async def running_apps(scenario: Scenario, ports: DemoPorts, workdir: Path) -> AsyncIterator[None]:
    stable = app_process("stable", ports.stable, workdir, error_rate=0.0, latency_ms=STABLE_LATENCY_MS)
    canary = app_process(
        "canary",
        ports.canary,
        workdir,
        error_rate=scenario.canary_error_rate,
        latency_ms=scenario.canary_latency_ms,
        overload_rps=scenario.overload_rps,
    )
    try:
        await asyncio.gather(stable.start(), canary.start())
        await asyncio.gather(
            wait_until_http_ready(f"http://127.0.0.1:{ports.stable}/healthz", process=stable),
            wait_until_http_ready(f"http://127.0.0.1:{ports.canary}/healthz", process=canary),
        )
        yield
    finally:
        await asyncio.gather(stable.stop(), canary.stop())


def prometheus_wanted() -> bool:
    return find_prometheus() is not None and os.environ.get(NO_PROMETHEUS_ENV, "") in ("", "0")


@contextlib.asynccontextmanager
async def maybe_prometheus(
    targets: list[ScrapeTarget], workdir: Path
) -> AsyncIterator[PrometheusServer | None]:
    if not prometheus_wanted():
        yield None
        return
    async with prometheus_server(targets, scrape_interval="1s", workdir=workdir / "prometheus") as server:
        yield server


# --- the run ----------------------------------------------------------------------------


def decision(snapshot: RolloutSnapshot | None, revision: str | None) -> RevisionRecord | None:
    """The history record that ends the rollout of `revision`, once there is one."""
    if snapshot is None or snapshot.state is None:
        return None
    for record in reversed(snapshot.state.history):
        if revision is None or record.revision == revision:
            return record
    return None


def header_route_applied(snapshot: RolloutSnapshot) -> bool:
    return any(HEADER_ROUTE in applied.header_routes for applied in snapshot.applied.values())


def judge_lines(runs: Mapping[str, AnalysisRun], record: RevisionRecord | None) -> Iterator[str]:
    """What the sequential judges of the deciding (last) analysis run said: verdict, counts,
    evidence against alpha."""
    if record is None:
        return
    mine = [run for run in runs.values() if run.name.startswith(record.revision)]
    for run in sorted(mine, key=lambda r: r.started_at)[-1:]:
        for result in run.results:
            last = result.measurements[-1] if result.measurements else None
            judged = judge_view(last.value) if last is not None else None
            if last is None or judged is None:
                continue
            evidence, needed = judged["evidence"], judged["threshold"]
            shown = evidence if isinstance(evidence, str) else f"{evidence:.3g}"
            yield (
                f"{result.name} ({last.phase.value}): {judged['verdict']} after {judged['elapsed']:.1f} s; "
                f"canary {_side(judged['canary'])}, stable {_side(judged['stable'])}; "
                f"evidence {shown} of {needed:g} needed (alpha {judged['alpha']:g})"
            )


def switch_back_seconds(
    runs: Mapping[str, AnalysisRun], record: RevisionRecord | None, users: LoadStats
) -> float | None:
    """From the failed post-promotion measurement to the first user request the stable answered
    with no later one answered by the new revision (read off the users' own traffic)."""
    if record is None or record.outcome != "Aborted":
        return None
    post = [run for name, run in runs.items() if name.startswith(record.revision) and name.endswith("-post")]
    failed = [
        m.finished_at
        for run in post
        for result in run.results
        for m in result.measurements
        if m.phase == AnalysisPhase.FAILED
    ]
    if not failed:
        return None
    failed_at = min(failed)
    answers = sorted(users.recent, key=lambda a: a.at - a.latency)
    canary_sent = [a.at - a.latency for a in answers if a.version == "canary"]
    after = max([failed_at, *canary_sent])
    back = [a.at - a.latency for a in answers if a.version == "stable" and a.at - a.latency > after]
    return (min(back) - failed_at) if back else None


def _side(counts: Mapping[str, Any]) -> str:
    rate = counts.get("rate")
    share = "" if rate is None else f" ({rate * 100:.3g}%)"
    return f"{counts['bad']:g} {counts['badName']} in {counts['requests']:g}{share}"


class Demo:
    def __init__(
        self,
        scenario: Scenario,
        router: str,
        listen: str,
        console: Console,
        *,
        judge: str = THRESHOLD,
        notifications: NotificationSettings | None = None,
        strategy: str = CANARY,
        hold: float = 0.0,
    ) -> None:
        self.scenario = scenario
        self.strategy = strategy
        self.hold = hold  # seconds everything stays up after the decision
        self.held: Summary | None = None  # the summary, printed before the hold
        # Slack, webhook and PagerDuty receivers, read as `meshshift run` reads them.
        self.notifications = notifications if notifications is not None else NotificationSettings.from_env()
        self.router = router
        self.judge = judge
        self.decided_runs: dict[str, AnalysisRun] = {}  # the analysis runs at the decision
        self.listen = listen
        self.console = console
        self.token = secrets.token_urlsafe(12)
        self.workdir = Path(tempfile.mkdtemp(prefix="meshshift-demo-"))
        self.ports = DemoPorts.pick()
        self.load = LoadGenerator(f"http://127.0.0.1:{self.ports.proxy}/", rate=LOAD_RATE, clock=time.time)
        # The QA tester: X-Canary: true through the weighted listener, or (blue-green) the preview.
        self.header = (
            LoadGenerator(f"http://127.0.0.1:{self.ports.preview}/", rate=QA_RATE, clock=time.time)
            if strategy == BLUE_GREEN
            else LoadGenerator(
                f"http://127.0.0.1:{self.ports.proxy}/",
                rate=HEADER_RATE,
                headers={"X-Canary": "true"},
                clock=time.time,
            )
        )

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    async def run(self) -> Summary:
        self.check_listen()
        if not prometheus_wanted() and self.router in ("nginx", "traefik"):
            why = "NGINX reports no per-upstream metrics" if self.router == "nginx" else "it reads Prometheus"
            raise DemoError(
                f"the {self.router} demo needs Prometheus ({why}): "
                "install it (`apt-get install prometheus`, or `make demo` as root) or use --router envoy"
            )
        judged = "the sequential judge" if self.judge == SEQUENTIAL else "the tutorial's thresholds"
        self.say(
            f"meshshift demo: scenario {self.scenario.name} ({self.scenario.story}), router {self.router}, "
            f"strategy {self.strategy}, analysis by {judged}"
        )
        self.say(f"working directory (logs, configs, state): {self.workdir}")
        targets = [
            ScrapeTarget("app-stable", f"127.0.0.1:{self.ports.stable}"),
            ScrapeTarget("app-canary", f"127.0.0.1:{self.ports.canary}"),
            # The job Argo Rollouts' Grafana dashboard selects, as the ServiceMonitor component sets it.
            ScrapeTarget("argo-rollouts-metrics", self.listen.replace("0.0.0.0", "127.0.0.1")),  # noqa: S104
        ]
        if self.router == "envoy":
            targets.append(ScrapeTarget("envoy", f"127.0.0.1:{self.ports.admin}", "/stats/prometheus"))
        elif self.router == "traefik":
            targets.append(ScrapeTarget("traefik", f"127.0.0.1:{self.ports.admin}", "/metrics"))
        async with (
            running_apps(self.scenario, self.ports, self.workdir),
            maybe_prometheus(targets, self.workdir) as prometheus,
        ):
            return await self._with_metrics(prometheus)

    async def _with_metrics(self, prometheus: PrometheusServer | None) -> Summary:
        if prometheus is None:
            why = "no prometheus binary found" if find_prometheus() is None else f"{NO_PROMETHEUS_ENV} is set"
            source = f"Envoy's admin endpoint (/stats/prometheus), read directly ({why})"
            self.say(
                f"no Prometheus ({why}): the analysis reads Envoy's admin endpoint /stats/prometheus instead"
            )
        else:
            source = f"Prometheus at {prometheus.url}, the tutorial's queries on the apps' metrics"
            if self.judge == SEQUENTIAL:
                source = (
                    f"Prometheus at {prometheus.url}, the apps' counters read raw by the sequential judge"
                )
        documents = rollout_document(
            self.ports,
            self.router,
            prometheus.url if prometheus else None,
            str(self.workdir / "demo.state.json"),
            judge=self.judge,
            strategy=self.strategy,
        )
        text = yaml.safe_dump_all(documents, sort_keys=False)
        (self.workdir / "rollout.yaml").write_text(text)
        loaded = parse_rollout_text(text, str(self.workdir / "rollout.yaml"))
        settings = DaemonSettings(
            listen=self.listen,
            token=self.token,
            prometheus_address=prometheus.url if prometheus else None,
            notifications=self.notifications,
        )
        async with standalone_runtime(
            loaded, base_dir=self.workdir, settings=settings, start=False
        ) as runtime:
            self._print_urls(runtime, prometheus)
            async with running_load(self.load):
                if prometheus is not None:
                    self.say("waiting for Prometheus' first scrapes (about 7 s)...")
                    await prometheus.wait_for_data(
                        f'sum(rate(http_requests_total{{service="{SERVICE}", version="stable"}}[10s]))',
                        wait_seconds=60,
                    )
                runtime.start()
                record = await self._follow(runtime)
                after = await self._traffic_after()
                summary = self._summary(record, after, source)
                if self.hold > 0:
                    await self._hold(summary)
        return summary

    async def _hold(self, summary: Summary) -> None:
        """The summary now; then the proxy, the load, the dashboard and Prometheus stay up a while."""
        print_summary(self.console, summary)
        self.held = summary
        self.say(
            f"holding for {self.hold:g} s: the proxy, the dashboard, /metrics and Prometheus stay up "
            "(Ctrl-C ends it)"
        )
        await asyncio.sleep(self.hold)

    def _print_urls(self, runtime: StandaloneRuntime, prometheus: PrometheusServer | None) -> None:
        base = runtime.http_url or f"http://{self.listen}"
        base = base.replace("0.0.0.0", "127.0.0.1")  # noqa: S104
        proxy = runtime.proxy_url
        lines = [
            f"proxy ({self.router}):  {proxy}/   try: curl -H 'X-Canary: true' {proxy}/"
            if self.strategy == CANARY
            else f"proxy ({self.router}):  {proxy}/ (users)   preview: {runtime.preview_url}/ (QA)",
            f"dashboard:       {base}/",
            f"metrics:         {base}/metrics",
            f"control:         meshshift promote {SERVICE} -n standalone --server {base} "
            f"--token {self.token}",
        ]
        if prometheus is not None:
            lines.append(f"prometheus:      {prometheus.url}/")
        if runtime.envoy_admin_url:
            lines.append(f"envoy admin:     {runtime.envoy_admin_url}/")
        if self.router == "traefik":
            api = f"http://127.0.0.1:{self.ports.admin}"
            lines.append(f"traefik api:     {api}/api/http/routers   metrics: {api}/metrics")
        for line in lines:
            self.say(line)

    async def _follow(self, runtime: StandaloneRuntime) -> RevisionRecord | None:
        revision = runtime.workloads.revision
        started = time.time()
        title = f"meshshift demo: {self.scenario.name} on {self.router} ({self.strategy})"
        header_load: asyncio.Task[LoadStats] | None = None
        try:
            with ProgressDisplay(self.console, title) as display:
                while time.time() - started < DEADLINE:
                    runtime.check_proxy()
                    snapshot = runtime.registry.snapshots.get(runtime.key)
                    if snapshot is not None:
                        display.show(self._view(snapshot, started))
                        if header_load is None and self._qa_can_start(snapshot):
                            # QA traffic starts once its route is there, and stops at the decision.
                            header_load = asyncio.create_task(self.header.run())
                        record = decision(snapshot, revision)
                        if record is not None:
                            self.decided_runs = dict(snapshot.analysis_runs)
                            return record
                    await asyncio.sleep(0.25)
            return None
        finally:
            if header_load is not None:
                header_load.cancel()
                await asyncio.gather(header_load, return_exceptions=True)

    def _qa_can_start(self, snapshot: RolloutSnapshot) -> bool:
        """QA testers start once they can reach the new revision: its header route, or the preview."""
        if self.strategy == BLUE_GREEN:
            return any(applied.preview == "canary" for applied in snapshot.applied.values())
        return header_route_applied(snapshot)

    def _view(self, snapshot: RolloutSnapshot, started: float) -> DemoView:
        now = time.time()
        return build_view(
            snapshot,
            elapsed=now - started,
            load=self.load.stats,
            header=self.header.stats,
            window_start=now - 2.0,
            qa_label="preview (QA)" if self.strategy == BLUE_GREEN else "X-Canary: true",
        )

    async def _traffic_after(self) -> Counter[str]:
        """The versions that answered the weighted traffic in the seconds after the decision."""
        since = time.time() + 0.5  # let answers already in flight come back first
        await asyncio.sleep(AFTER_DECISION)
        return Counter(a.version for a in self.load.stats.recent if a.at >= since)

    def _summary(self, record: RevisionRecord | None, after: Counter[str], source: str) -> Summary:
        stats: LoadStats = self.load.stats
        first_canary = stats.first_seen.get("canary")
        if self.strategy == BLUE_GREEN:  # the new revision's first requests are the testers'
            first_canary = self.header.stats.first_seen.get("canary")
        decided = None
        if record is not None and first_canary is not None:
            decided = record.finished_at - first_canary
        if self.strategy == BLUE_GREEN:
            return self._blue_green_summary(record, after, source, decided)
        return Summary(
            scenario=self.scenario.name,
            router=self.router,
            outcome=record.outcome if record is not None else f"no decision within {DEADLINE:g}s",
            expected=self.scenario.expected,
            decision_seconds=decided,
            requests=dict(stats.requests),
            # Every request the demo sent that failed: the weighted traffic's and the QA
            # testers' (X-Canary), who are users too.
            failed=dict(stats.failures + self.header.stats.failures),
            header_requests=dict(self._header_answers_until(record)),
            after=dict(after),
            metrics_source=source,
            evidence=tuple(judge_lines(self.decided_runs, record)),
        )

    def _blue_green_summary(
        self, record: RevisionRecord | None, after: Counter[str], source: str, decided: float | None
    ) -> Summary:
        users, qa = self.load.stats, self.header.stats
        preview_first = qa.first_seen.get("canary")
        users_first = users.first_seen.get("canary")
        switched = (
            users_first - preview_first if users_first is not None and preview_first is not None else None
        )
        return Summary(
            scenario=self.scenario.name,
            router=self.router,
            outcome=record.outcome if record is not None else f"no decision within {DEADLINE:g}s",
            expected=self.scenario.expected,
            decision_seconds=decided,
            requests=dict(users.requests),
            failed=dict(users.failures),
            header_requests={},
            after=dict(after),
            metrics_source=source,
            strategy=BLUE_GREEN,
            preview_requests=dict(qa.requests),
            preview_failed=dict(qa.failures),
            switch_seconds=switched,
            switch_back_seconds=switch_back_seconds(self.decided_runs, record, users),
            spare_users=self.scenario.name in ("bad-errors", "bad-latency"),
        )

    def _header_answers_until(self, record: RevisionRecord | None) -> Counter[str]:
        """The QA requests sent while the header route was set (it goes with the decision)."""
        stats = self.header.stats
        counts = Counter(stats.requests)
        if record is not None:
            late = Counter(a.version for a in stats.recent if a.at - a.latency > record.finished_at)
            counts -= late
        return counts

    def check_listen(self) -> None:
        """A busy --listen port is said before anything starts, with what to do about it."""
        reason = port_in_use(self.listen)
        if reason is not None:
            host, port = split_host_port(self.listen)
            raise DemoError(
                f"--listen {self.listen}: port {port} is in use ({reason}), perhaps by another "
                f"meshshift demo or daemon; stop it, or pick a free port: --listen {host}:{free_port()}"
            )

    def farewell(self) -> None:
        """The working directory stays: logs, configs, the state and the rollout.yaml to reuse."""
        rollout = self.workdir / "rollout.yaml"
        self.say(f"working directory kept: {self.workdir}")
        if rollout.exists():
            self.say(f"  its rollout: {rollout}  (meshshift run --config {rollout})")


def _log_to_file(path: Path) -> None:
    """The daemon's JSON logs go to a file: the terminal belongs to the progress display."""
    from meshshift.logs import configure_logging

    configure_logging("json", "INFO")
    path.parent.mkdir(parents=True, exist_ok=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=path.open("a")))


async def run_demo(
    *,
    scenario: str,
    router: str,
    listen: str,
    judge: str = THRESHOLD,
    notifications: NotificationSettings | None = None,
    strategy: str = CANARY,
    hold: float = 0.0,
) -> int:
    """Run one demo scenario; the exit code says whether it ended as the scenario expects."""
    console = Console()
    demo = Demo(
        SCENARIOS[scenario],
        router,
        listen,
        console,
        judge=judge,
        notifications=notifications,
        strategy=strategy,
        hold=hold,
    )
    _log_to_file(demo.workdir / "meshshift.log")
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        summary = await demo.run()
        if demo.held is None:
            print_summary(console, summary)
        return 0 if summary.as_expected else 1
    except asyncio.CancelledError:
        if not stopping:
            raise
        console.print("interrupted: every process the demo started is stopped", highlight=False)
        if demo.held is not None:  # ended in the hold: the rollout was decided
            return 0 if demo.held.as_expected else 1
        return 130
    except (DemoError, *FATAL_ERRORS) as error:
        console.print(f"meshshift demo: {error}", style="red", highlight=False, soft_wrap=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        demo.farewell()
