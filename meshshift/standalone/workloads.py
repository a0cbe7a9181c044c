"""The Workloads port for endpoint sets: what runs where, outside Kubernetes.

- The revision the user asks for is an identifier of the canary endpoint set (from the
  rollout file); the stable revision identifies the stable endpoint set.
- The stable endpoints are the file's `spec.stable` until a promotion: then the canary's
  endpoints become the stable upstream and are recorded in the state file, which wins
  over `spec.stable` from then on (so a restart does not undo a promotion).
- The canary upstream of the router only changes when the engine scales the canary up
  (the start of a rollout, after its weight went back to 0), so a new canary in the file
  never receives the weight of the rollout it supersedes.
- Ready means every endpoint of the set accepts a TCP connection.
- Replicas (`rollout_info_replicas_*`, as Argo counts a Rollout's pods) are endpoints: desired
  is the stable set's size; the endpoints serving are the stable's and, while the engine has
  the canary scaled up, the canary's; available are those of them that accept a connection,
  unavailable the others; updated are the serving endpoints of the newest revision.
- The preview listener, if any, follows the canary's scale: it reaches the canary endpoints
  while the engine has them scaled up (a new revision is up), the stable otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from meshshift.ports import WorkloadStatus
from meshshift.settings import split_host_port
from meshshift.spec.model import CanaryScale
from meshshift.standalone.state_file import StateFile, record_stable, recorded_stable

log = structlog.get_logger(__name__)

UpstreamsCallback = Callable[[tuple[str, ...], tuple[str, ...]], Awaitable[None]]
PreviewCallback = Callable[[bool], Awaitable[None]]


async def endpoint_accepts(endpoint: str, within: float = 1.0) -> bool:
    host, port = split_host_port(endpoint)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def accepting(endpoints: Sequence[str], within: float = 1.0) -> dict[str, bool]:
    """Each distinct endpoint, and whether it accepts a TCP connection now."""
    unique = list(dict.fromkeys(endpoints))
    results = await asyncio.gather(*(endpoint_accepts(e, within) for e in unique))
    return dict(zip(unique, results, strict=True))


def endpoints_revision(endpoints: Sequence[str]) -> str:
    """A stable identifier of an endpoint set: order and duplicates do not matter."""
    digest = hashlib.sha256("\n".join(sorted(set(endpoints))).encode()).hexdigest()
    return f"ep-{digest[:10]}"


class EndpointWorkloads:
    def __init__(
        self,
        state_file: StateFile,
        *,
        stable: Sequence[str],
        canary: Sequence[str],
        set_upstreams: UpstreamsCallback,
        set_preview: PreviewCallback | None = None,
        probe_timeout: float = 1.0,
    ) -> None:
        self.state_file = state_file
        self.stable = recorded_stable(state_file) or tuple(stable)
        self.canary = tuple(canary)  # what the rollout file asks for
        self.routed_canary = self.canary  # what the router's canary upstream holds
        self.set_upstreams = set_upstreams
        self.set_preview = set_preview
        self.canary_up = False  # the engine has the canary scaled up: its endpoints serve
        self.probe_timeout = probe_timeout
        # Called when what observe() reports changed by our own hand (a promotion, a new
        # canary): the controller must reconcile, as an informer would make it in Kubernetes.
        self.on_change: Callable[[], None] = lambda: None

    @property
    def revision(self) -> str:
        return endpoints_revision(self.canary)

    @property
    def stable_revision(self) -> str:
        return endpoints_revision(self.stable)

    def set_canary(self, endpoints: Sequence[str]) -> None:
        """The rollout file names new canary endpoints: a new revision to roll out."""
        if tuple(endpoints) != self.canary:
            self.canary = tuple(endpoints)
            self.on_change()

    async def observe(self) -> WorkloadStatus:
        up = await accepting((*self.stable, *self.canary), self.probe_timeout)
        return WorkloadStatus(
            revision=self.revision,
            stable_revision=self.stable_revision,
            stable_ready=all(up[e] for e in self.stable),
            canary_ready=all(up[e] for e in self.canary),
            replicas=self._replicas(up),
        )

    def _replicas(self, up: dict[str, bool]) -> dict[str, int]:
        newest = set(self.canary)
        serving = set(self.stable) | (newest if self.canary_up else set())
        available = sum(1 for endpoint in serving if up.get(endpoint))
        return {
            "desired": len(set(self.stable)),
            "updated": len(serving & newest),
            "available": available,
            "unavailable": len(serving) - available,
        }

    async def promote(self, revision: str) -> None:
        """The endpoints of `revision` become the stable upstream: recorded first, then routed."""
        if revision == self.revision:
            if self.stable != self.canary:
                await record_stable(self.state_file, self.canary)  # before the router: survives a crash
                log.info("promoted: the canary endpoints are the new stable", endpoints=list(self.canary))
            self.stable = self.canary
        elif revision != self.stable_revision:
            raise RuntimeError(
                f"cannot promote revision {revision}: the rollout file now names canary endpoints "
                f"{list(self.canary)} (revision {self.revision})"
            )
        self.routed_canary = self.canary
        await self.set_upstreams(self.stable, self.routed_canary)
        self.on_change()

    async def scale_canary(self, scale: CanaryScale, traffic_weight: int) -> None:
        """Endpoint sets have no replicas; scaling up is when the router picks up a new canary."""
        up = scale.replicas_for(100, traffic_weight) > 0
        if up != self.canary_up:
            self.canary_up = up
            self.on_change()  # the replica counts changed, as an informer would tell
        if up and self.routed_canary != self.canary:
            self.routed_canary = self.canary
            await self.set_upstreams(self.stable, self.routed_canary)
        if self.set_preview is not None:
            await self.set_preview(up)
