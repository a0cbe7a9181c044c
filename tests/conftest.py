"""What every test process shares: its children start with Ctrl-C as a terminal gives it.

A shell starts a background job (`make test &`, `nohup`) with SIGINT ignored, and an ignored
signal stays ignored across exec: every `meshshift` the tests spawned then ignored the Ctrl-C
they send it, and the watch tests hung (a clean-clone run launched that way failed twice on it;
its SigIgn showed SIGINT). A handled signal is reset to the default in the child, so the suite
handles SIGINT itself, as Python does when SIGINT is not ignored at start.
"""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
