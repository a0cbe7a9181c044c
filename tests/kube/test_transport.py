"""meshshift's own HTTP/1.1 connections to the API server (meshshift/kube/transport.py), against
real aiohttp servers that answer as Go's net/http can: chunked, `Connection: close`, late, cut
off, over TLS; and through `connect` and KubeApi against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTClientObject

from meshshift.kube.client import connect
from meshshift.kube.resources import CONFIG_MAPS, KubeApi, KubeApiError
from meshshift.kube.transport import Answer, KubeTransport, LeanRESTClient
from meshshift.ports import ON_DEADLINE
from meshshift.processes import free_port
from meshshift.settings import DaemonSettings
from tests.kube.harness import KubeEnv

pytestmark = pytest.mark.both_event_loops  # `meshshift run` runs on uvloop
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """An aiohttp server on 127.0.0.1 that counts the connections its requests came on, and the
    requests it was handling at once (one per connection at a time)."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.port = free_port()
        self.transports: list[asyncio.BaseTransport] = []  # kept: no id reused
        self.busy = 0
        self.most_busy = 0
        self._runner: web.AppRunner | None = None

    @property
    def connections(self) -> int:
        return len(self.transports)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None and all(t is not request.transport for t in self.transports):
            self.transports.append(request.transport)
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            return await self.handler(request)
        finally:
            self.busy -= 1

    async def start(self, keepalive_timeout: float = 75.0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, *, ssl_context: ssl.SSLContext | None = None, keepalive_timeout: float = 75.0
) -> AsyncIterator[Server]:
    server = Server(handler, ssl_context)
    await server.start(keepalive_timeout)
    try:
        yield server
    finally:
        await server.stop()


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "body": body.decode(),
            "auth": request.headers.get("Authorization"),
        }
    )


def transport_for(server: Server, **options: object) -> KubeTransport:
    return KubeTransport("127.0.0.1", server.port, ssl_context=None, **options)  # type: ignore[arg-type]


async def test_requests_share_one_keep_alive_connection() -> None:
    async with serving(echo) as server:
        transport = transport_for(server)
        for number in range(30):
            answer = await transport.request(
                "PATCH", f"/things/{number}?a=b", {"Authorization": "Bearer t"}, b'{"n": 1}', 5.0
            )
            assert answer.status == 200
            assert json.loads(answer.data) == {
                "method": "PATCH",
                "path": f"/things/{number}?a=b",
                "body": '{"n": 1}',
                "auth": "Bearer t",
            }
        await transport.close()
    assert server.connections == 1


async def test_a_chunked_answer_is_read_whole() -> None:
    piece = b"x" * 65536

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(16):
            await response.write(piece)
        await response.write_eof()
        return response

    async with serving(chunked) as server:
        transport = transport_for(server)
        answer = await transport.request("GET", "/big", {}, None, 5.0)
        again = await transport.request("GET", "/big", {}, None, 5.0)
        await transport.close()
    assert answer.data == piece * 16 and again.data == piece * 16
    assert answer.getheader("Transfer-Encoding") == "chunked"
    assert server.connections == 1


async def test_connection_close_opens_a_new_connection_for_the_next_request() -> None:
    async def closing(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Connection": "close"})

    async with serving(closing) as server:
        transport = transport_for(server)
        for _ in range(5):
            assert (await transport.request("GET", "/", {}, None, 5.0)).data == b"ok"
        await transport.close()
    assert server.connections == 5


async def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async with serving(echo, keepalive_timeout=0.2) as server:
        transport = transport_for(server)
        await transport.request("GET", "/one", {}, None, 5.0)
        first = server.transports[0]
        for _ in range(100):  # until the server's keep-alive timeout closed the idle connection
            if first.is_closing():
                break
            await asyncio.sleep(0.05)
        assert first.is_closing()
        await asyncio.sleep(0.1)  # the close reaches our side
        answer = await transport.request("GET", "/two", {}, None, 5.0)
        await transport.close()
    assert answer.status == 200
    assert server.connections == 2


async def test_a_late_answer_times_out_and_its_connection_is_dropped() -> None:
    release = asyncio.Event()

    async def late(request: web.Request) -> web.Response:
        if request.path == "/late":
            await release.wait()
        return web.Response(text=request.path)

    async with serving(late) as server:
        transport = transport_for(server)
        with pytest.raises(TimeoutError):
            await transport.request("GET", "/late", {}, None, 0.3)
        release.set()
        # The late answer, if it came now, must not be taken for the next request's.
        assert (await transport.request("GET", "/next", {}, None, 5.0)).data == b"/next"
        await transport.close()
    assert server.connections == 2


async def test_an_answer_cut_off_is_a_disconnection() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.close()
        return response

    async with serving(cut) as server:
        transport = transport_for(server)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await transport.request("GET", "/", {}, None, 5.0)
        await transport.close()


async def test_no_more_connections_than_the_limit_and_every_request_answered() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text=request.path)

    async with serving(slow) as server:
        transport = transport_for(server, limit=3)
        answers = await asyncio.gather(
            *(transport.request("GET", f"/{n}", {}, None, 10.0) for n in range(20))
        )
        await transport.close()
    assert sorted(a.data for a in answers) == sorted(f"/{n}".encode() for n in range(20))
    assert server.most_busy == 3
    assert server.connections == 3


