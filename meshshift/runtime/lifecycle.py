"""Running a daemon until SIGINT or SIGTERM, then stopping it cleanly, on its event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from meshshift.runtime.collector import tuned_collector
from meshshift.settings import EVENT_LOOPS

T = TypeVar("T")
log = structlog.get_logger("meshshift.lifecycle")


def event_loop_factory(name: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop `name` asks for, as (the name of the one given, its factory).

    uvloop (libuv's loop, as Node's) runs the daemon's many small requests for less CPU than
    asyncio's own: at 1,000 rollouts in `bench/scale.py`, about 7% fewer CPU-seconds. Where it
    is not installed (Windows has no wheel), asyncio's own loop is given instead.
    """
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop {name!r} is not one of {', '.join(EVENT_LOOPS)}")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def run_daemon(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """Run a daemon's `main` to its end on the event loop named `event_loop` (EVENT_LOOPS)."""
    given, factory = event_loop_factory(event_loop)
    if given != event_loop:
        log.info("event loop not installed; asyncio's own runs the daemon", asked=event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


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
