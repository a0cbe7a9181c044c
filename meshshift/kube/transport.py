"""The API server's requests on keep-alive HTTP/1.1 connections of our own, parsed by httptools.

At a thousand rollouts a step is thousands of small requests, and aiohttp's client spends
about 0.2 CPU-ms on each (its request and response objects, a timer context, a task, header
multidicts; `bench/http_floor.py` measures it): more than meshshift's own work. A plain
request here is one write of prepared bytes and a callback parser (llhttp, as Node's),
about half of that with KubeApi on top (0.20 against 0.35 CPU-ms there). `LeanRESTClient` takes
the ApiClient's place of its REST client:
JSON requests without a proxy go this way; watches (streamed), proxied and form requests
still go through kubernetes-asyncio's own aiohttp client, unchanged. Authentication stays
the ApiClient's (its headers, token refresh included), TLS follows its configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import aiohttp
import httptools
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTClientObject

from meshshift.kube import wire
from meshshift.ports import ON_DEADLINE

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SWEEP_SECONDS = 0.1  # how late past its deadline a request may be noticed
_FIELD_BLOCKS_KEPT = 64


def ssl_context_for(configuration: Configuration) -> ssl.SSLContext:
    """The TLS settings kubernetes-asyncio's REST client applies, from the same configuration."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


class Answer:
    """A whole answer: what kubernetes-asyncio's RESTResponse offers its callers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.data = data

    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._answer: asyncio.Future[Answer] | None = None
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_connection's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(aiohttp.ClientPayloadError(f"the API server's answer is not HTTP: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(aiohttp.ServerDisconnectedError(str(exc) if exc else None))

    # --- httptools callbacks --------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self._reason, self._headers, b"".join(self._body))
        if not self.parser.should_keep_alive():
            self.close()
        self._reason, self._headers, self._body = "", {}, []
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    # --- ours -----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._answer

    def expire(self) -> None:
        """The answer is late: this connection is dropped (a half-read answer cannot be resumed)."""
        self._fail(TimeoutError("no answer from the API server in time"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)


class KubeTransport:
    """Requests to one API server, each on a free keep-alive connection (at most `limit` open)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None = None,
        limit: int = 100,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.limit = max(1, limit)
        self.authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._idle: list[_Connection] = []
        self._open = 0
        self._deadlines: dict[_Connection | asyncio.Future[Any], float] = {}  # swept by _sweep
        self._sweeper: asyncio.TimerHandle | None = None
        self._field_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._urgent: deque[asyncio.Future[_Connection | None]] = deque()  # on a deadline: served first
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    @classmethod
    def for_server(cls, configuration: Configuration) -> KubeTransport | None:
        """A transport for the configuration's server; None when the URL is not plain http(s)."""
        parts = urlsplit(str(configuration.host))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            return None
        https = parts.scheme == "https"
        return cls(
            parts.hostname,
            parts.port or (443 if https else 80),
            ssl_context=ssl_context_for(configuration) if https else None,
            server_hostname=(configuration.tls_server_name or None) if https else None,
            limit=int(configuration.connection_pool_maxsize or 100),
        )

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, within: float | None
    ) -> Answer:
        """Send one request (`target`: path and query) and read its whole answer, all `within` seconds.

        The deadline is kept to within SWEEP_SECONDS: one sweep for all the requests in flight,
        not a timer each (at a thousand rollouts the timers' heap was a tenth of a request's cost).
        """
        if "\r" in target or "\n" in target:
            raise ValueError(f"a line break in the request's target or headers: {method} {target!r}")
        fields = self._fields(headers)
        if body is not None or method in _BODY_METHODS:
            fields += b"Content-Length: %d\r\n" % len(body or b"")
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode(), target.encode(), fields)
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        connection = await self._acquire(deadline, ON_DEADLINE.get())
        self._watch(connection, deadline)
        sent = connection.send(head + body if body else head)
        try:
            return await sent
        finally:
            self._deadlines.pop(connection, None)
            if sent.cancelled():  # its answer may still come: it must not reach the next request
                connection.close()
            self._release(connection)

    def _fields(self, headers: Mapping[str, str]) -> bytes:
        """The header lines, Host first; worked out once per distinct set of headers."""
        key = tuple(headers.items())
        fields = self._field_blocks.get(key)
        if fields is None:
            lines = [f"Host: {self.authority}", *(f"{name}: {value}" for name, value in key)]
            if any("\r" in line or "\n" in line for line in lines):
                # A line break inside a header would start another header (or request).
                raise ValueError(f"a line break in the request's target or headers: {list(headers)}")
            fields = "".join(line + "\r\n" for line in lines).encode()  # as aiohttp writes them: UTF-8
            if len(self._field_blocks) >= _FIELD_BLOCKS_KEPT:
                self._field_blocks.clear()  # a rotating token makes new ones; the old are no use
            self._field_blocks[key] = fields
        return fields

    def _watch(self, what: _Connection | asyncio.Future[Any], deadline: float | None) -> None:
        """Expire `what` (a connection in use, a request waiting for one) at `deadline`."""
        if deadline is None:
            return
        self._deadlines[what] = deadline
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for what, deadline in list(self._deadlines.items()):
            if deadline > now:
                continue
            del self._deadlines[what]
            if isinstance(what, _Connection):
                what.expire()
            elif not what.done():
                what.set_exception(TimeoutError("no connection to the API server in time"))
        if self._deadlines:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _acquire(self, deadline: float | None, urgent: bool) -> _Connection:
        """An idle connection, else a new one while fewer than `limit` are open, else the next freed.

        A freed connection (or its slot) is handed to the next waiter, those on a deadline
        (ON_DEADLINE) first, and kept idle only when nobody waits: so a connection is idle only
        while nobody waits, and a request that arrives never takes one past a waiter.
        """
        connection = self._take_idle()
        if connection is not None:
            return connection
        if self._closed:
            raise aiohttp.ClientConnectionError("the API client is closed")
        if self._open < self.limit:
            self._open += 1
            return await self._connect(deadline)
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._waiting
        queue.append(waiter)
        self._watch(waiter, deadline)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._pass_on(waiter.result())  # handed its turn as it was cancelled: it goes on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise
        finally:
            self._deadlines.pop(waiter, None)
        if handed is not None:
            return handed
        return await self._connect(deadline)  # a slot was freed (and counted) for this one

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open -= 1
        return None

    async def _connect(self, deadline: float | None) -> _Connection:
        """A new connection, in a slot already counted in `_open`."""
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname or (self.host if self.ssl_context else None),
                )
        except BaseException as error:
            self._pass_on(None)
            if isinstance(error, OSError):
                raise aiohttp.ClientConnectionError(f"cannot connect to the API server: {error}") from error
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.closed or self._closed:
            connection.close()
            self._pass_on(None)
        else:
            self._pass_on(connection)

    def _pass_on(self, connection: _Connection | None) -> None:
        """Hand a connection (None: its slot, now free) to the next waiter, else keep it idle."""
        for queue in (self._urgent, self._waiting):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(connection)  # None: the slot stays counted, for the waiter
                    return
        if connection is None:
            self._open -= 1
        else:
            self._idle.append(connection)


