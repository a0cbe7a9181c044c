"""What the daemon's HTTP listener does against slow, greedy and rebinding clients.

- **Request heads have a deadline.** A connection must deliver a complete request head
  within HEAD_TIMEOUT (10 s) of opening, and within HEAD_TIMEOUT of its previous answer
  (which is also the keep-alive timeout); a client trickling one header line every few
  seconds (slowloris) is cut off then. A response being streamed (`?watch=true`) has no
  deadline: the clock only runs while the server waits for the client.
- **Request bodies have a deadline.** A body (no endpoint needs one) must arrive within
  BODY_TIMEOUT (10 s); it is read, up to aiohttp's 1 MiB limit, before the handler runs.
- **Connections are counted.** At most MAX_CONNECTIONS (512) at once, and at most
  MAX_PER_PEER (128) from one address; past that a connection gets a `503` and is closed,
  before any of its bytes are parsed, so one client cannot starve the others or the fds.
- **Host names are checked (DNS rebinding).** A page on an attacker's domain that
  re-resolves to this daemon's address would read the API from a victim's browser. Such a
  request carries the attacker's name in `Host`, so `Host` must be an IP address, a name
  nobody can register on the internet (`localhost`, a single label such as `meshshift`,
  `*.svc`, `*.cluster.local`, `*.local`, `*.internal`, `*.localdomain`, `*.home.arpa`), or
  one of MESHSHIFT_ALLOWED_HOSTS (`--allowed-hosts`, comma-separated, `*` for any); else
  `421 Misdirected Request`. A request with the daemon's bearer token passes anyway: a
  rebinding page cannot know it. The dashboard on `localhost` or `127.0.0.1` works as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
MAX_PER_PEER = 128
# Suffixes no one can register as a public domain, so no rebinding page can be served from them.
PRIVATE_SUFFIXES = (
    ".localhost",
    ".svc",
    ".cluster.local",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
)

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 21\r\n\r\ntoo many connections\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """Counts the listener's connections and runs their request-head deadlines."""

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_per_peer: int = MAX_PER_PEER,
        head_timeout: float = HEAD_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self.per_peer: Counter[str] = Counter()
        self.refused = 0
        self.timed_out = 0

    def protocol_factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (`runner.server`) for `loop.create_server`."""
        return lambda: _GuardedProtocol(self, inner())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The head is in: stop its clock; read the body under its own; restart the clock after."""
        connection = self.open.get(request.transport) if request.transport is not None else None
        if connection is not None:
            connection.busy()
        try:
            if request.body_exists:
                try:
                    async with asyncio.timeout(self.body_timeout):
                        await request.read()
                except TimeoutError:
                    return web.Response(
                        status=408, text="request body too slow\n", headers={"Connection": "close"}
                    )
            return await handler(request)
        finally:
            if connection is not None:
                connection.idle()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind a count and a deadline; everything else passes through."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.refused = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not registered as asyncio.Transport subclasses).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        guard = self.guard
        if len(guard.open) >= guard.max_connections or guard.per_peer[self.peer] >= guard.max_per_peer:
            self.refused = True
            guard.refused += 1
            if guard.refused == 1 or guard.refused % 100 == 0:
                log.warning("refusing connections: too many", peer=self.peer, refused=guard.refused)
            self.transport.write(_REFUSAL)
            self.transport.close()
            return
        guard.open[transport] = self
        guard.per_peer[self.peer] += 1
        self.idle()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._disarm()
        guard = self.guard
        if self.transport is not None:
            guard.open.pop(self.transport, None)
        guard.per_peer[self.peer] -= 1
        if guard.per_peer[self.peer] <= 0:
            del guard.per_peer[self.peer]
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # --- the request-head deadline ----------------------------------------------------

    def busy(self) -> None:
        self._disarm()

    def idle(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.guard.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        self.guard.timed_out += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


# --- host names ------------------------------------------------------------------------


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    """True when `Host` names this daemon in a way a rebinding page cannot (see the module doc)."""
    names = {name.lower().rstrip(".") for name in allowed}
    if "*" in names:
        return True
    host = _host_part(host_header or "")
    if not host:
        return False  # HTTP/1.1 requires Host; a browser always sends one
    if host in names:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return host == "localhost" or "." not in host or host.endswith(PRIVATE_SUFFIXES)


def _host_part(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8090
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        header = header.rpartition(":")[0]
    return header.rstrip(".")


def host_check(allowed: Iterable[str], has_valid_token: Callable[[web.Request], bool]) -> Any:
    """A middleware answering 421 to a request whose Host is not ours (unless it has the token)."""
    names = tuple(allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz") or host_allowed(request.headers.get("Host"), names):
            return await handler(request)
        if has_valid_token(request):
            return await handler(request)
        log.warning("request for a host name that is not ours refused", host=request.headers.get("Host"))
        return web.Response(
            status=421,
            text=(
                f"this daemon does not answer for the host name {request.headers.get('Host', '')!r}; "
                "add it to MESHSHIFT_ALLOWED_HOSTS (or --allowed-hosts), or reach it by IP address\n"
            ),
        )

    return middleware


@contextlib.asynccontextmanager
async def guarded_listener(runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> Any:
    """Listen on host:port with `runner`'s protocol behind `guard`; yields the bound (host, port)."""
    loop = asyncio.get_running_loop()
    inner = runner.server
    assert inner is not None, "runner.setup() first"
    server = await loop.create_server(
        guard.protocol_factory(inner), host, port, reuse_address=True, backlog=128
    )
    try:
        sockname = server.sockets[0].getsockname()
        yield str(sockname[0]), int(sockname[1])
    finally:
        server.close()
