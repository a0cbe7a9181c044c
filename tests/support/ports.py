"""Addresses for tests that need one nothing answers at."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """`127.0.0.1:PORT` that refuses connections for as long as the block runs.

    The port is bound and never listened on: a merely free port (free_port) can be taken by any
    server the test starts afterwards, which then answers where nothing should.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"
