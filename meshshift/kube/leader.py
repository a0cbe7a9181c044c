"""Leader election on a `coordination.k8s.io/v1` Lease, after client-go's leaderelection.

Every candidate reads the Lease each `retry_period`. The holder renews it (a merge patch
of `renewTime` carrying the resourceVersion read, so two writers cannot both win); a
candidate takes it over when nobody holds it or when its record has not changed for
`lease_duration` (minus one retry period, see `_grace`) by the candidate's own clock:
clocks of different machines are never compared. A holder that cannot renew for
`renew_deadline` (shorter than the lease duration) stops leading before anyone else
may start. A holder that stops cleanly releases the Lease, so a standby takes over at
its next try instead of waiting out the lease duration.

A holder renews with one request: a merge patch carrying the resourceVersion of its own last
write (a 409 means someone else wrote: it reads again). Each try is bounded by what is left
of the renew deadline, and `holds()` answers, from any thread, whether writes are still
allowed: the Lease was renewed less than `renew_deadline` ago, counted from when that
renewal was sent. `ElectionThread` runs the electors on a thread of their own, with their own
event loop and HTTP session (see there).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.kube.patches import with_resource_version
from meshshift.kube.resources import LEASES, JsonObject, KubeApi, KubeApiError, resource_version

log = structlog.get_logger(__name__)


def micro_time(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def for_duration(cls, lease_duration: float) -> LeaseTimings:
        """client-go's ratios (15 s / 10 s / 2 s), scaled to `lease_duration`."""
        return cls(lease_duration, lease_duration * 2 / 3, max(0.05, lease_duration * 2 / 15))


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        *,
        name: str,
        namespace: str,
        identity: str,
        timings: LeaseTimings,
        on_change: Callable[[bool], None],
        clock: Callable[[], float] = time.monotonic,
        may_acquire: Callable[[], bool] | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timings = timings
        self.on_change = on_change
        self.clock = clock
        # Asked before taking a free or expired Lease (sharding: only up to a fair share).
        self.may_acquire = may_acquire
        self.leading = False
        self.transitions = 0  # times this candidate became the leader
        self._observed: tuple[Any, ...] | None = None  # the lease record last seen
        self._observed_at = 0.0
        self._renewed_at = 0.0  # when the last successful acquire or renew was sent (leader only)
        self._expires_at: float | None = None  # when the lease seen last expires (standby only)
        self._lease: JsonObject | None = None  # the Lease as our last write left it (leader only)
        self.log = log.bind(lease=f"{namespace}/{name}", identity=identity)

    def holds(self) -> bool:
        """Whether this candidate may write now: it leads, and renewed within the renew deadline."""
        return self.leading and self.clock() - self._renewed_at < self.timings.renew_deadline

    async def run(self) -> None:
        """Try to lead forever; cancel to stop (then call `release`)."""
        while True:
            try:
                async with asyncio.timeout(self._try_budget()):
                    await self._try_once()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self._lease = None
                self.log.warning("lease update timed out")
            except Exception as error:
                self._lease = None
                self.log.warning("lease update failed", error=str(error))
            if self.leading and self.clock() - self._renewed_at >= self.timings.renew_deadline:
                self.log.warning("could not renew the lease in time; stepping down")
                self._set_leading(False)
            await asyncio.sleep(self._next_try_in())

    def _try_budget(self) -> float:
        """A leader's try ends at its renew deadline; a candidate's within one renew deadline."""
        if self.leading:
            return max(0.01, self._renewed_at + self.timings.renew_deadline - self.clock())
        return self.timings.renew_deadline

    def _next_try_in(self) -> float:
        """A standby wakes exactly when the lease it watches expires, else every retry period."""
        if self.leading or self._expires_at is None:
            return self.timings.retry_period
        return max(0.01, min(self.timings.retry_period, self._expires_at - self.clock() + 0.01))

    async def release(self) -> None:
        """Give the lease up (after this daemon stopped writing), so a standby takes over at once."""
        if not self.leading:
            return
        self._set_leading(False)
        try:
            lease = await self.api.get(LEASES, self.name, self.namespace)
            if lease is None or _holder(lease) != self.identity:
                return
            patch = {"spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro_time()}}
            await self.api.merge_patch(
                LEASES, self.name, with_resource_version(patch, resource_version(lease)), self.namespace
            )
            self.log.info("lease released")
        except KubeApiError as error:
            self.log.warning("could not release the lease; it expires on its own", error=str(error))

    # --- one try ----------------------------------------------------------------------

    async def _try_once(self) -> None:
        if self.leading and self._lease is not None:
            await self._write(self._lease, acquire=False)  # renew: one request
            return
        lease = await self.api.get(LEASES, self.name, self.namespace)
        now = self.clock()
        if lease is None:
            await self._create()
            return
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = _holder(lease)
        if holder == self.identity:
            await self._write(lease, acquire=False)
            return
        if self.leading:
            self.log.warning("the lease is held by someone else now", holder=holder)
            self._set_leading(False)
        self._expires_at = self._observed_at + self._grace(lease)
        if (not holder or now >= self._expires_at) and (self.may_acquire is None or self.may_acquire()):
            await self._write(lease, acquire=True)

    def _grace(self, lease: JsonObject) -> float:
        """How long after seeing a record change it counts as expired.

        The record was renewed at most one retry period before this candidate saw it, so
        waiting `lease duration - retry period` from then means a crashed holder is
        replaced within one lease duration of its last renewal; a live holder that could
        not renew has stepped down earlier, at its renew deadline.
        """
        duration = _duration(lease, self.timings.lease_duration)
        return max(self.timings.renew_deadline, duration - self.timings.retry_period)

    async def _create(self) -> None:
        if self.may_acquire is not None and not self.may_acquire():
            return
        sent = self.clock()
        now = micro_time()
        body: JsonObject = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": _seconds(self.timings.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self._lease = await self.api.create(LEASES, body, self.namespace)
        except KubeApiError as error:
            if error.conflict:
                return  # another candidate created it first
            raise
        self._renewed_at = sent
        self._set_leading(True)

    async def _write(self, lease: JsonObject, *, acquire: bool) -> None:
        sent = self.clock()
        now = micro_time()
        spec: JsonObject = {"renewTime": now, "leaseDurationSeconds": _seconds(self.timings.lease_duration)}
        if acquire:
            transitions = int((lease.get("spec") or {}).get("leaseTransitions") or 0)
            spec.update(holderIdentity=self.identity, acquireTime=now, leaseTransitions=transitions + 1)
        try:
            self._lease = await self.api.merge_patch(
                LEASES,
                self.name,
                with_resource_version({"spec": spec}, resource_version(lease)),
                self.namespace,
            )
        except KubeApiError as error:
            self._lease = None
            if error.conflict:
                return  # someone else wrote first: read again next time
            raise
        self._renewed_at = sent
        if acquire:
            self.log.info("lease acquired", previous=_holder(lease) or None)
        self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if not leading:
            self._lease = None
        if leading:
            self.transitions += 1
        self.log.info("leadership changed", leading=leading)
        self.on_change(leading)


def _holder(lease: JsonObject) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _record(lease: JsonObject) -> tuple[Any, ...]:
    spec = lease.get("spec") or {}
    return (
        spec.get("holderIdentity"),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        resource_version(lease),
    )


def _duration(lease: JsonObject, default: float) -> float:
    value = (lease.get("spec") or {}).get("leaseDurationSeconds")
    return float(value) if value else default


def _seconds(duration: float) -> int:
    return max(1, round(duration))
