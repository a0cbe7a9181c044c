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
- Each endpoint set may carry a `version` label (the file's `spec.stable.version`,
  `spec.canary.version`; the promoted one's is recorded with it): {{args.canary-hash}} and
  {{args.stable-hash}} are those labels when given.
- `undo` puts the previous endpoints back, as Argo's undo puts the previous pod template back:
  mid-rollout (or after an abort) the canary becomes the stable's endpoints again, which
  cancels the rollout; on the stable, the endpoints the last promotion replaced are rolled out
  (through the steps). It is recorded in the state file and holds until the file names other
  canary endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from meshshift.ports import WorkloadStatus
from meshshift.settings import split_host_port
from meshshift.spec.model import CanaryScale
from meshshift.standalone.state_file import (
    EndpointSet,
    RecordedWorkloads,
    StateFile,
    StateFileError,
    record_workloads,
    recorded_workloads,
)

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


def effective_canary(recorded: RecordedWorkloads, file_canary: EndpointSet) -> EndpointSet:
    """The canary endpoints in force: what an `undo` put in place of the file's, while the file
    still names the canary it replaced; the file's otherwise."""
    if recorded.undo_canary is not None and recorded.undo_file_canary == file_canary.endpoints:
        return recorded.undo_canary
    return file_canary


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
        stable_version: str | None = None,
        canary_version: str | None = None,
    ) -> None:
        self.state_file = state_file
        recorded = recorded_workloads(state_file)
        self.stable_recorded = recorded.stable is not None
        stable_set = recorded.stable or EndpointSet(tuple(stable), stable_version)
        self.stable, self.stable_version = stable_set.endpoints, stable_set.version
        self.previous_stable = recorded.previous_stable
        self.file_canary = EndpointSet(tuple(canary), canary_version)  # what the rollout file asks for
        self.undo_canary = (
            recorded.undo_canary if effective_canary(recorded, self.file_canary) != self.file_canary else None
        )
        in_force = self.undo_canary or self.file_canary
        self.canary, self.canary_version = in_force.endpoints, in_force.version
        self.routed_canary = self.canary  # what the router's canary upstream holds
        self.undo_dropped = False  # an undo gave way to new file endpoints; not yet in the state file
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

    def version_of(self, revision: str | None) -> str | None:
        """The `version` label of the endpoint set of `revision`, if it has one."""
        if revision == self.revision:
            return self.canary_version
        if revision == self.stable_revision:
            return self.stable_version
        return None

    def set_canary(self, endpoints: Sequence[str], version: str | None = None) -> None:
        """The rollout file names new canary endpoints: a new revision to roll out (an `undo`
        in force gives way to them)."""
        named = EndpointSet(tuple(endpoints), version)
        if named.endpoints != self.file_canary.endpoints and self.undo_canary is not None:
            self.undo_canary = None
            self.undo_dropped = True  # written at the next observe(): this is not a coroutine
        self.file_canary = named
        in_force = self.undo_canary or named
        if (in_force.endpoints, in_force.version) != (self.canary, self.canary_version):
            self.canary, self.canary_version = in_force.endpoints, in_force.version
            self.on_change()

    def _recorded(self, **changes: object) -> RecordedWorkloads:
        current = RecordedWorkloads(
            stable=EndpointSet(self.stable, self.stable_version) if self.stable_recorded else None,
            previous_stable=self.previous_stable,
            undo_file_canary=self.file_canary.endpoints if self.undo_canary else None,
            undo_canary=self.undo_canary,
        )
        return dataclasses.replace(current, **changes)  # type: ignore[arg-type]

    async def undo(self) -> tuple[bool, str]:
        """The previous endpoints back (see the module's docstring); recorded before it acts."""
        if self.canary != self.stable:
            target = EndpointSet(self.stable, self.stable_version)
            message = (
                f"the canary is the stable's endpoints {list(self.stable)} again: the rollout of "
                f"revision {self.revision} is cancelled"
            )
        elif self.previous_stable is not None and self.previous_stable.endpoints != self.stable:
            target = self.previous_stable
            message = (
                f"rolling out the previous endpoints {list(target.endpoints)} "
                f"(revision {endpoints_revision(target.endpoints)}) again"
            )
        else:
            return False, "nothing to undo: no endpoints before the stable's are recorded"
        recorded = self._recorded(undo_file_canary=self.file_canary.endpoints, undo_canary=target)
        try:
            await record_workloads(self.state_file, recorded)
        except StateFileError as error:
            return False, str(error)  # nothing done that could not be recorded
        self.undo_canary = target
        self.canary, self.canary_version = target.endpoints, target.version
        log.info("undo: the canary endpoints are put back", endpoints=list(target.endpoints))
        self.on_change()
        return True, message

    async def observe(self) -> WorkloadStatus:
        if self.undo_dropped:
            await record_workloads(self.state_file, self._recorded())  # a failure shows as a store error
            self.undo_dropped = False
        up = await accepting((*self.stable, *self.canary), self.probe_timeout)
        versions = {"stable": self.stable_version, "canary": self.canary_version}
        return WorkloadStatus(
            revision=self.revision,
            stable_revision=self.stable_revision,
            stable_ready=all(up[e] for e in self.stable),
            canary_ready=all(up[e] for e in self.canary),
            replicas=self._replicas(up),
            endpoints={"stable": self.stable, "canary": self.canary},
            versions={role: v for role, v in versions.items() if v is not None},
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
                promoted = EndpointSet(self.canary, self.canary_version)
                replaced = EndpointSet(self.stable, self.stable_version)
                # Recorded before the router is told: survives a crash.
                await record_workloads(
                    self.state_file, self._recorded(stable=promoted, previous_stable=replaced)
                )
                self.stable_recorded, self.previous_stable = True, replaced
                log.info("promoted: the canary endpoints are the new stable", endpoints=list(self.canary))
            self.stable, self.stable_version = self.canary, self.canary_version
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
