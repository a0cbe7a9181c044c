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

Sharding (`--shards K`): one elector per shard Lease, and a membership so that replicas share
the shards. Each replica beats in the Lease `meshshift-members`: every retry period it merge-
patches one annotation of its own (`member.meshshift.io/<hash of its identity>`) with a counter;
the answer carries everybody's beats. A member whose beat has not moved for a lease duration
(by this replica's clock, as for Leases) is gone. With M members alive, a replica takes a free
or expired shard only while it holds fewer than ceil(K / M), and gives one back (its rollouts
stopped first, then the Lease released) while it holds more. The membership only balances:
that a shard is driven by one replica at a time is the shard Lease's doing alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence

import structlog

from meshshift.kube.client import connect
from meshshift.kube.leader import LeaderElector, LeaseTimings
from meshshift.kube.resources import LEASES, JsonObject, KubeApi, KubeApiError, KubeRequests, RequestLabels
from meshshift.kube.tasks import cancel_and_wait
from meshshift.settings import DaemonSettings

log = structlog.get_logger(__name__)

LeaseChange = Callable[[str, bool], None]  # (Lease name, leading)
MEMBERS_LEASE = "meshshift-members"
MEMBER_PREFIX = "member.meshshift.io/"


def member_key(identity: str) -> str:
    """An annotation key of one replica (identities may be longer than a key's 63 characters)."""
    return MEMBER_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]


class Membership:
    """The replicas alive, from their beats in one Lease's annotations (see the module's notes)."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        identity: str,
        timings: LeaseTimings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self.identity, self.timings, self.clock = (
            api,
            namespace,
            identity,
            timings,
            clock,
        )
        self.key = member_key(identity)
        self.beats = 0
        self._seen: dict[str, tuple[str, float]] = {}  # key -> (its value, when it last changed)
        self.log = log.bind(lease=f"{namespace}/{MEMBERS_LEASE}", identity=identity)

    def alive(self) -> int:
        """How many replicas beat within one lease duration (this one included)."""
        now = self.clock()
        grace = self.timings.lease_duration - self.timings.retry_period
        others = sum(1 for key, (_, at) in self._seen.items() if key != self.key and now - at < grace)
        return others + 1

    async def beat(self) -> None:
        self.beats += 1
        patch = {"metadata": {"annotations": {self.key: f"{self.identity} {self.beats}"}}}
        try:
            lease = await self.api.merge_patch(LEASES, MEMBERS_LEASE, patch, self.namespace)
        except KubeApiError as error:
            if not error.not_found:
                raise
            body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                    "metadata": {"name": MEMBERS_LEASE, "namespace": self.namespace}, "spec": {}}  # fmt: skip
            try:
                await self.api.create(LEASES, body, self.namespace)
            except KubeApiError as created:
                if not created.conflict:
                    raise
            lease = await self.api.merge_patch(LEASES, MEMBERS_LEASE, patch, self.namespace)
        self._observe(lease)

    def _observe(self, lease: JsonObject) -> None:
        now = self.clock()
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            if not str(key).startswith(MEMBER_PREFIX):
                continue
            seen = self._seen.get(key)
            if seen is None or seen[0] != value:
                self._seen[key] = (str(value), now)
        for key in [key for key in self._seen if key not in annotations]:
            del self._seen[key]

    async def leave(self) -> None:
        """Take this replica's beat out (a clean stop): the others rebalance at once."""
        patch = {"metadata": {"annotations": {self.key: None}}}
        try:
            await self.api.merge_patch(LEASES, MEMBERS_LEASE, patch, self.namespace)
        except KubeApiError as error:
            self.log.warning("could not leave the membership; it expires on its own", error=str(error))


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
        on_surplus: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.namespace = namespace
        self.lease_names = tuple(leases)
        self.timings = timings
        self.on_change = on_change
        self.requests = requests
        self.request_timeout = request_timeout
        # Sharding: the daemon is asked to stop a shard's rollouts, then `release` it.
        self.on_surplus = on_surplus
        self.sharded = len(self.lease_names) > 1
        self.membership: Membership | None = None
        self.giving_up: set[str] = set()  # asked of the daemon, not released yet
        self._reserved: set[str] = set()  # shards being acquired right now
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
            if self.sharded:
                self.membership = Membership(
                    api, namespace=self.namespace, identity=self.identity, timings=self.timings
                )
            for name in self.lease_names:
                may_acquire = functools.partial(self._may_acquire, name) if self.sharded else None
                self.electors[name] = LeaderElector(
                    api,
                    name=name,
                    namespace=self.namespace,
                    identity=self.identity,
                    timings=self.timings,
                    on_change=functools.partial(self._changed, name),
                    may_acquire=may_acquire,
                )
            tasks = []
            if self.membership is not None:
                tasks.append(asyncio.create_task(self._balance(self.membership), name="shard-balance"))
                await self._first_beats(self.membership)
            tasks += [asyncio.create_task(e.run(), name=f"lease:{n}") for n, e in self.electors.items()]
            self._started.set_result(None)
            try:
                await self._stopping.wait()
            finally:
                await cancel_and_wait(tasks)
                for elector in self.electors.values():
                    await elector.release()
                if self.membership is not None:
                    await self.membership.leave()

    # --- sharding ------------------------------------------------------------------------------

    def fair_share(self) -> int:
        alive = self.membership.alive() if self.membership is not None else 1
        return math.ceil(len(self.lease_names) / max(1, alive))

    def _may_acquire(self, name: str) -> bool:
        """Take one more shard only below the fair share (shards being taken count already)."""
        if name in self.giving_up:
            return False
        if len(self.held() | self._reserved) >= self.fair_share():
            return False
        self._reserved.add(name)
        return True

    async def _first_beats(self, membership: Membership) -> None:
        """Beat twice before taking any shard, so replicas starting together see each other."""
        for _ in range(2):
            with contextlib.suppress(KubeApiError, TimeoutError):
                async with asyncio.timeout(self.timings.renew_deadline):
                    await membership.beat()
            await asyncio.sleep(self.timings.retry_period)

    async def _balance(self, membership: Membership) -> None:
        """Beat every retry period; give a shard back while holding more than the fair share."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            self._reserved.clear()
            try:
                async with asyncio.timeout(self.timings.renew_deadline):
                    await membership.beat()
            except (KubeApiError, TimeoutError) as error:
                log.warning("membership beat failed", error=str(error))
                continue
            held = self.held()
            self.giving_up &= held
            keep = self.fair_share()
            if len(held) > keep and not self.giving_up and self.on_surplus is not None:
                name = max(held, key=self.lease_names.index)
                self.giving_up.add(name)
                log.info("giving a shard back", lease=name, held=len(held), fair_share=keep)
                self._tell_daemon(self.on_surplus, name)

    def _tell_daemon(self, callback: Callable[[str], None], name: str) -> None:
        assert self._daemon_loop is not None
        with contextlib.suppress(RuntimeError):
            self._daemon_loop.call_soon_threadsafe(callback, name)

    def _changed(self, name: str, leading: bool) -> None:
        assert self._daemon_loop is not None
        with contextlib.suppress(RuntimeError):  # the daemon's loop closed
            self._daemon_loop.call_soon_threadsafe(self.on_change, name, leading)
