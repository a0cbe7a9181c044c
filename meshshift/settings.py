"""Daemon settings: flags first, then MESHSHIFT_* environment variables, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

# PagerDuty's Events API v2 endpoint; MESHSHIFT_PAGERDUTY_EVENTS_URL overrides it (proxies, tests).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EVENT_LOOPS = ("uvloop", "asyncio")  # meshshift.runtime.lifecycle runs the daemon on one of them


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MESHSHIFT_{name}", default)


@dataclass(frozen=True, slots=True)
class NotificationSettings:
    slack_webhook_url: str | None = None
    webhook_url: str | None = None
    # A PagerDuty integration's routing key: a secret, so never shown in a repr (or a log).
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_events_url: str = PAGERDUTY_EVENTS_URL
    timeout: float = 5.0
    retries: int = 3

    @classmethod
    def from_env(cls, **overrides: object) -> NotificationSettings:
        """MESHSHIFT_SLACK_WEBHOOK_URL, _WEBHOOK_URL, _PAGERDUTY_ROUTING_KEY, _PAGERDUTY_EVENTS_URL,
        with explicit values (not None) winning: `meshshift run` and `meshshift demo` read these."""
        env: dict[str, object] = {
            "slack_webhook_url": _env("SLACK_WEBHOOK_URL"),
            "webhook_url": _env("WEBHOOK_URL"),
            "pagerduty_routing_key": _env("PAGERDUTY_ROUTING_KEY"),
            "pagerduty_events_url": _env("PAGERDUTY_EVENTS_URL"),
        }
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None and k in known})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    # Where to run.
    config: str | None = None  # a StandaloneRollout file: standalone mode
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None  # None: every namespace
    selector: str | None = None  # label selector on Deployments
    # The HTTP listener: /metrics, /healthz, /readyz, /api/v1, the dashboard.
    listen: str = "0.0.0.0:8090"
    token: str | None = None  # control endpoints are disabled without one
    # Host names the listener answers for beyond IP addresses and unregistrable names
    # (localhost, *.svc...): a DNS-rebinding guard; "*" answers for any.
    allowed_hosts: tuple[str, ...] = ()
    # Leader election (Kubernetes mode).
    leader_elect: bool = True
    lease_name: str = "meshshift-leader"
    lease_namespace: str | None = None  # default: the pod's namespace, else "default"
    lease_duration: float = 15.0
    # Sharding: rollouts hashed onto this many shards, each guarded by its own Lease
    # (`meshshift-shard-<k>`); replicas share them. 1: one leader runs every rollout.
    shards: int = 1
    # Client-side rate limiting of API requests, as Argo Rollouts' --qps / --burst (0: none).
    qps: float = 40.0
    burst: int = 80
    identity: str | None = None  # default: hostname
    # Analysis.
    prometheus_address: str | None = None
    measurement_timeout: float = 30.0
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    log_format: str = "json"
    log_level: str = "INFO"
    event_loop: str = "uvloop"  # asyncio's own where uvloop is not installed

    @classmethod
    def from_env(cls, **overrides: object) -> DaemonSettings:
        """Settings from the environment, with explicit values (not None) winning."""
        env: dict[str, object] = {
            "token": _env("TOKEN"),
            "prometheus_address": _env("PROMETHEUS_ADDRESS"),
            "namespace": _env("NAMESPACE"),
            "lease_namespace": _env("LEASE_NAMESPACE") or _env("POD_NAMESPACE"),
            "identity": _env("IDENTITY") or _env("POD_NAME"),
            "notifications": NotificationSettings.from_env(),
        }
        if (hosts := _env("ALLOWED_HOSTS")) is not None:
            env["allowed_hosts"] = tuple(h.strip() for h in hosts.split(",") if h.strip())
        if (listen := _env("LISTEN")) is not None:
            env["listen"] = listen
        for variable, key, minimum in (("QPS", "qps", 0), ("BURST", "burst", 1), ("SHARDS", "shards", 1)):
            if (text := _env(variable)) is not None:
                env[key] = bounded_number(f"MESHSHIFT_{variable}", text, minimum, integer=key != "qps")
        if (log_format := _env("LOG_FORMAT")) is not None:
            env["log_format"] = log_format
        env["log_level"] = _env_choice("LOG_LEVEL", LOG_LEVELS)
        env["event_loop"] = _env_choice("EVENT_LOOP", EVENT_LOOPS)
        values = {k: v for k, v in env.items() if v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _env_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """MESHSHIFT_<name>, one of `choices` in any case; ValueError naming the variable otherwise."""
    text = _env(name)
    if text is None:
        return None
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"MESHSHIFT_{name}: {text!r} is not one of {', '.join(choices)}")


def bounded_number(name: str, text: str, minimum: float, *, integer: bool) -> float:
    """A number of at least `minimum` (an integer if asked); ValueError naming `name` otherwise."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}: {text!r} is not {kind}") from None
    if not value >= minimum:  # also refuses NaN
        raise ValueError(f"{name}: {text} is below {minimum}")
    return value


def split_host_port(address: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`host:port` or `:port` into its parts; raises ValueError with a readable reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return (host.strip("[]") or default_host), int(port)
