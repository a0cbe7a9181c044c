"""Event sinks: where the engine's RecordEvent actions go besides Kubernetes."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from meshshift.engine.actions import EventType, RecordEvent
from meshshift.ports import EventSink


class LogEvents:
    """Every event as a structured log line."""

    def __init__(self, **context: str) -> None:
        self.log = structlog.get_logger("meshshift.events").bind(**context)

    async def record(self, event: RecordEvent) -> None:
        emit = self.log.warning if event.type == EventType.WARNING else self.log.info
        emit(event.message, reason=event.reason, event_type=event.type.value)


class FanOutEvents:
    """Sends each event to every sink; one failing sink never stops the others."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)
        self.log = structlog.get_logger(__name__)

    async def record(self, event: RecordEvent) -> None:
        for sink in self.sinks:
            try:
                await sink.record(event)
            except Exception:
                self.log.exception("event sink failed", sink=type(sink).__name__, reason=event.reason)
