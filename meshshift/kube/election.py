"""Leader election on a thread of its own: its own event loop, its own HTTP session.

A thousand rollouts keep the daemon's event loop busy, and their requests fill its connection
pool and wait for its rate limiter. A Lease renewal queued behind them arrives late; under a
little more load the leader would step down in the middle of its work. So the electors (one
per Lease: the leader's, or one per shard) run on a separate thread, with their own event loop
and their own ApiClient (its own connection pool, no rate limiter, no retries: each try is
bounded by the renew deadline). Nothing the rollouts do delays a renewal by more than the
interpreter's thread switch interval.

Leadership changes reach the daemon on its own loop (`call_soon_threadsafe`); `holds(name)`
may be asked from any thread, and is what the daemon's writes are fenced with. The Lease
requests are counted in the daemon's KubeRequests, on its loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence

import structlog

from meshshift.kube.client import connect
from meshshift.kube.leader import LeaderElector, LeaseTimings
from meshshift.kube.resources import KubeApi, KubeRequests, RequestLabels
from meshshift.kube.tasks import cancel_and_wait
from meshshift.settings import DaemonSettings

log = structlog.get_logger(__name__)

LeaseChange = Callable[[str, bool], None]  # (Lease name, leading)


class _CountedOnLoop(KubeRequests):
    """Counts recorded on another thread land in the daemon's KubeRequests, on the daemon's loop."""

    def __init__(self, target: KubeRequests, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._target, self._loop = target, loop

    def record(self, labels: RequestLabels) -> None:
        with contextlib.suppress(RuntimeError):  # the daemon's loop closed: nobody reads them
            self._loop.call_soon_threadsafe(self._target.record, labels)


class ElectionThread:
    def __init__(
        self,
        settings: DaemonSettings,
        identity: str,
        *,
        namespace: str,
        leases: Sequence[str],
        timings: LeaseTimings,
        on_change: LeaseChange,
        requests: KubeRequests,
        request_timeout: float,
        may_acquire: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.namespace = namespace
        self.lease_names = tuple(leases)
        self.timings = timings
        self.on_change = on_change
        self.requests = requests
        self.request_timeout = request_timeout
        self.may_acquire = may_acquire
        self.electors: dict[str, LeaderElector] = {}
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._daemon_loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()

    # --- from the daemon's loop --------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread; returns once its client is connected (raises what stopped it)."""
        self._daemon_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="leader-election", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._started)

    def holds(self, name: str) -> bool:
        """Whether this daemon holds Lease `name` and renewed it within the renew deadline (any thread)."""
        elector = self.electors.get(name)
        return elector is not None and elector.holds()

    def held(self) -> set[str]:
        return {name for name in self.lease_names if self.holds(name)}

    async def release(self, name: str) -> None:
        """Give one Lease up now (its work stopped), so another replica takes it at its next try."""
        elector, loop = self.electors.get(name), self._thread_loop
        if elector is None or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(elector.release(), loop))

    async def stop(self) -> None:
        """Release every Lease held (the daemon stopped writing first) and end the thread."""
        loop, stopping, thread = self._thread_loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            await asyncio.to_thread(thread.join)

    # --- on the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._elect())
        except BaseException as error:
            if not self._started.done():
                self._started.set_exception(error)
            else:
                log.exception("leader election stopped")

    async def _elect(self) -> None:
        self._thread_loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        assert self._daemon_loop is not None
        async with connect(self.settings, self.identity) as client:
            api = KubeApi(
                client,
                request_timeout=self.request_timeout,
                retries=0,  # a try that fails is tried again a retry period later
                requests=_CountedOnLoop(self.requests, self._daemon_loop),
            )
            for name in self.lease_names:
                may_acquire = functools.partial(self.may_acquire, name) if self.may_acquire else None
                self.electors[name] = LeaderElector(
                    api,
                    name=name,
                    namespace=self.namespace,
                    identity=self.identity,
                    timings=self.timings,
                    on_change=functools.partial(self._changed, name),
                    may_acquire=may_acquire,
                )
            tasks = [asyncio.create_task(e.run(), name=f"lease:{n}") for n, e in self.electors.items()]
            self._started.set_result(None)
            try:
                await self._stopping.wait()
            finally:
                await cancel_and_wait(tasks)
                for elector in self.electors.values():
                    await elector.release()

    def _changed(self, name: str, leading: bool) -> None:
        assert self._daemon_loop is not None
        with contextlib.suppress(RuntimeError):  # the daemon's loop closed
            self._daemon_loop.call_soon_threadsafe(self.on_change, name, leading)
