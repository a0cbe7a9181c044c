"""Connecting to the API server: a kubeconfig (`--kubeconfig`, `--context`) or in-cluster config.

kubernetes-asyncio's REST client opens its aiohttp session with `trust_env=True`: aiohttp then
reads `~/.netrc` and the proxy variables in a worker thread on every request (two thread hops,
a file lookup, a parse). `connect` gives the client a session without that, and reads the
proxy once, at start: the kubeconfig's `proxy-url` if any, else `HTTPS_PROXY` / `HTTP_PROXY`
for the API server's scheme unless `NO_PROXY` covers its host (aiohttp's own rules, with proxy
credentials from the URL or `~/.netrc`, as `trust_env` applied them). A change of those
variables needs a restart, as for client-go.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import structlog
import yaml
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.rest import RESTClientObject
from kubernetes_asyncio.config.config_exception import ConfigException
from yarl import URL

from meshshift import __version__
from meshshift.kube.transport import KubeTransport, LeanRESTClient
from meshshift.settings import DaemonSettings

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def default_identity() -> str:
    """A leader-election identity unique per process, like client-go's hostname_uuid."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def pod_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


async def load_configuration(settings: DaemonSettings) -> Configuration:
    """`--kubeconfig` when given, else in-cluster config inside a pod, else the default kubeconfig."""
    configuration = Configuration()
    if settings.kubeconfig or settings.context or not in_cluster():
        try:
            await config.load_kube_config(
                config_file=settings.kubeconfig,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, yaml.YAMLError) as error:
            # The loader assumes a well-formed kubeconfig; anything else is just not one.
            where = settings.kubeconfig or "the default kubeconfig"
            raise ConfigException(f"{where} is not a kubeconfig ({type(error).__name__}: {error})") from None
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def environment_proxy(server: str) -> tuple[str, dict[str, str]] | None:
    """The proxy the environment names for `server` (and its Proxy-Authorization), or None."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(server))
    except LookupError:  # no proxy for this scheme, or NO_PROXY covers the host
        return None
    return str(proxy), ({"Proxy-Authorization": auth.encode()} if auth is not None else {})


def without_environment_lookups(client: ApiClient) -> None:
    """Give `client` a session that looks nothing up per request; the proxy is read here, once."""
    rest = client.rest_client
    configuration = client.configuration
    server = str(configuration.host)
    if not configuration.proxy and (found := environment_proxy(server)) is not None:
        rest.proxy, credentials = found
        if URL(server).scheme == "https":  # sent with the CONNECT that opens the tunnel
            rest.proxy_headers = {**(configuration.proxy_headers or {}), **credentials}
        else:  # plain HTTP goes to the proxy as it is: the credentials ride on each request
            client.default_headers.update(credentials)
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # the new session takes the connector over (TLS settings, pool size)
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        read_bufsize=2**21,  # as kubernetes-asyncio sets it: watch events of large objects
    )
    if rest.proxy:
        log.info("API server requests go through a proxy", proxy=URL(rest.proxy).with_user(None).human_repr())


def with_lean_requests(client: ApiClient) -> None:
    """Plain JSON requests go on meshshift's own connections (transport.py); not through a proxy."""
    rest = client.rest_client
    if isinstance(rest, LeanRESTClient) or rest.proxy:
        return
    transport = KubeTransport.for_server(client.configuration)
    if transport is not None:
        # Duck-typed: the ApiClient only calls request() and close().
        lean = LeanRESTClient(rest, transport, str(client.configuration.host))
        client.rest_client = cast(RESTClientObject, lean)


@contextlib.asynccontextmanager
async def connect(settings: DaemonSettings, identity: str) -> AsyncIterator[ApiClient]:
    """An ApiClient for the whole daemon; its User-Agent names this daemon's identity."""
    client = ApiClient(await load_configuration(settings))
    client.user_agent = f"meshshift/{__version__} ({identity})"
    try:
        without_environment_lookups(client)
        with_lean_requests(client)
        yield client
    finally:
        await client.close()