class Gate:
    """A handler that holds `/hold` until released, and notes the order the other paths came in."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.order: list[str] = []

    async def __call__(self, request: web.Request) -> web.Response:
        if request.path == "/hold":
            self.holding.set()
            await self.release.wait()
        else:
            self.order.append(request.path)
        return web.Response(text=request.path)


async def request_as(transport: KubeTransport, path: str, *, on_deadline: bool) -> Answer:
    token = ON_DEADLINE.set(on_deadline)
    try:
        return await transport.request("GET", path, {}, None, 10.0)
    finally:
        ON_DEADLINE.reset(token)


@contextlib.asynccontextmanager
async def one_connection_held() -> AsyncIterator[tuple[Gate, Server, KubeTransport, asyncio.Task[Answer]]]:
    """A transport of one connection, which a request to `/hold` keeps busy until the gate opens."""
    gate = Gate()
    async with serving(gate) as server:
        transport = transport_for(server, limit=1)
        held = asyncio.create_task(transport.request("GET", "/hold", {}, None, 10.0))
        await gate.holding.wait()
        try:
            yield gate, server, transport, held
        finally:
            await transport.close()


async def test_a_freed_connection_goes_to_requests_on_a_deadline_first_then_in_turn() -> None:
    async with one_connection_held() as (gate, server, transport, held):
        waiting = []
        queued = [("/change-1", False), ("/due-1", True), ("/change-2", False), ("/due-2", True)]
        for path, on_deadline in queued:
            waiting.append(asyncio.create_task(request_as(transport, path, on_deadline=on_deadline)))
            await asyncio.sleep(0.01)  # queued in this order
        gate.release.set()
        await asyncio.gather(held, *waiting)
    assert gate.order == ["/due-1", "/due-2", "/change-1", "/change-2"]
    assert server.connections == 1


async def test_a_request_that_gave_up_waiting_leaves_no_turn_behind() -> None:
    async with one_connection_held() as (gate, server, transport, held):
        with pytest.raises(TimeoutError):
            await transport.request("GET", "/too-late", {}, None, 0.05)
        impatient = asyncio.create_task(transport.request("GET", "/cancelled", {}, None, 10.0))
        await asyncio.sleep(0.01)
        impatient.cancel()
        gate.release.set()
        await held
        # The connection is idle again: the next request has it at once, on the same connection.
        answer = await asyncio.wait_for(transport.request("GET", "/next", {}, None, 10.0), 5.0)
    assert answer.data == b"/next"
    assert gate.order == ["/next"]
    assert server.connections == 1


async def test_a_request_cancelled_in_flight_never_hands_its_answer_to_the_next() -> None:
    async def answer_late(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.3)
        return web.Response(text=request.path)

    async with serving(answer_late) as server:
        transport = transport_for(server, limit=1)
        slow = asyncio.create_task(transport.request("GET", "/slow", {}, None, 10.0))
        await asyncio.sleep(0.1)  # sent, its answer not yet back
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        answers = [await transport.request("GET", f"/next-{n}", {}, None, 10.0) for n in range(3)]
        await asyncio.sleep(0.4)  # the slow answer has come by now, to a closed connection
        last = await transport.request("GET", "/last", {}, None, 10.0)
        await transport.close()
    assert [a.data for a in answers] == [b"/next-0", b"/next-1", b"/next-2"]
    assert last.data == b"/last"


async def test_a_failed_connect_hands_its_slot_to_the_next_request() -> None:
    port = free_port()  # nothing listens yet
    transport = KubeTransport("127.0.0.1", port, ssl_context=None, limit=1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await transport.request("GET", "/", {}, None, 5.0)
    gate = Gate()
    server = Server(gate)
    server.port = port
    await server.start()
    try:
        answer = await transport.request("GET", "/after", {}, None, 5.0)  # the slot is free again
    finally:
        await transport.close()
        await server.stop()
    assert answer.data == b"/after"


async def test_nothing_listening_is_a_connection_error() -> None:
    transport = KubeTransport("127.0.0.1", free_port(), ssl_context=None)
    with pytest.raises(aiohttp.ClientConnectionError):
        await transport.request("GET", "/", {}, None, 5.0)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_the_configurations_ca_and_not_without(authority: trustme.CA, tmp_path: Path) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    async with serving(echo, ssl_context=server_context) as server:
        configuration = Configuration(host=f"https://127.0.0.1:{server.port}")
        configuration.ssl_ca_cert = str(ca_file)
        trusting = KubeTransport.for_server(configuration)
        assert trusting is not None
        answer = await trusting.request("GET", "/secure", {}, None, 5.0)
        await trusting.close()
        assert json.loads(answer.data)["path"] == "/secure"

        stranger = KubeTransport.for_server(Configuration(host=f"https://127.0.0.1:{server.port}"))
        assert stranger is not None
        with pytest.raises(aiohttp.ClientConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.request("GET", "/secure", {}, None, 5.0)
        await stranger.close()


async def test_an_error_answer_is_the_clients_api_exception(kube_env: KubeEnv) -> None:
    async with connect(DaemonSettings(kubeconfig=str(kube_env.kubeconfig)), "test") as client:
        assert isinstance(client.rest_client, LeanRESTClient)
        with pytest.raises(ApiException) as raised:
            await client.rest_client.request(
                "GET", f"{client.configuration.host}/api/v1/namespaces/shop/configmaps/missing"
            )
        assert raised.value.status == 404
        assert json.loads(raised.value.body or b"")["code"] == 404  # the server's Status, as it sent it
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "seen"}, "data": {"a": "1"}}, "shop")
        with pytest.raises(KubeApiError) as conflict:
            await api.create(CONFIG_MAPS, {"metadata": {"name": "seen"}, "data": {}}, "shop")
        assert conflict.value.conflict
        assert (await api.get(CONFIG_MAPS, "seen", "shop") or {}).get("data") == {"a": "1"}


async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent() -> None:
    async with serving(echo) as server:
        transport = transport_for(server)
        for headers, target in (
            ({"Authorization": "Bearer t\r\nX-Injected: yes"}, "/"),
            ({"Authorization": "Bearer t\nX-Injected: yes"}, "/"),
            ({}, "/a HTTP/1.1\r\nHost: elsewhere\r\n\r\nGET /b"),
        ):
            with pytest.raises(ValueError, match="line break"):
                await transport.request("GET", target, headers, None, 5.0)
        answer = await transport.request("GET", "/after", {"Authorization": "Bearer t"}, None, 5.0)
        await transport.close()
    assert json.loads(answer.data)["path"] == "/after"
    assert server.connections == 1  # the refused ones never took a connection


async def test_the_clients_own_calls_take_the_same_way(kube_env: KubeEnv) -> None:
    """call_api sends through GET/PATCH/…: plain ones on the transport, a watch on aiohttp."""
    async with connect(DaemonSettings(kubeconfig=str(kube_env.kubeconfig)), "test") as client:
        rest = client.rest_client
        url = f"{client.configuration.host}/api/v1/namespaces/shop/configmaps"
        assert isinstance(await rest.GET(url), Answer)
        streamed = await rest.GET(url, query_params={"watch": "true"}, _preload_content=False)
        assert isinstance(streamed, aiohttp.ClientResponse)
        streamed.close()


async def test_only_the_configured_server_is_sent_on_the_transport() -> None:
    async with serving(echo) as server:
        fallback = RESTClientObject(Configuration(host=f"http://127.0.0.1:{server.port}"))
        # A configured server whose address is a prefix of the requested one's is not it.
        lean = LeanRESTClient(fallback, transport_for(server), f"http://127.0.0.1:{str(server.port)[:-1]}")
        answer = await lean.request("GET", f"http://127.0.0.1:{server.port}/elsewhere")
        await lean.close()
    assert not isinstance(answer, Answer)  # kubernetes-asyncio's RESTResponse: sent as asked, not re-aimed
    assert json.loads(answer.data)["path"] == "/elsewhere"
