"""How far one `meshshift run` goes: N annotated Deployments against a fake API server in another process.

Each run starts bench/fake_kube.py (the API server, the Deployment controller and Prometheus)
and `meshshift run` with leader election on; N Deployments opt in with the steps
`setWeight 20 / pause 5s / setWeight 50 / pause 5s` (Istio VirtualServices), optionally with
a background Prometheus analysis; then every image changes at once. Figures are medians of
`--runs` runs (3):

- cores: the daemon's CPU seconds (user + system, all threads) over the rollout's wall time,
  from the image change until the server heard the rollouts' last request (their Events are
  posted off the critical path and may come after the last promotion); also until promoted,
  and the fake API server's own cores (it shares the machine);
- Event delay: per Event, its arrival at the server minus the moment it was recorded;
- lag p50 / p99: how much longer each pause lasted than asked (the state write that ended
  it, seen by the server, minus the `pauseUntil` the daemon stored);
- RSS (and its peak) after the rollout;
- requests per step: every Kubernetes request the server saw for the rollouts, by verb and
  resource, per step of the schedule (the promotion counts as a step); and by phase: from the
  state write that announces a step (its pass applies what leads there) to the next one;
- init: from the daemon's start until every rollout is initialised; resume: from a restart
  (SIGTERM, start again) until every rollout has read its state back;
- `/metrics`: render time (median of 5 scrapes) and size after the rollout;
- idle: requests per minute once everything is done (promoted, the old canaries scaled down
  after their 30 s delay): the rollouts'; and the daemon's own (Lease renewals, watches);
- the longest gap between two Lease renewals, while initialising and while rolling out.

The daemon runs without client-side rate limiting (`--qps 0`) unless `--qps` says otherwise:
the figures are what one process can do. With the daemon's default, Argo's 40 requests/s, a
step of 1,000 rollouts moving at once takes minutes by design (`--qps 40` shows it).

Run: .venv/bin/python bench/scale.py [--sizes 100,300,1000] [--runs 3] [--analysis] [--profile] [--qps Q]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from meshshift.processes import free_port

HERE = Path(__file__).resolve().parent
NAMESPACE = "bench"
STEPS = "- setWeight: 20\n- pause: {duration: 5s}\n- setWeight: 50\n- pause: {duration: 5s}\n"
STEP_NAMES = ("setWeight 20", "pause 5s", "setWeight 50", "pause 5s")
PAUSE_SECONDS = 5.0
ANALYSIS = "templates:\n- templateName: success-rate\n"
IDLE_SECONDS = 30.0
HANG_GUARD = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ROLLOUT_SUFFIXES = ("-meshshift-state", "-primary", "-canary")


@dataclass
class RunResult:
    n: int
    cpu_seconds: float  # from the image change until the rollouts' last request (their Events too)
    cpu_promoted_seconds: float  # from the image change until every rollout is promoted
    server_cpu_seconds: float
    rollout_seconds: float
    drained_seconds: float  # from the image change until the rollouts' last request
    event_delays: list[float]  # per Event: when the server got it, minus when it was recorded
    lags: list[float]
    rss_mib: float
    peak_rss_mib: float
    per_phase: dict[str, Counter[tuple[str, str]]]  # phase -> (verb, resource) -> requests per rollout
    init_seconds: float
    resume_seconds: float
    metrics_ms: float
    metrics_bytes: int
    series_per_rollout: int
    series_total: int
    idle_rollouts_per_min: float
    idle_daemon_per_min: Counter[tuple[str, str]]
    lease_gap_init: float
    lease_gap_rollout: float
    load: tuple[float, float]
    profile: Counter[str] = field(default_factory=Counter)
    profile_self: Counter[str] = field(default_factory=Counter)
    profile_samples: int = 0

    @property
    def cores(self) -> float:
        """CPU over the whole of the work: until the last Event is out, if that is later."""
        return self.cpu_seconds / max(self.rollout_seconds, self.drained_seconds)

    @property
    def cores_until_promoted(self) -> float:
        return self.cpu_promoted_seconds / self.rollout_seconds

    @property
    def requests_per_step(self) -> float:
        steps = len(STEP_NAMES) + 1  # the promotion is a step too
        return sum(sum(c.values()) for c in self.per_phase.values()) / steps


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def manifests(n: int, *, analysis: bool) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    if analysis:
        objects.append(
            {
                "apiVersion": "meshshift.io/v1alpha1",
                "kind": "AnalysisTemplate",
                "metadata": {"name": "success-rate", "namespace": NAMESPACE},
                "spec": {
                    "metrics": [
                        {
                            "name": "success-rate",
                            "interval": "2s",
                            "successCondition": "result[0] >= 0.9",
                            "failureLimit": 3,
                            "provider": {"prometheus": {"query": "sum(rate(requests_total[1m]))"}},
                        }
                    ]
                },
            }
        )
    for i in range(n):
        name = f"app-{i:04d}"
        annotations = {
            "meshshift.io/enabled": "true",
            "meshshift.io/steps": STEPS,
            "meshshift.io/router": "istio",
        }
        if analysis:
            annotations["meshshift.io/analysis"] = ANALYSIS
        labels = {"app": name}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {**labels, "bench": "rollout"},
                    "annotations": annotations,
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {"name": "app", "image": "app:v1", "ports": [{"containerPort": 8080}]}
                            ]
                        },
                    },
                },
            }
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
            }
        )
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "hosts": [name],
                    "http": [
                        {
                            "name": "primary",
                            "route": [
                                {"destination": {"host": f"{name}-primary"}, "weight": 100},
                                {"destination": {"host": f"{name}-canary"}, "weight": 0},
                            ],
                        }
                    ],
                },
            }
        )
    return objects


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def rollout_of(name: str) -> str | None:
    if not name.startswith("app-"):
        return None
    name = name.split(".", 1)[0]  # an Event: <deployment>.<hex>
    for suffix in _ROLLOUT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.kube_port = free_port()
        self.kube_url = f"http://127.0.0.1:{self.kube_port}"
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "bench", "cluster": {"server": self.kube_url}}],
                    "users": [{"name": "bench", "user": {"token": "bench-token"}}],
                    "contexts": [
                        {
                            "name": "bench",
                            "context": {"cluster": "bench", "user": "bench", "namespace": NAMESPACE},
                        }
                    ],
                    "current-context": "bench",
                }
            )
        )
        self.session: aiohttp.ClientSession | None = None
        self.profiler: asyncio.subprocess.Process | None = None
        self.server_pid = 0
        self.daemon: tuple[asyncio.subprocess.Process, str] | None = None  # the one that must be running

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    async def bench_call(self, what: str, body: Any = None) -> Any:
        url = f"{self.kube_url}/_bench/{what}"
        if body is None:
            async with self.http.get(url) as response:
                return await response.json()
        async with self.http.post(url, data=json.dumps(body)) as response:
            return await response.json()

    @contextlib.asynccontextmanager
    async def fake_server(self) -> AsyncIterator[None]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "fake_kube.py"),
            "--port",
            str(self.kube_port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.workdir / "fake_kube.log").open("w"),
        )
        self.server_pid = process.pid
        try:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    await self.bench_call("count")
                    break
                await asyncio.sleep(0.05)
            yield
        finally:
            process.terminate()
            await process.wait()

    async def start_daemon(self, tag: str) -> tuple[asyncio.subprocess.Process, str]:
        listen = f"127.0.0.1:{free_port()}"
        command = [
            sys.executable,
            "-m",
            "meshshift.cli",
            "run",
            "--kubeconfig",
            str(self.kubeconfig),
            "-n",
            NAMESPACE,
            "--listen",
            listen,
            "--leader-elect",
            "--log-format",
            "json",
            "--prometheus-address",
            self.kube_url,
            f"--qps={self.args.qps:g}",
            *self.args.daemon_arg,
        ]
        env = {**os.environ, "MESHSHIFT_IDENTITY": f"bench-{tag}"}
        log = (self.workdir / f"daemon-{tag}.log").open("w")
        process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
        self.daemon = (process, tag)
        return process, f"http://{listen}"

    def check_daemon(self) -> None:
        """A daemon that exited is an error now, with its last lines, not a wait of HANG_GUARD."""
        if self.daemon is None or self.daemon[0].returncode is None:
            return
        process, tag = self.daemon
        tail = (self.workdir / f"daemon-{tag}.log").read_text(errors="replace").splitlines()[-5:]
        raise SystemExit(f"the daemon ({tag}) exited with {process.returncode}:\n" + "\n".join(tail))

    async def wait_states(self, done: Any, *, what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            self.check_daemon()
            states = await self.bench_call("states")
            if done(states):
                return
            await asyncio.sleep(0.2)
        raise SystemExit(f"timed out waiting for {what}")

    async def run(self, n: int) -> RunResult:
        load_before = os.getloadavg()[0]
        async with aiohttp.ClientSession() as self.session, self.fake_server():
            objects = manifests(n, analysis=self.args.analysis)
            for start in range(0, len(objects), 200):  # the server takes bodies up to 1 MiB
                await self.bench_call("load", objects[start : start + 200])
            started = time.time()
            daemon, url = await self.start_daemon("a")
            try:
                return await self._run(n, daemon, url, started, load_before)
            finally:
                if self.profiler is not None and self.profiler.returncode is None:  # interrupted
                    self.profiler.send_signal(signal.SIGINT)
                    await self.profiler.wait()
                if daemon.returncode is None:
                    daemon.terminate()
                    await daemon.wait()

    async def _run(
        self, n: int, daemon: asyncio.subprocess.Process, url: str, started: float, load_before: float
    ) -> RunResult:
        def initialized(states: dict[str, list[Any]]) -> bool:
            return len(states) == n and all(s[0] == "Healthy" and s[1] == "Idle" for s in states.values())

        await self.wait_states(initialized, what="every rollout initialised")
        init_seconds = time.time() - started
        initial = {name: s[2] for name, s in (await self.bench_call("states")).items()}
        await asyncio.sleep(2.0)  # let the last Events of the initialisation go out
        profiler = await self.start_profiler(daemon.pid) if self.args.profile else None
        cpu_before, server_cpu_before = cpu_seconds(daemon.pid), cpu_seconds(self.server_pid)
        changed = (await self.bench_call("set-image", {"image": "app:v2"}))["at"]

        def promoted(states: dict[str, list[Any]]) -> bool:
            return all(s[2] != initial[name] and s[1] == "Idle" for name, s in states.items())

        await self.wait_states(promoted, what="every rollout promoted")
        finished = time.time()
        cpu_promoted = cpu_seconds(daemon.pid) - cpu_before
        drained = await self.wait_drained()
        cpu = cpu_seconds(daemon.pid) - cpu_before
        server_cpu = cpu_seconds(self.server_pid) - server_cpu_before
        profile, profile_self, samples = (
            await self.stop_profiler(profiler) if profiler else (Counter(), Counter(), 0)
        )
        rss, peak = memory_mib(daemon.pid)
        metrics_ms, metrics_bytes, series_one, series_total = await self.scrape(url)
        # The old canaries scale down after the scale-down delay (30 s); then all is quiet.
        await self.wait_states(
            lambda states: all(s[3] == 0 for s in states.values()), what="every canary scaled down"
        )
        await self.wait_drained(quiet=2.0)
        idle_from = time.time()
        await asyncio.sleep(self.args.idle)
        idle_to = time.time()
        self.daemon = None  # stopped on purpose
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()
        restarted = time.time()
        second, _ = await self.start_daemon("b")
        try:
            resume_seconds = await self.wait_resumed(n, restarted)
        finally:
            second.terminate()
            await second.wait()
        log = await self.bench_call("log")
        requests = log["requests"]
        return RunResult(
            n=n,
            cpu_seconds=cpu,
            cpu_promoted_seconds=cpu_promoted,
            server_cpu_seconds=server_cpu,
            rollout_seconds=finished - changed,
            drained_seconds=drained - changed,
            event_delays=self.event_delays(requests, changed),
            lags=self.lags(log["states"], changed),
            rss_mib=rss,
            peak_rss_mib=peak,
            per_phase=self.per_phase(requests, log["states"], changed, max(finished, drained), n),
            init_seconds=init_seconds,
            resume_seconds=resume_seconds,
            metrics_ms=metrics_ms,
            metrics_bytes=metrics_bytes,
            series_per_rollout=series_one,
            series_total=series_total,
            idle_rollouts_per_min=sum(
                1 for r in requests if idle_from <= r[0] < idle_to and rollout_of(r[4]) is not None
            )
            * 60
            / (idle_to - idle_from),
            idle_daemon_per_min=Counter(
                {
                    key: count * 60 / (idle_to - idle_from)
                    for key, count in Counter(
                        (r[1], r[2])
                        for r in requests
                        if idle_from <= r[0] < idle_to and rollout_of(r[4]) is None
                    ).items()
                }
            ),
            lease_gap_init=self.lease_gap(requests, "bench-a", started, changed),
            lease_gap_rollout=self.lease_gap(requests, "bench-a", changed, finished),
            load=(load_before, os.getloadavg()[0]),
            profile=profile,
            profile_self=profile_self,
            profile_samples=samples,
        )

    async def wait_drained(self, quiet: float = 1.0) -> float:
        """Until the server heard nothing for the rollouts for `quiet` seconds; when it last did."""
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            self.check_daemon()
            last = float((await self.bench_call("last-rollout-request"))["at"])
            if time.time() - last >= quiet:
                return last
            await asyncio.sleep(0.2)
        raise SystemExit("timed out waiting for the rollouts' last requests")

    @staticmethod
    def event_delays(requests: list[list[Any]], since: float) -> list[float]:
        """Per Event created: its arrival at the server minus the moment it was recorded.

        meshshift names an Event `<deployment>.<time_ns hex><3 hex pid><3 hex counter>`.
        """
        delays = []
        for at, verb, resource, _namespace, name, _identity, status in requests:
            if resource != "events" or verb != "Create" or status >= 300 or at < since:
                continue
            stamp = name.rpartition(".")[2][:-6]
            with contextlib.suppress(ValueError):
                delays.append(at - int(stamp, 16) / 1e9)
        return delays

    async def wait_resumed(self, n: int, since: float) -> float:
        """Until every rollout read its state back (its controller's first call after a restart)."""
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            self.check_daemon()
            read = await self.bench_call("state-reads", {"since": since, "identity": "bench-b"})
            if read["rollouts"] >= n:
                return float(read["last"]) - since
        raise SystemExit("timed out waiting for the restarted daemon to resume")

    @staticmethod
    def lags(states: list[list[Any]], since: float) -> list[float]:
        """Per pause: when the state that ended it was written, minus the pauseUntil stored."""
        lags: list[float] = []
        pending: dict[str, tuple[int, float]] = {}  # rollout -> (paused step, pauseUntil)
        for at, rollout, state in states:
            if at < since:
                continue
            step, until = int(state.get("stepIndex") or 0), state.get("pauseUntil")
            if rollout in pending and (step != pending[rollout][0] or state.get("stage") != "Stepping"):
                lags.append(at - pending.pop(rollout)[1])
            if until is not None and state.get("phase") == "Paused" and rollout not in pending:
                pending[rollout] = (step, float(until))
        return lags

    @staticmethod
    def per_phase(
        requests: list[list[Any]], states: list[list[Any]], since: float, until: float, n: int
    ) -> dict[str, Counter[tuple[str, str]]]:
        """Requests per rollout by verb and resource, in each phase of the schedule."""
        timeline: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for at, rollout, state in states:
            if since <= at <= until:
                stage = state.get("stage")
                if stage == "Stepping":
                    index = min(int(state.get("stepIndex") or 0), len(STEP_NAMES) - 1)
                    phase = f"reaching step {index + 1}: {STEP_NAMES[index]}"
                elif stage in ("Promoting", "Finalizing"):
                    phase = "promotion"
                elif stage == "Idle":
                    phase = "after promotion"
                else:
                    phase = str(stage)
                timeline[rollout].append((at, phase))
        phases: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        for at, verb, resource, _namespace, name, _identity, _status in requests:
            rollout = rollout_of(name)
            if rollout is None or not since <= at <= until + 5.0 or resource == "leases":
                continue
            phase = "before the first state write"
            for written, named in timeline.get(rollout, ()):
                if written > at:
                    break
                phase = named
            phases[phase][(verb, resource)] += 1
        return {phase: Counter({k: v / n for k, v in counts.items()}) for phase, counts in phases.items()}

    @staticmethod
    def lease_gap(requests: list[list[Any]], identity: str, since: float, until: float) -> float:
        renewals = [
            r[0]
            for r in requests
            if r[2] == "leases"
            and r[1] in ("Patch", "Update", "Create")
            and r[5] == identity
            and r[6] < 300
            and since - 30 <= r[0] <= until
        ]
        inside = [t for t in renewals if t >= since]
        before = [t for t in renewals if t < since]
        points = ([before[-1]] if before else []) + inside
        gaps = [b - a for a, b in itertools.pairwise(points)]
        if points:
            gaps.append(until - points[-1])
        return max(gaps, default=float("nan"))

    async def scrape(self, url: str) -> tuple[float, int, int, int]:
        """Median render time of 5 scrapes, size; series of one rollout (app-0000) and in all."""
        times, body = [], b""
        for _ in range(5):
            started = time.perf_counter()
            async with self.http.get(f"{url}/metrics") as response:
                body = await response.read()
            times.append((time.perf_counter() - started) * 1000)
        samples = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
        one = sum(1 for line in samples if '"app-0000"' in line)
        return statistics.median(times), len(body), one, len(samples)

    async def start_profiler(self, pid: int) -> tuple[asyncio.subprocess.Process, Path]:
        out = self.workdir / "profile.raw"
        spy = Path(sys.executable).with_name("py-spy")
        process = await asyncio.create_subprocess_exec(
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.profiler = process
        await asyncio.sleep(1.0)
        return process, out

    async def stop_profiler(
        self, profiler: tuple[asyncio.subprocess.Process, Path]
    ) -> tuple[Counter[str], Counter[str], int]:
        process, out = profiler
        process.send_signal(signal.SIGINT)
        await process.wait()
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            frames = stack.split(";")
            total += count
            own[_frame(frames[-1])] += count
            for frame in {_frame(f) for f in frames}:
                inclusive[frame] += count
        return inclusive, own, total


def _frame(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def report(n: int, runs: list[RunResult], args: argparse.Namespace) -> None:
    lag50 = median(percentile(r.lags, 0.5) for r in runs)
    lag99 = median(percentile(r.lags, 0.99) for r in runs)
    print(
        f"\n=== N = {n}: median of {len(runs)} runs (load average 1 min, before/after each run: "
        + ", ".join(f"{r.load[0]:.1f}/{r.load[1]:.1f}" for r in runs)
        + ")"
    )
    print(
        f"cores during the rollout   {median(r.cores for r in runs):.2f}  "
        f"({median(r.cpu_seconds for r in runs):.1f} CPU-s over "
        f"{median(max(r.rollout_seconds, r.drained_seconds) for r in runs):.1f} s, until the last Event; "
        f"until promoted: {median(r.cores_until_promoted for r in runs):.2f} over "
        f"{median(r.rollout_seconds for r in runs):.1f} s; the fake API server, on the same cores: "
        f"{median(r.server_cpu_seconds / max(r.rollout_seconds, r.drained_seconds) for r in runs):.2f})"
    )
    print(
        f"Event delay p50 / p99 / max {median(percentile(r.event_delays, 0.5) for r in runs):.2f} / "
        f"{median(percentile(r.event_delays, 0.99) for r in runs):.2f} / "
        f"{median(max(r.event_delays, default=float('nan')) for r in runs):.2f} s  "
        "(recorded -> at the server)"
    )
    print(
        f"step lag p50 / p99         {lag50:.2f} / {lag99:.2f} s  "
        f"({median(len(r.lags) for r in runs):.0f} pauses)"
    )
    print(
        f"RSS (peak)                 {median(r.rss_mib for r in runs):.0f} MiB "
        f"({median(r.peak_rss_mib for r in runs):.0f} MiB)"
    )
    print(
        f"requests per step          {median(r.requests_per_step for r in runs):.1f}  "
        f"(per rollout: {median(r.requests_per_step * (len(STEP_NAMES) + 1) for r in runs):.1f})"
    )
    print(
        f"init / resume              {median(r.init_seconds for r in runs):.1f} s / "
        f"{median(r.resume_seconds for r in runs):.1f} s"
    )
    print(
        f"/metrics                   {median(r.metrics_ms for r in runs):.0f} ms, "
        f"{median(r.metrics_bytes for r in runs) / 1024:.0f} KiB; "
        f"{median(r.series_total for r in runs):.0f} series, "
        f"{median(r.series_per_rollout for r in runs):.0f} of them one rollout's (app-0000, promoted)"
    )
    idle = runs[len(runs) // 2]
    daemon_idle = ", ".join(
        f"{verb} {resource} {rate:.1f}" for (verb, resource), rate in sorted(idle.idle_daemon_per_min.items())
    )
    print(
        f"idle requests per minute   rollouts {median(r.idle_rollouts_per_min for r in runs):.1f}; "
        f"the daemon's own: {daemon_idle or 'none'}"
    )
    print(
        f"longest Lease renewal gap  {median(r.lease_gap_init for r in runs):.2f} s initialising, "
        f"{median(r.lease_gap_rollout for r in runs):.2f} s rolling out (renew every 2 s, deadline 10 s)"
    )
    print("requests per rollout, by phase (median run):")
    middle = sorted(runs, key=lambda r: r.requests_per_step)[len(runs) // 2]
    order = [
        "before the first state write",
        *(f"reaching step {i + 1}: {name}" for i, name in enumerate(STEP_NAMES)),
        "promotion",
        "after promotion",
    ]
    for phase in sorted(middle.per_phase, key=lambda p: order.index(p) if p in order else len(order)):
        counts = middle.per_phase[phase]
        detail = ", ".join(
            f"{verb} {resource} {count:.2f}"
            for (verb, resource), count in sorted(counts.items(), key=lambda kv: -kv[1])
        )
        print(f"  {phase:<30} {sum(counts.values()):5.2f}  {detail}")
    if args.profile:
        profiled = max(runs, key=lambda r: r.profile_samples)
        total = max(1, profiled.profile_samples)
        print(f"py-spy, {profiled.profile_samples} samples during the rollout; top frames, self time:")
        for frame, count in profiled.profile_self.most_common(15):
            print(f"  {100 * count / total:5.1f}%  {frame}")
        print("top frames, inclusive (under 90% of the samples):")
        shown = [(f, c) for f, c in profiled.profile.most_common() if c < 0.9 * total][:25]
        for frame, count in shown:
            print(f"  {100 * count / total:5.1f}%  {frame}")


def keep_logs(workdir: Path, into: Path, prefix: str) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for log in [*workdir.glob("*.log"), *workdir.glob("*.raw")]:
        (into / f"{prefix}-{log.name}").write_bytes(log.read_bytes())


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"bench/scale.py: steps {' / '.join(STEP_NAMES)}, analysis {'on' if args.analysis else 'off'}, "
        f"{args.runs} runs per N, {os.cpu_count()} CPUs, daemon --qps={args.qps:g}, "
        f"other daemon args {args.daemon_arg or 'none'}"
    )
    for n in sizes:
        runs = []
        for index in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="meshshift-scale-") as workdir:
                result = await Bench(args, Path(workdir)).run(n)
                if args.keep_logs:
                    keep_logs(Path(workdir), Path(args.keep_logs), f"{n}-{index}")
            print(
                f"  N={n} run {index + 1}: cores {result.cores:.2f}, "
                f"lag p99 {percentile(result.lags, 0.99):.2f} s, "
                f"requests/step {result.requests_per_step:.1f}, init {result.init_seconds:.1f} s",
                flush=True,
            )
            runs.append(result)
        report(n, runs, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--analysis", action="store_true", help="a background Prometheus analysis per rollout"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon during the rollout")
    parser.add_argument(
        "--qps",
        type=float,
        default=0.0,
        help="the daemon's --qps (default 0: no client-side limit; the daemon's own default is Argo's 40, "
        "which spreads a step of 1,000 rollouts in lockstep over minutes)",
    )
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS, help="seconds of idle measured")
    parser.add_argument("--daemon-arg", action="append", default=[], help="an extra `meshshift run` argument")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the daemon's and the server's logs here")
    args = parser.parse_args(argv)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        # A SIGTERM stops the bench the way Ctrl-C does: its servers and daemons stop with it.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await main_async(args)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
