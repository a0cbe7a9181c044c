"""Local HTTP stand-ins for the notification receivers: Slack, a generic webhook, and PagerDuty's
Events API v2 (which checks each event as PagerDuty documents it and answers as PagerDuty does).

They listen on 127.0.0.1 and a free port; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from meshshift.processes import free_port

# PagerDuty Events API v2 (developer.pagerduty.com/docs/events-api-v2/trigger-events): what a
# trigger must hold, and the values its fields may take.
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
PAGERDUTY_ACTIONS = ("trigger", "acknowledge", "resolve")
PAGERDUTY_SUMMARY_LIMIT = 1024
PAGERDUTY_DEDUP_KEY_LIMIT = 255


def pagerduty_problem(event: object) -> str | None:
    """Why the Events API would refuse `event` (HTTP 400), or None."""
    if not isinstance(event, Mapping):
        return "Event object is invalid"
    if not isinstance(event.get("routing_key"), str) or len(event["routing_key"]) != 32:
        return "routing_key: must be a 32-character integration key"
    action = event.get("event_action")
    if action not in PAGERDUTY_ACTIONS:
        return f"event_action: must be one of {PAGERDUTY_ACTIONS}"
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > PAGERDUTY_DEDUP_KEY_LIMIT):
        return "dedup_key: must be a string of at most 255 characters"
    if action != "trigger":
        return None if dedup else f"dedup_key: required for {action}"
    payload = event.get("payload")
    if not isinstance(payload, Mapping):
        return "payload: required for trigger"
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) > PAGERDUTY_SUMMARY_LIMIT:
        return "payload.summary: required, at most 1024 characters"
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        return "payload.source: required"
    if payload.get("severity") not in PAGERDUTY_SEVERITIES:
        return f"payload.severity: must be one of {PAGERDUTY_SEVERITIES}"
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, Mapping):
        return "payload.custom_details: must be an object"
    return None


@dataclass
class Receiver:
    """Records what it is sent. `statuses`: answers to give first, in order (then success);
    `hang`: while unset, every request is held."""

    pagerduty: bool = False  # answer as the Events API does, refusing invalid events
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang: asyncio.Event | None = None
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            return web.Response(status=status, text="no")
        try:
            body = await request.json()
        except (ConnectionError, ValueError):
            return web.Response(status=400, text="not JSON")
        if not self.pagerduty:
            self.received.append(body)
            return web.Response(text="ok")
        problem = pagerduty_problem(body)
        if problem is not None:
            self.refused.append((body, problem))
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid", "errors": [problem]},
                status=400,
            )
        self.received.append(body)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")},
            status=202,
        )

    def events(self) -> list[str]:
        """The webhook's event names, or PagerDuty's event actions."""
        return [payload["event_action" if self.pagerduty else "event"] for payload in self.received]


@contextlib.asynccontextmanager
async def receiver(**options: Any) -> AsyncIterator[Receiver]:
    stand_in = Receiver(**options)
    app = web.Application()
    app.router.add_post("/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    path = "/v2/enqueue" if stand_in.pagerduty else "/services/T000/B000/XXXX"
    stand_in.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield stand_in
    finally:
        if stand_in.hang is not None:
            stand_in.hang.set()
        await runner.cleanup()
