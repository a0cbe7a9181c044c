"""Running a daemon until SIGINT or SIGTERM, then stopping it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from meshshift.runtime.collector import tuned_collector


async def run_until_stopped(main: Coroutine[Any, Any, Any]) -> None:
    """Run `main` until it returns or a stop signal arrives; then cancel it and wait.

    The garbage collector is tuned for a daemon's large cache meanwhile (runtime/collector.py).
    """
    with tuned_collector():
        await _run_until_stopped(main)


async def _run_until_stopped(main: Coroutine[Any, Any, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(main)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