def _verb(method: str) -> Callable[..., Awaitable[Any]]:
    """RESTClientObject's method named `method`: LeanRESTClient.request with that verb."""

    async def send(self: LeanRESTClient, url: str, **options: Any) -> Any:
        return await self.request(method, url, **options)

    send.__name__ = send.__qualname__ = method
    return send


class LeanRESTClient:
    """The ApiClient's REST client: plain JSON requests on a KubeTransport, the others on `fallback`."""

    def __init__(self, fallback: RESTClientObject, transport: KubeTransport, server: str) -> None:
        self.fallback = fallback
        self.transport = transport
        self.server = server.rstrip("/")

    # ApiClient.call_api sends through these (kubernetes-asyncio's names), KubeApi through
    # request(): both take the same way.
    GET = _verb("GET")
    HEAD = _verb("HEAD")
    OPTIONS = _verb("OPTIONS")
    POST = _verb("POST")
    PUT = _verb("PUT")
    PATCH = _verb("PATCH")
    DELETE = _verb("DELETE")

    async def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        method = method.upper()
        headers = dict(headers or {})
        content_type = headers.setdefault("Content-Type", "application/json")
        plain = (
            _preload_content
            and method != "HEAD"  # no body follows its Content-Length: the parser would wait
            and not post_params
            and url.startswith(self.server)
            and url[len(self.server) : len(self.server) + 1] in ("", "/", "?")  # not http://h:10 for h:1
            and (_request_timeout is None or isinstance(_request_timeout, int | float))
            and (method not in _BODY_METHODS or "json" in content_type.lower())
        )
        if not plain:  # streamed (watches), forms, odd timeouts: kubernetes-asyncio's way
            return await self.fallback.request(
                method,
                url,
                query_params=query_params,
                headers=headers,
                body=body,
                post_params=post_params,
                _preload_content=_preload_content,
                _request_timeout=_request_timeout,
            )
        target = url[len(self.server) :] or "/"
        if query_params:
            target += "?" + urlencode(query_params)
        data = None
        if method in _BODY_METHODS and body is not None:
            data = body if isinstance(body, bytes) else wire.dumps(body)
        answer = await self.transport.request(
            method, target, headers, data, float(_request_timeout) if _request_timeout else None
        )
        if not 200 <= answer.status <= 299:
            raise ApiException(http_resp=cast(aiohttp.ClientResponse, answer))  # it reads what Answer has
        return answer

    async def close(self) -> None:
        await self.transport.close()
        await self.fallback.close()
