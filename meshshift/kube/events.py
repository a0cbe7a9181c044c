"""Kubernetes Events (core/v1) on the annotated Deployment: `kubectl describe deploy` shows the rollout.

Each event gets a name chosen here (`<deployment>.<hex>`), not by the server, so a create
retried after a lost answer meets 409 instead of writing the event twice.

A rollout's steps do not wait for its Events: with an `EventPoster` (the daemon has one), an
Event is queued and posted by a few senders of its own, in order within a rollout and one
rollout after the other, as client-go's EventBroadcaster posts Argo's and Flagger's Events off
their reconcile loop. At a thousand rollouts moving at once, the Events are half the requests;
the traffic writes and state writes of a step no longer queue behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from meshshift.engine.actions import EventType, RecordEvent
from meshshift.kube.resources import EVENTS, JsonObject, KubeApi, KubeApiError, requests_owned_by
from meshshift.ports import ON_DEADLINE
from meshshift.spec.errors import SpecIssue

log = structlog.get_logger(__name__)

COMPONENT = "meshshift"
MAX_MESSAGE = 1024
INVALID_SPEC_REASON = "InvalidSpec"
_sequence = itertools.count()
SENDERS = 4  # Events in flight at once, for all rollouts together
KEPT_PER_ROLLOUT = 100  # Events queued per rollout; beyond, the oldest is dropped (and counted)
Owner = tuple[str, str]  # (namespace, name) of the rollout


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_name(involved: str) -> str:
    # Unique per process and call; the pid and a counter keep two daemons apart.
    return f"{involved}.{time.time_ns():x}{os.getpid() % 4096:03x}{next(_sequence) % 4096:03x}"


def event_body(involved: Mapping[str, Any], event: RecordEvent, *, instance: str) -> JsonObject:
    meta = involved.get("metadata") or {}
    name = str(meta.get("name"))
    message = event.message if len(event.message) <= MAX_MESSAGE else event.message[: MAX_MESSAGE - 3] + "..."
    now = _now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": _event_name(name), "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion") or "apps/v1",
            "kind": involved.get("kind") or "Deployment",
            "name": name,
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": event.reason,
        "message": message,
        "type": event.type.value,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def invalid_spec_event(issues: Iterable[SpecIssue]) -> RecordEvent:
    """The Warning a Deployment gets for invalid annotations: the lint findings, one per line."""
    lines = [str(issue) for issue in issues]
    message = "invalid meshshift annotations; nothing was changed:\n" + "\n".join(lines)
    return RecordEvent(EventType.WARNING, INVALID_SPEC_REASON, message)


class EventPoster:
    """Posts Events in the background: in order within a rollout, rollouts served in turn."""

    def __init__(self, api: KubeApi, *, senders: int = SENDERS, kept: int = KEPT_PER_ROLLOUT) -> None:
        self.api = api
        self.senders = senders
        self.kept = kept
        self._queues: dict[Owner, deque[JsonObject]] = {}  # rollouts with Events queued or in flight
        self._ready: deque[Owner] = deque()  # of those, the ones with none in flight, in turn
        self._more = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever a rollout's queue empties
        self._tasks: list[asyncio.Task[None]] = []
        self.posted = 0
        self.dropped = 0
        self.failed = 0

    def record(self, owner: Owner, body: JsonObject) -> None:
        queue = self._queues.get(owner)
        if queue is None:
            queue = self._queues[owner] = deque()
            self._ready.append(owner)
        queue.append(body)
        if len(queue) > self.kept:
            queue.popleft()
            self.dropped += 1
            log.warning("event dropped: too many queued", rollout="/".join(owner), kept=self.kept)
        self._more.set()
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._send(), name=f"events:{index}") for index in range(self.senders)
            ]

    def queued(self, owner: Owner | None = None) -> int:
        if owner is not None:
            return len(self._queues.get(owner, ()))
        return sum(len(queue) for queue in self._queues.values())

    async def flush(self, owner: Owner | None, within: float) -> bool:
        """Wait (at most `within` seconds) until the rollout's Events (None: all) are out; True if so."""

        def pending() -> bool:
            return bool(self._queues) if owner is None else owner in self._queues

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while pending():
                    self._settled.clear()
                    await self._settled.wait()
        return not pending()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _send(self) -> None:
        ON_DEADLINE.set(False)  # started by whichever pass recorded first: Events are nobody's deadline
        while True:
            while not self._ready:
                self._more.clear()
                await self._more.wait()
            owner = self._ready.popleft()
            queue = self._queues[owner]
            body = queue[0]
            try:
                with requests_owned_by(*owner):  # counted, limited and fenced as the rollout's
                    await post_event(self.api, body)
                self.posted += 1
            except Exception as error:  # an Event that cannot be written is logged, never retried for ever
                self.failed += 1
                log.warning(
                    "event not recorded", rollout="/".join(owner), reason=body.get("reason"), error=str(error)
                )
            finally:
                if queue and queue[0] is body:
                    queue.popleft()
                if queue:
                    self._ready.append(owner)
                else:
                    del self._queues[owner]
                    self._settled.set()


async def post_event(api: KubeApi, body: JsonObject) -> None:
    try:
        await api.create(EVENTS, body, body["metadata"]["namespace"])
    except KubeApiError as error:
        if not error.conflict:  # 409: our own retried create landed already
            raise


class KubeEventSink:
    """The EventSink port: one core/v1 Event per RecordEvent, on the involved Deployment.

    With `poster`, the Event is queued there and `record` returns at once.
    """

    def __init__(
        self, api: KubeApi, *, involved: Mapping[str, Any], instance: str, poster: EventPoster | None = None
    ) -> None:
        self.api = api
        self.involved = involved
        self.instance = instance
        self.poster = poster

    async def record(self, event: RecordEvent) -> None:
        body = event_body(self.involved, event, instance=self.instance)
        if self.poster is not None:
            metadata = self.involved.get("metadata") or {}
            self.poster.record((str(metadata.get("namespace")), str(metadata.get("name"))), body)
            return
        await post_event(self.api, body)
