"""Ports a standalone proxy is about to listen on: refused at once, naming the field, when taken.

A proxy that shares its port with another (SO_REUSEPORT, Envoy's default on Linux) splits the
live requests between the two: a second daemon with the same `listen` would serve some of
them with its own, perhaps retired, version. Envoy is therefore started without port sharing,
and before it starts the daemon checks the ports itself, so the error names the rollout file's
field instead of sitting in the proxy's log (or, for a busy admin port, instead of a wait for
a configuration the other proxy's admin endpoint never reports).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from meshshift.routers.proxy_routes import RouterConfigError
from meshshift.settings import split_host_port


def port_in_use(address: str) -> str | None:
    """Why nothing new can listen on `address` (host:port) now, or None when it is free."""
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the proxies bind: SO_REUSEADDR (a port in TIME_WAIT is free), no SO_REUSEPORT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def busy_port_error(field: str, address: str, reason: str) -> RouterConfigError:
    return RouterConfigError(
        f"{field}: port {split_host_port(address)[1]} ({address}) is in use ({reason}); another process "
        "listens there, perhaps another meshshift daemon's proxy. Stop it or choose another port: "
        "two proxies on one port would split its requests between them"
    )


def ensure_free(address: str, field: str) -> None:
    reason = port_in_use(address)
    if reason is not None:
        raise busy_port_error(field, address, reason)


_CANNOT_BIND = re.compile(r"cannot bind '([^']+)': ([^`'\n]+)")


def bind_failure(log: Path, fields: dict[str, str]) -> RouterConfigError | None:
    """The error for an Envoy that exited because it could not bind (its log says which address).

    `fields` maps each address it was given to the field that set it.
    """
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = _CANNOT_BIND.search(text)
    if found is None:
        return None
    address, reason = found.group(1), found.group(2).strip()
    for given, field in fields.items():
        if split_host_port(given) == split_host_port(address):
            return busy_port_error(field, given, reason)
    return None
