"""What every test process shares: its children start with Ctrl-C as a terminal gives it, and
the tests marked `both_event_loops` run once on asyncio's loop and once on uvloop's.

A shell starts a background job (`make test &`, `nohup`) with SIGINT ignored, and an ignored
signal stays ignored across exec: every `meshshift` the tests spawned then ignored the Ctrl-C
they send it, and the watch tests hung (a clean-clone run launched that way failed twice on it;
its SigIgn showed SIGINT). A handled signal is reset to the default in the child, so the suite
handles SIGINT itself, as Python does when SIGINT is not ignored at start.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """`meshshift run` runs on uvloop (meshshift/runtime/lifecycle.py), the other tests on asyncio's
    own loop: the code that touches transports directly runs on both."""
    if item.get_closest_marker("both_event_loops") is None:
        return {"asyncio": asyncio.new_event_loop}  # one factory: the test's id stays as it was
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
