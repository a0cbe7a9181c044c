"""kill -9 of a standalone daemon at random moments, with real traffic counted per version.

One *run* is one rollout of a StandaloneRollout (`meshshift run --config`, a real
subprocess) through a real Envoy or NGINX: a header route (`X-Canary: true`) first, then
weights up to 80 with pauses, then the promotion. While it runs, clients send requests with
and without the header, each on a new connection, and record which version answered. The
daemon is killed with SIGKILL at random moments (during startup, analysis-free steps,
pauses, the promotion) and started again at once, sometimes from another working directory.

A request is *misrouted* when
- it carries `X-Canary: true`, was sent after the header route first reached the canary,
  and the stable answered it (the header route was dropped), or
- it was sent after the promotion was seen in the state file and the old stable answered it.

A run *survives* when the rollout ends promoted exactly once, the promoted endpoints serve
all traffic, no request was misrouted and every restart came back. The tests run a few
kills; `bench/chaos.py` runs hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from meshshift.demo.app import VERSION_HEADER, AppConfig, DemoApp
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")
HEADER = {"X-Canary": "true"}
QA_ROUTE = {"name": "qa", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "true"}}]}
STEPS: list[dict[str, Any]] = [
    {"setHeaderRoute": QA_ROUTE},
    {"setWeight": 20},
    {"pause": {"duration": "1s"}},
    {"setWeight": 40},
    {"pause": {"duration": "1s"}},
    {"setWeight": 60},
    {"pause": {"duration": "1s"}},
    {"setWeight": 80},
    {"pause": {"duration": "1s"}},
]


@dataclass(frozen=True, slots=True)
class Apps:
    stable: str  # host:port
    canary: str


@contextlib.asynccontextmanager
async def running_apps() -> AsyncIterator[Apps]:
    """The stable and canary demo apps, in this process."""
    runners: list[web.AppRunner] = []
    endpoints = []
    try:
        for version in ("stable", "canary"):
            runner = web.AppRunner(DemoApp(AppConfig(version)).build(), access_log=None)
            await runner.setup()
            runners.append(runner)
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            endpoints.append(f"127.0.0.1:{port}")
        yield Apps(*endpoints)
    finally:
        for runner in runners:
            await runner.cleanup()


def rollout_document(router: str, listen: str, apps: Apps, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": "shop"},
        "spec": {
            "router": {router: {"listen": listen, "configDir": "proxy"}},  # relative: to this file
            "stable": {"endpoints": [apps.stable]},
            "canary": {"endpoints": [apps.canary]},
            "steps": STEPS,
            **spec,
        },
    }


class Daemon:
    """`meshshift run --config FILE` as a subprocess that can be killed hard and started again."""

    def __init__(self, config: Path, *, token: str | None = None) -> None:
        self.config = config
        self.listen = f"127.0.0.1:{free_port()}"
        self.token = token or secrets.token_hex(8)
        self.runs = 0
        self.process: ManagedProcess | None = None

    def spawn(self, cwd: Path | None = None) -> asyncio.Task[None]:
        """Start the daemon (from `cwd`); the task ends when the process was started."""
        self.runs += 1
        argv = [MESHSHIFT, "run", "--config", self.config.name]
        argv += ["--listen", self.listen, "--token", self.token]
        if cwd is not None and cwd != self.config.parent:
            argv[3] = str(os.path.relpath(self.config, cwd))  # the same file, named from elsewhere
        workdir = cwd or self.config.parent
        self.process = ManagedProcess(
            "meshshift", argv, self.config.parent / f"daemon-{self.runs}.log", cwd=str(workdir)
        )
        return asyncio.create_task(self.process.start())

    async def start(self, cwd: Path | None = None) -> None:
        await self.spawn(cwd)
        await self.wait_ready()

    async def wait_ready(self, within: float = 60.0) -> None:
        assert self.process is not None
        await wait_until_http_ready(f"http://{self.listen}/readyz", process=self.process, wait_seconds=within)

    @property
    def pid(self) -> int | None:
        process = self.process.process if self.process else None
        return process.pid if process is not None else None

    async def kill_hard(self) -> None:
        """SIGKILL to the daemon only: its proxy lives in its own process group."""
        assert self.process is not None and self.process.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.process.pid, signal.SIGKILL)
        await self.process.process.wait()

    async def terminate(self) -> int | None:
        process = self.process.process if self.process else None
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), 30)

    async def api(self, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.request(method, f"http://{self.listen}/api/v1{path}", headers=headers) as response,
        ):
            return response.status, await response.json()

    def output(self) -> str:
        return self.process.output_tail(40) if self.process else ""


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(path.read_text())  # replaced atomically: never partial
    except FileNotFoundError:
        return None
    return document


def promoted(document: dict[str, Any] | None) -> bool:
    if document is None:
        return False
    rollout = document.get("rollout") or {}
    history = rollout.get("history") or []
    return rollout.get("phase") == "Healthy" and bool(history) and history[-1].get("outcome") == "Promoted"


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # monotonic
    header: bool
    version: str  # "stable", "canary", or "error"


@dataclass
class Traffic:
    """Clients that send requests on new connections through the proxy and keep every answer."""

    url: str
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Traffic]:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = [asyncio.create_task(self._client(session, i % 2 == 0)) for i in range(self.clients)]
            try:
                yield self
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, session: aiohttp.ClientSession, header: bool) -> None:
        while True:
            sent = time.monotonic()
            try:
                async with session.get(self.url, headers=HEADER if header else {}) as response:
                    await response.read()
                    version = response.headers.get(VERSION_HEADER, "error")
            except (aiohttp.ClientError, TimeoutError):
                version = "error"
            self.answers.append(Answer(sent, header, version))
            await asyncio.sleep(0.01)

    def first_header_route_hit(self) -> float | None:
        return next((a.sent for a in self.answers if a.header and a.version == "canary"), None)


@dataclass
class RunOutcome:
    router: str
    kills: int
    survived: bool
    misrouted: int
    failed_requests: int
    requests: Counter[str]  # "header:canary", "plain:stable", ...
    around_restarts: Counter[str]  # the same, within 1 s of a kill or of the daemon being ready again
    problems: list[str]

    def summary(self) -> str:
        verdict = "survived" if self.survived else "LOST: " + "; ".join(self.problems)
        return (
            f"{self.router}: {self.kills} kills, {sum(self.requests.values())} requests "
            f"({dict(sorted(self.requests.items()))}), "
            f"around restarts {dict(sorted(self.around_restarts.items()))}, "
            f"misrouted {self.misrouted}, failed {self.failed_requests}: {verdict}"
        )


async def chaos_run(
    router: str, apps: Apps, workdir: Path, *, kills: int, rng: random.Random, max_delay: float = 1.5
) -> RunOutcome:
    """One rollout with `kills` SIGKILLs of the daemon at random moments; the traffic counted."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir(parents=True, exist_ok=True)
    listen = f"127.0.0.1:{free_port()}"
    config = workdir / "rollout.yaml"
    config.write_text(yaml.safe_dump(rollout_document(router, listen, apps, stateFile="state/shop.json")))
    state_file = workdir / "state" / "shop.json"
    daemon = Daemon(config)
    problems: list[str] = []
    marks: list[float] = []  # kills, and the moments the daemon was ready again
    promoted_at: float | None = None
    traffic = Traffic(f"http://{listen}/")
    await daemon.start()
    try:
        async with traffic.running():
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.05, max_delay))
                if promoted_at is None and promoted(read_state(state_file)):
                    promoted_at = time.monotonic()
                await daemon.kill_hard()
                marks.append(time.monotonic())
                # Now and then from another directory: relative paths are the rollout file's.
                started = daemon.spawn(elsewhere if rng.random() < 0.3 else None)
                await started
                if rng.random() < 0.5:  # else the next kill may hit the startup
                    try:
                        await daemon.wait_ready()
                    except Exception as error:
                        problems.append(f"restart {daemon.runs} never got ready: {error}")
                        break
                    marks.append(time.monotonic())
            if not problems:
                try:
                    await daemon.wait_ready()
                    marks.append(time.monotonic())
                except Exception as error:
                    problems.append(f"the last restart never got ready: {error}")
            deadline = time.monotonic() + 60
            while not problems and not promoted(read_state(state_file)):
                if time.monotonic() > deadline:
                    problems.append(f"never promoted: {(read_state(state_file) or {}).get('rollout')}")
                    break
                await asyncio.sleep(0.05)
            if promoted_at is None:
                promoted_at = time.monotonic()
            await asyncio.sleep(0.5)  # traffic after the promotion
    finally:
        code = await daemon.terminate()
        if code not in (0, None, -9):
            problems.append(f"the daemon exited with {code}: {daemon.output()}")
    document = read_state(state_file) or {}
    outcomes = [r.get("outcome") for r in (document.get("rollout") or {}).get("history") or []]
    if outcomes != ["Promoted"]:
        problems.append(f"history {outcomes}, expected one promotion")
    if (document.get("workloads") or {}).get("stableEndpoints") != [apps.canary]:
        problems.append(f"stable endpoints {document.get('workloads')}")
    hit = traffic.first_header_route_hit()
    misrouted = 0
    requests: Counter[str] = Counter()
    around: Counter[str] = Counter()
    for answer in traffic.answers:
        label = f"{'header' if answer.header else 'plain'}:{answer.version}"
        requests[label] += 1
        if any(abs(answer.sent - mark) <= 1.0 for mark in marks):
            around[label] += 1
        if answer.version == "stable" and (
            (answer.header and hit is not None and answer.sent > hit) or answer.sent > promoted_at
        ):
            misrouted += 1
    if hit is None:
        problems.append("no header-routed request ever reached the canary")
    if misrouted:
        problems.append(f"{misrouted} misrouted requests")
    failed = sum(1 for a in traffic.answers if a.version == "error")
    return RunOutcome(
        router=router,
        kills=kills,
        survived=not problems,
        misrouted=misrouted,
        failed_requests=failed,
        requests=requests,
        around_restarts=around,
        problems=problems,
    )
