"""The event loop a daemon runs on (meshshift/runtime/lifecycle.py): uvloop's where installed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
import uvloop

from meshshift.runtime.lifecycle import event_loop_factory, run_daemon, run_until_stopped


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_the_daemon_runs_on_uvloop_when_asked() -> None:
    assert isinstance(run_daemon(running_loop(), "uvloop"), uvloop.Loop)


def test_the_daemon_runs_on_asyncios_own_loop_when_asked() -> None:
    loop = run_daemon(running_loop(), "asyncio")
    assert isinstance(loop, asyncio.BaseEventLoop)
    assert not isinstance(loop, uvloop.Loop)


def test_without_uvloop_installed_asyncios_own_loop_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    given, factory = event_loop_factory("uvloop")
    assert given == "asyncio"
    assert not isinstance(run_daemon(running_loop(), "uvloop"), uvloop.Loop)
    assert factory is asyncio.new_event_loop


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="event loop 'libev' is not one of uvloop, asyncio"):
        event_loop_factory("libev")


def test_the_daemon_gets_its_stop_signal_on_uvloop() -> None:
    # run_until_stopped's signal handlers, on uvloop's loop: SIGTERM ends `main` by cancelling it.
    cancelled = []

    async def main() -> None:
        try:
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    run_daemon(run_until_stopped(main()), "uvloop")
    assert cancelled == [True]
