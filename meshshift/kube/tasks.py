"""Stopping asyncio tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]], *, every: float = 1.0) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any still runs.

    Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the
    awaited thing finishes (fixed in 3.12); a task caught that way would keep running.
    """
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=every)
        for task in pending:
            log.warning("task ignored its cancellation; cancelling again", task=task.get_name())
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task failed while stopping", task=task.get_name(), error=str(task.exception()))
