"""The long version of tests/reliability: kills, fuzzing and the alias bomb, counted.

Prints tried / survived / lost for each part:

- **kills**: standalone rollouts on Envoy and NGINX (`meshshift run --config`, real
  subprocesses), the daemon killed with SIGKILL at random moments and restarted (sometimes
  from another directory), with clients counting every request per version, header-routed
  ones included (tests/reliability/chaos.py). A kill is lost when its run did not end
  promoted exactly once, or a request was misrouted.
- **specs**: mutated real specs through every spec parser (tests/reliability/spec_fuzz.py);
- **expressions**: conditions from the language's grammar, half of them mutated, compiled,
  evaluated on hostile results and assessed (tests/reliability/test_fuzz_conditions.py).
  Both run in worker processes: a case that takes longer than 5 s is cut off and counted
  as a hang; an exception other than the documented ones is a crash.
- **alias bomb**: a Kubernetes-mode daemon (on the test emulator) runs a rollout while
  another Deployment's annotation is an alias bomb, edited every 0.2 s: the rollout's time
  from release to its pause against a quiet run (median of 5 each), /healthz's slowest
  answer, and the daemon's RSS growth.

Run: .venv/bin/python bench/chaos.py [--kills 100] [--specs 10000] [--expressions 10000]
     [--only kills,specs,expressions,bomb]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package holds the harnesses

from meshshift.logs import configure_logging

HANG_SECONDS = 5.0
KILLS_PER_RUN = 5


# --- fuzzing in worker processes ---------------------------------------------------------


def _spec_case(index: int) -> None:
    from tests.reliability.spec_fuzz import check_spec, fuzzed_spec

    check_spec(fuzzed_spec(random.Random(f"spec-{index}")))


def _expression_case(index: int) -> None:
    from tests.reliability.test_fuzz_conditions import fuzz_conditions

    report = fuzz_conditions(1, seed=index)
    if report.crashes:
        raise AssertionError(report.crashes[0])


CASES: dict[str, Callable[[int], None]] = {"specs": _spec_case, "expressions": _expression_case}


def _warm_up(kind: str) -> None:
    """Imports and the corpus, before the clock runs for any case."""
    if kind == "specs":
        from tests.reliability.spec_fuzz import corpus

        corpus()
    with contextlib.suppress(Exception):  # a crash here is counted when the case comes round
        CASES[kind](-1)


def _worker(kind: str, tasks: Connection) -> None:
    check = CASES[kind]
    _warm_up(kind)
    tasks.send("ready")
    while True:
        index = tasks.recv()
        if index is None:
            return
        started = time.perf_counter()
        try:
            check(index)
            outcome = ""
        except Exception as error:
            where = traceback.extract_tb(error.__traceback__)[-1]
            outcome = (
                f"{type(error).__name__}: {str(error)[:160]} ({Path(where.filename).name}:{where.lineno})"
            )
        tasks.send((index, outcome, time.perf_counter() - started))


@dataclass
class FuzzReport:
    kind: str
    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: list[int] = field(default_factory=list)
    slowest: float = 0.0
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return len(self.crashes) + len(self.hangs)

    def summary(self) -> str:
        return (
            f"{self.kind}: tried {self.tried}, survived {self.tried - self.lost}, lost {self.lost} "
            f"({len(self.crashes)} crashes, {len(self.hangs)} hangs over {HANG_SECONDS:g} s); "
            f"slowest case {self.slowest * 1000:.0f} ms; {self.seconds:.0f} s in all"
        )


class _Worker:
    def __init__(self, kind: str) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited event loop or threads
        self.tasks, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(kind, child), daemon=True)
        self.process.start()
        if not self.tasks.poll(120) or self.tasks.recv() != "ready":
            raise RuntimeError(f"a {kind} worker did not start")

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            with contextlib.suppress(OSError):
                self.tasks.send(None)
        self.process.join(10)


def fuzz(kind: str, count: int, workers: int) -> FuzzReport:
    report = FuzzReport(kind)
    started = time.perf_counter()
    pool = [_Worker(kind) for _ in range(workers)]
    pending: dict[int, tuple[int, float]] = {}  # worker slot -> (case, sent at)
    next_case = 0
    try:
        while next_case < count or pending:
            for slot, worker in enumerate(pool):
                if slot not in pending and next_case < count:
                    worker.tasks.send(next_case)
                    pending[slot] = (next_case, time.monotonic())
                    next_case += 1
            for slot, worker in enumerate(pool):
                if slot not in pending:
                    continue
                case, sent = pending[slot]
                if worker.tasks.poll(0.01):
                    _, outcome, seconds = worker.tasks.recv()
                    del pending[slot]
                    report.tried += 1
                    report.slowest = max(report.slowest, seconds)
                    if outcome:
                        report.crashes.append(f"case {case}: {outcome}")
                    if seconds > HANG_SECONDS:
                        report.hangs.append(case)
                elif time.monotonic() - sent > HANG_SECONDS + 2.0:  # + the worker's own overhead
                    worker.stop(kill=True)
                    pool[slot] = _Worker(kind)
                    del pending[slot]
                    report.tried += 1
                    report.hangs.append(case)
    finally:
        for worker in pool:
            worker.stop()
    report.seconds = time.perf_counter() - started
    return report


# --- kills -------------------------------------------------------------------------------


async def kills(total: int) -> bool:
    from tests.reliability.chaos import RunOutcome, chaos_run, running_apps

    outcomes: list[RunOutcome] = []
    runs = max(2, -(-total // KILLS_PER_RUN))
    async with running_apps() as apps:
        with tempfile.TemporaryDirectory(prefix="meshshift-chaos-") as workdir:
            for run in range(runs):
                router = ("envoy", "nginx")[run % 2]
                rng = random.Random(f"chaos-{run}")
                outcome = await chaos_run(
                    router, apps, Path(workdir) / f"run-{run}", kills=KILLS_PER_RUN, rng=rng
                )
                outcomes.append(outcome)
                print(f"  run {run + 1}/{runs}: {outcome.summary()}", flush=True)
    ok = True
    for router in ("envoy", "nginx"):
        mine = [o for o in outcomes if o.router == router]
        tried = sum(o.kills for o in mine)
        survived = sum(o.kills for o in mine if o.survived)
        requests: Counter[str] = Counter()
        around: Counter[str] = Counter()
        for o in mine:
            requests.update(o.requests)
            around.update(o.around_restarts)
        misrouted = sum(o.misrouted for o in mine)
        failed = sum(o.failed_requests for o in mine)
        print(
            f"kills on {router}: tried {tried}, survived {survived}, lost {tried - survived}; "
            f"{sum(requests.values())} requests ({_counts(requests)}), within 1 s of a kill or restart "
            f"({_counts(around)}); misrouted {misrouted}, failed {failed}"
        )
        ok = ok and survived == tried and misrouted == 0
    return ok


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


# --- the alias bomb ----------------------------------------------------------------------


async def alias_bomb(repeats: int = 5) -> None:
    import aiohttp
    import kmock

    from tests.kube.conftest import register_resources
    from tests.kube.harness import KubeEnv, running_daemon, world, write_kubeconfig
    from tests.kube.kmock_ext import K8sEmulator
    from tests.kube.scenarios import STATE, deployment, given, new_version, wait_initialized, wait_state
    from tests.reliability.hostile import alias_bomb as bomb_text

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    async def one(mode: str) -> tuple[float, float, int]:
        async with K8sEmulator() as emulator, kmock.Server(emulator):
            register_resources(emulator)
            with tempfile.TemporaryDirectory() as workdir:
                url = str(emulator.url).rstrip("/")
                env = KubeEnv(
                    url, write_kubeconfig(Path(workdir) / "kubeconfig", url, "shop"), "shop", emulator
                )
                async with world(env) as w:
                    await given(w, "istio")
                    async with running_daemon(env) as operator:
                        await wait_initialized(w)
                        before = rss()
                        slowest = 0.0
                        stop = asyncio.Event()

                        async def probe() -> None:
                            nonlocal slowest
                            async with aiohttp.ClientSession() as session:
                                while not stop.is_set():
                                    started = time.monotonic()
                                    async with session.get(f"{operator.url}/healthz") as response:
                                        await response.read()
                                    slowest = max(slowest, time.monotonic() - started)
                                    await asyncio.sleep(0.05)

                        def steps(edit: int) -> str:
                            if mode == "bomb":
                                return bomb_text(6 + edit % 4)
                            return f"- setWeight: 500  # edit {edit}\n"  # as many edits, invalid and cheap

                        async def edit() -> None:
                            annotations = {STATE: "true", "meshshift.io/router": "istio"}
                            annotations["meshshift.io/steps"] = steps(0)
                            await w.cluster.create_deployment(deployment("bomb", annotations=annotations))
                            edits = 0
                            while not stop.is_set():
                                edits += 1
                                await w.cluster.annotate("bomb", **{"meshshift.io/steps": steps(edits)})
                                await asyncio.sleep(0.2)

                        tasks = [asyncio.create_task(probe())]
                        if mode != "quiet":
                            tasks.append(asyncio.create_task(edit()))
                            await asyncio.sleep(1.0)
                        released = time.monotonic()
                        await w.cluster.patch_deployment("web", new_version("v2"))
                        await wait_state(w, "the pause", phase="Paused", stepIndex=5)
                        elapsed = time.monotonic() - released
                        stop.set()
                        await asyncio.gather(*tasks, return_exceptions=True)
                        return elapsed, slowest, rss() - before

    modes = ("quiet", "edits", "bomb")
    results: dict[str, list[tuple[float, float, int]]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            results[mode].append(await one(mode))
    timing = {mode: statistics.median(r[0] for r in results[mode]) for mode in modes}
    slowest = {mode: max(r[1] for r in results[mode]) * 1000 for mode in modes}
    print(
        f"alias bomb (median of {repeats}; the emulator runs in this process): the other rollout's "
        f"release-to-pause {timing['bomb']:.2f} s with another Deployment's annotation an alias bomb edited "
        f"every 0.2 s, {timing['edits']:.2f} s with the same edits of a small invalid annotation "
        f"(bomb/edits {timing['bomb'] / timing['edits']:.2f}), {timing['quiet']:.2f} s quiet; "
        f"slowest /healthz {slowest['bomb']:.0f} / {slowest['edits']:.0f} / {slowest['quiet']:.0f} ms; "
        f"RSS growth during a bombed rollout {max(r[2] for r in results['bomb']) / 2**20:.1f} MB at most; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def bomb_read_cost(reads: int = 200) -> None:
    """What reading one bombed Deployment costs the daemon's event loop, against a small invalid one."""
    from meshshift.spec.annotations import read_deployment
    from meshshift.spec.errors import Findings
    from tests.reliability.hostile import alias_bomb as bomb_text
    from tests.reliability.hostile import deployment_with_steps

    def median_read(steps: str) -> float:
        document = deployment_with_steps(steps, name="b")
        samples = []
        for _ in range(reads):
            started = time.perf_counter()
            read_deployment(document, Findings())
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    small = median_read("- setWeight: 500\n")
    costs = ", ".join(
        f"{levels} levels {median_read(bomb_text(levels)) * 1e3:.2f} ms" for levels in (6, 7, 9)
    )
    print(f"alias bomb: reading a bombed Deployment takes {costs}; a small invalid one {small * 1e3:.2f} ms")


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--expressions", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="kills,specs,expressions,bomb")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    configure_logging("console", "ERROR")
    ok = True
    for kind, count in (("specs", args.specs), ("expressions", args.expressions)):
        if kind in parts:
            report = fuzz(kind, count, args.workers)
            print(report.summary(), flush=True)
            for crash in report.crashes[:10]:
                print(f"  crash: {crash}")
            for hang in report.hangs[:10]:
                print(f"  hang: case {hang}")
            ok = ok and report.lost == 0
    if "kills" in parts:
        ok = asyncio.run(kills(args.kills)) and ok
    if "bomb" in parts:
        bomb_read_cost()
        asyncio.run(alias_bomb())
    print("100% survived" if ok else "SOMETHING WAS LOST")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
