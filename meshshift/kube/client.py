"""Connecting to the API server: a kubeconfig (`--kubeconfig`, `--context`) or in-cluster config."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from meshshift import __version__
from meshshift.settings import DaemonSettings

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


@contextlib.asynccontextmanager
async def connect(settings: DaemonSettings, identity: str) -> AsyncIterator[ApiClient]:
    """An ApiClient for the whole daemon; its User-Agent names this daemon's identity."""
    client = ApiClient(await load_configuration(settings))
    client.user_agent = f"meshshift/{__version__} ({identity})"
    try:
        yield client
    finally:
        await client.close()
