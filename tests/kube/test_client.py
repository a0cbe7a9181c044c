"""The daemon's API client: no lookups per request, and the environment's proxy read once and used.

Through the real kubernetes-asyncio client against the emulator; the proxy is a small real
HTTP forward proxy on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshshift.kube.client import connect
from meshshift.kube.resources import CONFIG_MAPS, KubeApi
from meshshift.processes import free_port
from meshshift.settings import DaemonSettings
from tests.kube.harness import KubeEnv

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to it (asyncio.to_thread, run_in_executor)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


_opened: list[str] | None = None  # while a list: the files opened (audit events), for one test


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No proxy variables; HOME holds a ~/.netrc, which a client trusting the environment reads."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine proxy.example login someone password secret\n")
    netrc.chmod(0o600)  # else Python's netrc refuses it
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def settings_for(env: KubeEnv) -> DaemonSettings:
    return DaemonSettings(kubeconfig=str(env.kubeconfig), namespace=env.namespace)


async def some_requests(api: KubeApi, count: int) -> None:
    for index in range(count):
        await api.merge_patch(CONFIG_MAPS, "state", {"data": {"n": str(index)}}, "shop")
        assert await api.get(CONFIG_MAPS, "state", "shop") is not None


async def test_requests_hop_to_no_thread_and_open_no_file(kube_env: KubeEnv, clean_environment: Path) -> None:
    global _opened
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    async with connect(settings_for(kube_env), "test") as client:
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "state"}, "data": {}}, "shop")
        _opened, executor.submitted = [], []
        try:
            await some_requests(api, 20)
            opened = list(_opened)
        finally:
            _opened = None
    assert executor.submitted == []
    assert opened == []
    assert api.requests.total() == 41


class ForwardProxy:
    """An HTTP forward proxy (absolute-form requests), counting what it forwards and the credentials."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self.credentials: list[str | None] = []
        self.port = free_port()
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        target = str(request.url)
        self.forwarded.append(f"{request.method} {request.url.path}")
        self.credentials.append(request.headers.get("Proxy-Authorization"))
        hop_by_hop = ("host", "proxy-authorization")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        async with self._session.request(
            request.method, target, headers=headers, data=await request.read()
        ) as answer:
            return web.Response(
                body=await answer.read(), status=answer.status, content_type=answer.content_type
            )

    @classmethod
    async def running(cls) -> AsyncIterator[ForwardProxy]:
        proxy = cls()
        proxy._session = aiohttp.ClientSession()
        proxy._runner = web.ServerRunner(web.Server(proxy._forward))
        await proxy._runner.setup()
        await web.TCPSite(proxy._runner, "127.0.0.1", proxy.port).start()
        try:
            yield proxy
        finally:
            await proxy._runner.cleanup()
            await proxy._session.close()


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    async for proxy in ForwardProxy.running():
        yield proxy


async def test_the_environments_proxy_is_read_once_at_start_and_used(
    kube_env: KubeEnv, clean_environment: Path, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".netrc").write_text("machine 127.0.0.1 login proxyuser password proxypass\n")
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    async with connect(settings_for(kube_env), "test") as client:
        monkeypatch.delenv("HTTP_PROXY")  # read at start: a later change does not matter
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "state"}, "data": {}}, "shop")
        await some_requests(api, 3)
    assert forward_proxy.forwarded == [
        "POST /api/v1/namespaces/shop/configmaps",
        *["PATCH /api/v1/namespaces/shop/configmaps/state", "GET /api/v1/namespaces/shop/configmaps/state"]
        * 3,
    ]
    # The proxy's credentials come from ~/.netrc, as aiohttp's trust_env found them.
    assert set(forward_proxy.credentials) == {"Basic " + base64.b64encode(b"proxyuser:proxypass").decode()}


async def test_no_proxy_for_the_api_servers_host_goes_direct(
    kube_env: KubeEnv, clean_environment: Path, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with connect(settings_for(kube_env), "test") as client:
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "state"}, "data": {}}, "shop")
        await some_requests(api, 2)
    assert forward_proxy.forwarded == []
    assert kube_env.kmock is not None and len(list(kube_env.kmock)) == 5


async def test_the_kubeconfigs_proxy_url_wins_over_the_environment(
    kube_env: KubeEnv, clean_environment: Path, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    text = kube_env.kubeconfig.read_text().replace(
        f"server: {kube_env.url}", f"server: {kube_env.url}\n    proxy-url: {forward_proxy.url}"
    )
    assert "proxy-url" in text
    kube_env.kubeconfig.write_text(text)
    async with connect(settings_for(kube_env), "test") as client:
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "state"}, "data": {}}, "shop")
    assert forward_proxy.forwarded == ["POST /api/v1/namespaces/shop/configmaps"]
