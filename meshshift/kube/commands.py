"""`meshshift.io/command` on a Deployment: a human's promote / abort / retry, acted on exactly once.

The value is the command, optionally followed by `/` or `:` and a token that makes it
unique (`promote`, `promote-full/2026-11-26T10:00:00Z`, `abort:1`). The whole value is
the command's id: writing the same value again does nothing; a new token is a new
command. The engine remembers handled ids in the rollout state (saved before it acts),
so a restarted daemon never acts twice; what it did is recorded in the state ConfigMap
(`data["commands.json"]`: id, command, applied, message, time) and as an Event.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from typing import Any, Protocol

import structlog

from meshshift.engine.actions import EventType, RecordEvent
from meshshift.engine.machine import Command, CommandKind, CommandOutcome
from meshshift.kube.tasks import cancel_and_wait
from meshshift.ports import EventSink

log = structlog.get_logger(__name__)

COMMAND_ANNOTATION = "meshshift.io/command"
_SEPARATOR = re.compile(r"[/:]")


class CommandTarget(Protocol):
    def submit(self, command: Command) -> asyncio.Future[CommandOutcome]: ...


class CommandRecords(Protocol):
    async def read_commands(self) -> list[dict[str, Any]]: ...

    async def record_command(self, record: dict[str, Any]) -> None: ...


def parse_command(value: str) -> Command | None:
    """The command an annotation value asks for; None when it names no command."""
    kind = _SEPARATOR.split(value.strip(), maxsplit=1)[0].strip()
    try:
        return Command(CommandKind(kind), value)
    except ValueError:
        return None


def accepts(value: str) -> bool:
    return parse_command(value) is not None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CommandTracker:
    """Hands the annotation's command to one rollout's controller once, and records the outcome."""

    def __init__(
        self, records: CommandRecords, target: CommandTarget, events: EventSink, *, rollout: str
    ) -> None:
        self.records = records
        self.target = target
        self.events = events
        self.done: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.log = log.bind(rollout=rollout)

    def offer(self, value: str | None) -> None:
        """The annotation's current value (None: no annotation)."""
        if not value or value in self.done or value in self._tasks:
            return
        task = asyncio.create_task(self._handle(value), name=f"command:{value}")
        self._tasks[value] = task
        task.add_done_callback(lambda _t: self._tasks.pop(value, None))

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks.values()))

    async def _handle(self, value: str) -> None:
        try:
            if any(r.get("id") == value for r in await self.records.read_commands()):
                self.done.add(value)
                return
            command = parse_command(value)
            if command is None:
                message = (
                    f'"{value}" is not a command: write promote, promote-full, abort or retry, '
                    "optionally followed by /TOKEN or :TOKEN to make it unique"
                )
                await self.events.record(RecordEvent(EventType.WARNING, "CommandIgnored", message))
                await self._record(value, None, False, message)
                return
            outcome = await self._submit(command)
            if outcome is None:
                return  # the controller stopped first; offered again when it runs
            await self._record(value, command.kind.value, outcome.applied, outcome.message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # retried at the next offer
            self.log.warning("command not recorded; will retry", command=value, error=str(error))

    async def _submit(self, command: Command) -> CommandOutcome | None:
        future = self.target.submit(command)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None

    async def _record(self, value: str, kind: str | None, applied: bool, message: str) -> None:
        record = {"id": value, "command": kind, "applied": applied, "message": message, "at": _now()}
        await self.records.record_command(record)
        self.done.add(value)
        self.log.info("command handled", command=value, applied=applied, message=message)
