"""Kubernetes Events (core/v1) on the annotated Deployment: `kubectl describe deploy` shows the rollout.

Each event gets a name chosen here (`<deployment>.<hex>`), not by the server, so a create
retried after a lost answer meets 409 instead of writing the event twice.
"""

from __future__ import annotations

import datetime
import itertools
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from meshshift.engine.actions import EventType, RecordEvent
from meshshift.kube.resources import EVENTS, JsonObject, KubeApi, KubeApiError
from meshshift.spec.errors import SpecIssue

log = structlog.get_logger(__name__)

COMPONENT = "meshshift"
MAX_MESSAGE = 1024
INVALID_SPEC_REASON = "InvalidSpec"
_sequence = itertools.count()


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


class KubeEventSink:
    """The EventSink port: one core/v1 Event per RecordEvent, on the involved Deployment."""

    def __init__(self, api: KubeApi, *, involved: Mapping[str, Any], instance: str) -> None:
        self.api = api
        self.involved = involved
        self.instance = instance

    async def record(self, event: RecordEvent) -> None:
        body = event_body(self.involved, event, instance=self.instance)
        namespace = body["metadata"]["namespace"]
        try:
            await self.api.create(EVENTS, body, namespace)
        except KubeApiError as error:
            if not error.conflict:  # 409: our own retried create landed already
                raise
