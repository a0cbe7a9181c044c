"""The daemon's HTTP listener against slow, greedy, odd and rebinding clients (issue 12.7).

Raw sockets, so the tests send exactly the bytes an attacker would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from meshshift.observe.guard import BODY_TIMEOUT, HEAD_TIMEOUT, MAX_PER_PEER, host_allowed
from meshshift.observe.server import serve
from meshshift.processes import free_port
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings

pytestmark = pytest.mark.both_event_loops  # `meshshift run` runs on uvloop
TOKEN = "s3cret-token"


@contextlib.asynccontextmanager
async def daemon(**settings: object) -> AsyncIterator[tuple[str, int]]:
    registry = RolloutRegistry()
    registry.ready = True
    values: dict[str, object] = {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN, **settings}
    async with serve(registry, DaemonSettings(**values)) as url:  # type: ignore[arg-type]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


async def exchange(address: tuple[str, int], request: bytes, *, source: str | None = None) -> bytes:
    """Send `request` on a new connection; everything the server answered until it closed."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(*address, local_addr=local)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def get(path: str, host: str = "127.0.0.1", *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *extra, "", ""]
    return "\r\n".join(lines).encode()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_slowloris_connections_are_cut_after_the_head_timeout() -> None:
    async with daemon() as address:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attackers = [await asyncio.open_connection(*address) for _ in range(50)]
        closed_after: list[float] = []

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"GET /api/v1/rollouts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with contextlib.suppress(ConnectionError):
                for n in range(int(4 * HEAD_TIMEOUT)):  # one header line every 0.5 s, never the end
                    writer.write(f"X-Slow-{n}: 1\r\n".encode())
                    await writer.drain()
                    if reader.at_eof():
                        break
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                            break
            closed_after.append(loop.time() - started)
            writer.close()

        tasks = [asyncio.create_task(trickle(r, w)) for r, w in attackers]
        await asyncio.sleep(1)
        assert status(await exchange(address, get("/api/v1/rollouts"))) == 200  # others are served meanwhile
        await asyncio.wait_for(asyncio.gather(*tasks), 6 * HEAD_TIMEOUT)
    assert len(closed_after) == 50
    assert max(closed_after) < 2 * HEAD_TIMEOUT  # the probe found all 236 still held after 20 s


async def test_a_slow_body_gets_408() -> None:
    async with daemon() as address:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(
            b"POST /api/v1/rollouts/ns/name/promote HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 100\r\n\r\n0123456789"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 3 * BODY_TIMEOUT)
        writer.close()
    assert status(answer) == 408


async def test_connections_are_limited_per_peer_and_others_still_get_in() -> None:
    async with daemon() as address:
        held = [await asyncio.open_connection(*address) for _ in range(MAX_PER_PEER)]
        try:
            # The next one from the same address is refused at once, before any parsing.
            assert status(await exchange(address, get("/api/v1/rollouts"))) == 503
            # Another client (another loopback address) is served.
            assert status(await exchange(address, get("/api/v1/rollouts"), source="127.0.0.2")) == 200
        finally:
            for _, writer in held:
                writer.close()
        await asyncio.sleep(0.2)
        assert status(await exchange(address, get("/api/v1/rollouts"))) == 200  # freed again


@pytest.mark.parametrize("token", [b"\xff\xfe\xfd", b"caf\xe9", b"s3cret-token\xff"])
async def test_a_bearer_token_that_is_not_utf8_is_a_wrong_token(token: bytes) -> None:
    async with daemon() as address:
        request = (
            b"POST /api/v1/rollouts/ns/name/promote HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token + b"\r\nContent-Length: 0\r\n\r\n"
        )
        answer = await exchange(address, request)
    assert status(answer) == 403
    assert b"wrong token" in answer


REBINDING_CASES = [
    ("evil.example.com", "/api/v1/rollouts", (), 421),
    ("evil.example.com:8090", "/", (), 421),
    ("evil.example.com", "/metrics", (), 421),
    ("evil.example.com", "/api/v1/rollouts", (f"Authorization: Bearer {TOKEN}",), 200),
    ("evil.example.com", "/api/v1/rollouts", ("Authorization: Bearer guess",), 421),
    ("evil.example.com", "/healthz", (), 200),
    ("localhost:8090", "/api/v1/rollouts", (), 200),
    ("127.0.0.1:8090", "/", (), 200),
    ("[::1]:8090", "/api/v1/rollouts", (), 200),
    ("10.12.0.7:8090", "/metrics", (), 200),
    ("meshshift", "/api/v1/rollouts", (), 200),
    ("meshshift.meshshift-system.svc", "/api/v1/rollouts", (), 200),
    ("meshshift.meshshift-system.svc.cluster.local:8090", "/metrics", (), 200),
    ("dash.example.com", "/", (), 200),  # configured below
]


@pytest.mark.parametrize(("host", "path", "headers", "expected"), REBINDING_CASES)
async def test_a_rebinding_page_cannot_read_the_api(
    host: str, path: str, headers: tuple[str, ...], expected: int
) -> None:
    async with daemon(allowed_hosts=("dash.example.com",)) as address:
        answer = await exchange(address, get(path, host, *headers))
    assert status(answer) == expected, answer[:300]
    if expected == 421:
        assert b"MESHSHIFT_ALLOWED_HOSTS" in answer


def test_host_names_nobody_can_register_are_ours() -> None:
    assert host_allowed("localhost", ()) and host_allowed("app.localhost:1", ())
    assert host_allowed("anything.example.com", ("*",))
    assert not host_allowed(None, ()) and not host_allowed("", ())
    assert not host_allowed("localhost.evil.com", ())
    assert not host_allowed("svc.evil.com", ())
