"""`kind: StandaloneRollout`: one rollout driving a local Envoy or NGINX (DESIGN §4).

```yaml
apiVersion: meshshift.io/v1alpha1
kind: StandaloneRollout
metadata: {name: myapp}
spec:
  router: {envoy: {listen: "127.0.0.1:10000"}}     # or {nginx: {listen: ...}}, {traefik: {listen: ...}}
  stable: {endpoints: ["127.0.0.1:8081"], version: v1}   # version: optional, the label of its metrics
  canary: {endpoints: ["127.0.0.1:8082"], version: v2}   # ({{args.canary-hash}}, {{args.stable-hash}})
  steps: [...]                                     # as meshshift.io/steps
  blueGreen: {...}                                 # or Argo's blue-green strategy (instead of steps)
  preview: {listen: "127.0.0.1:10001"}             # a listener that reaches the new revision only
  analysis: {...}                                  # as meshshift.io/analysis
  templates: [...]                                 # AnalysisTemplate documents, inline
  onFailure: rollback
  progressDeadline: 10m
  stateFile: ./myapp.state.json
  allowNonMonotonic: false
  gradualInterval: 30s
  abortScaleDownDelay: 30s
  prometheus: {address: "http://127.0.0.1:9090"}   # kept in `extra`
  metrics: {listen: "127.0.0.1:8090"}              # kept in `extra`
```
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from meshshift.spec.bluegreen import read_blue_green
from meshshift.spec.errors import Findings
from meshshift.spec.fields import (
    at,
    check_keys,
    exactly_one_key,
    expect_bool,
    expect_choice,
    expect_duration,
    expect_int,
    expect_k8s_name,
    expect_list,
    expect_mapping,
    expect_str,
    report_duplicate,
    require,
)
from meshshift.spec.model import (
    AnalysisTemplate,
    EnvoyRouterConfig,
    NginxRouterConfig,
    RolloutSpec,
    StandaloneRollout,
    StandaloneRouterConfig,
    TraefikRouterConfig,
    Upstream,
)
from meshshift.spec.rollout import (
    BUILTIN_TEMPLATE_NAMES,
    RolloutPaths,
    RolloutPolicy,
    TemplateCatalog,
    build_rollout,
    read_on_failure,
)
from meshshift.spec.steps import read_background_analysis, read_header_name, read_steps
from meshshift.spec.templates import read_template

T = TypeVar("T")

API_VERSION = "meshshift.io/v1alpha1"
KIND = "StandaloneRollout"
SPEC_FIELDS = (
    "router",
    "stable",
    "canary",
    "steps",
    "blueGreen",
    "preview",
    "analysis",
    "templates",
    "onFailure",
    "progressDeadline",
    "stateFile",
    "allowNonMonotonic",
    "gradualInterval",
    "abortScaleDownDelay",
    "prometheus",
    "metrics",
)
ENVOY_FIELDS = ("listen", "admin", "configDir", "attach", "baseId", "binary")
NGINX_FIELDS = ("listen", "configDir", "binary", "canaryHeader")
TRAEFIK_FIELDS = ("listen", "api", "configDir", "attach", "binary")
STANDALONE_ROUTERS = ("envoy", "nginx", "traefik")

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def parse_standalone(
    doc: object,
    *,
    templates: Mapping[str, AnalysisTemplate] | None = None,
    builtin_templates: Collection[str] = BUILTIN_TEMPLATE_NAMES,
) -> StandaloneRollout:
    """A standalone rollout, or SpecError with every finding.

    Its analysis may reference its inline templates, the builtin ones and `templates`.
    """
    findings = Findings()
    rollout = read_standalone(doc, findings, templates=templates, builtin_templates=builtin_templates)
    findings.raise_if_errors()
    assert rollout is not None  # no errors means it was read
    return rollout


def read_standalone(
    doc: object,
    findings: Findings,
    *,
    templates: Mapping[str, AnalysisTemplate] | None = None,
    builtin_templates: Collection[str] = BUILTIN_TEMPLATE_NAMES,
) -> StandaloneRollout | None:
    data = expect_mapping(doc, "", findings)
    if data is None:
        return None
    check_keys(data, ("apiVersion", "kind", "metadata", "spec"), "", findings)
    api_version = require(data, "apiVersion", "", findings)
    if api_version is not None:
        expect_choice(api_version, (API_VERSION,), "apiVersion", findings)
    name = _read_name(data, findings)
    raw_spec = require(data, "spec", "", findings)
    spec = None if raw_spec is None else expect_mapping(raw_spec, "spec", findings)
    if spec is None:
        return None
    rollout = _read_spec(spec, name, findings, templates or {}, builtin_templates)
    metadata = data.get("metadata")
    if rollout is None or not isinstance(metadata, Mapping):
        return rollout
    # What valueFrom.fieldRef args read (metadata.labels['k'] ...), as strings.
    kept: dict[str, Any] = {"name": rollout.name}
    for field in ("labels", "annotations"):
        if isinstance(metadata.get(field), Mapping):
            kept[field] = {str(k): str(v) for k, v in metadata[field].items()}
    return dataclasses.replace(rollout, metadata=kept)


def _read_name(data: Mapping[str, Any], findings: Findings) -> str | None:
    raw = require(data, "metadata", "", findings)
    metadata = None if raw is None else expect_mapping(raw, "metadata", findings)
    if metadata is None:
        return None
    check_keys(metadata, ("name", "labels", "annotations"), "metadata", findings)
    raw_name = require(metadata, "name", "metadata", findings)
    return None if raw_name is None else expect_k8s_name(raw_name, "metadata.name", findings)


def _read_spec(
    spec: Mapping[str, Any],
    name: str | None,
    findings: Findings,
    external: Mapping[str, AnalysisTemplate],
    builtin_templates: Collection[str],
) -> StandaloneRollout | None:
    check_keys(spec, SPEC_FIELDS, "spec", findings)
    router = _read_router(require(spec, "router", "spec", findings), "spec.router", findings)
    stable = _read_upstream(require(spec, "stable", "spec", findings), "spec.stable", findings)
    canary = _read_upstream(require(spec, "canary", "spec", findings), "spec.canary", findings)
    inline = _read_inline_templates(spec.get("templates"), "spec.templates", findings)
    catalog = TemplateCatalog(
        {**external, **{template.name: template for template in inline}}, builtin_templates
    )
    rollout = _read_rollout(spec, findings, catalog)
    preview = _read_preview(spec, findings)
    if router is not None and preview is not None:
        router = dataclasses.replace(router, preview_listen=preview)
    state_file = None
    if spec.get("stateFile") is not None:
        state_file = expect_str(spec["stateFile"], "spec.stateFile", findings)
    extra = _read_extra(spec, findings)
    if router is not None:
        _check_listen_clash(router, extra, findings)
    if name is None or router is None or stable is None or canary is None:
        return None
    return StandaloneRollout(
        name=name,
        router=router,
        stable=stable,
        canary=canary,
        rollout=rollout,
        templates=tuple(inline),
        state_file=state_file,
        extra=extra,
    )


def _read_rollout(spec: Mapping[str, Any], findings: Findings, catalog: TemplateCatalog) -> RolloutSpec:
    paths = RolloutPaths(
        steps="spec.steps",
        analysis="spec.analysis",
        allow_non_monotonic="spec.allowNonMonotonic: true",
        blue_green="spec.blueGreen",
        on_failure="spec.onFailure",
    )
    steps = read_steps(spec["steps"], paths.steps, findings) if spec.get("steps") is not None else ()
    analysis = None
    if spec.get("analysis") is not None:
        analysis = read_background_analysis(spec["analysis"], paths.analysis, findings)
    policy = _read_policy(spec, findings)
    blue_green = None
    if "blueGreen" in spec:
        block = read_blue_green(spec["blueGreen"], paths.blue_green, findings, where="standalone")
        if block is not None:
            blue_green = block.strategy
            if block.abort_scale_down_delay is not None:
                if spec.get("abortScaleDownDelay") is not None:
                    findings.error(
                        "spec.blueGreen.abortScaleDownDelaySeconds",
                        "and spec.abortScaleDownDelay both set the delay; give one of them",
                    )
                policy = dataclasses.replace(policy, abort_scale_down_delay=block.abort_scale_down_delay)
    return build_rollout(steps, analysis, policy, paths, findings, catalog, blue_green)


def _read_preview(spec: Mapping[str, Any], findings: Findings) -> str | None:
    """`spec.preview: {listen: HOST:PORT}`: where the proxy serves the preview (the new revision)."""
    if spec.get("preview") is None:
        return None
    preview = expect_mapping(spec["preview"], "spec.preview", findings)
    if preview is None:
        return None
    check_keys(preview, ("listen",), "spec.preview", findings)
    return _required_address(preview, "listen", "spec.preview", findings)


def _read_policy(spec: Mapping[str, Any], findings: Findings) -> RolloutPolicy:
    defaults = RolloutPolicy()
    on_failure = defaults.on_failure
    if spec.get("onFailure") is not None:
        on_failure = read_on_failure(spec["onFailure"], "spec.onFailure", findings) or on_failure

    def duration(key: str, default: float, *, positive: bool) -> float:
        if spec.get(key) is None:
            return default
        checked = expect_duration(spec[key], at("spec", key), findings, positive=positive)
        return default if checked is None else checked

    allow = False
    if spec.get("allowNonMonotonic") is not None:
        allow = bool(expect_bool(spec["allowNonMonotonic"], "spec.allowNonMonotonic", findings))
    return RolloutPolicy(
        on_failure=on_failure,
        progress_deadline=duration("progressDeadline", defaults.progress_deadline, positive=True),
        allow_non_monotonic=allow,
        gradual_interval=duration("gradualInterval", defaults.gradual_interval, positive=True),
        abort_scale_down_delay=duration(
            "abortScaleDownDelay", defaults.abort_scale_down_delay, positive=False
        ),
    )


# --- router and upstreams ----------------------------------------------------------


def _read_router(value: object, path: str, findings: Findings) -> StandaloneRouterConfig | None:
    if value is None:
        return None
    router = expect_mapping(value, path, findings)
    if router is None:
        return None
    check_keys(router, STANDALONE_ROUTERS, path, findings, what="router")
    kind = exactly_one_key(router, STANDALONE_ROUTERS, path, findings, what="router")
    if kind is None:
        return None
    options = expect_mapping(router[kind] if router[kind] is not None else {}, at(path, kind), findings)
    if options is None:
        return None
    where = at(path, kind)
    if kind == "envoy":
        return _read_envoy(options, where, findings)
    if kind == "traefik":
        return _read_traefik(options, where, findings)
    return _read_nginx(options, where, findings)


def _read_envoy(options: Mapping[str, Any], path: str, findings: Findings) -> EnvoyRouterConfig | None:
    check_keys(options, ENVOY_FIELDS, path, findings)
    listen = _required_address(options, "listen", path, findings)
    admin = _optional(options, "admin", path, findings, read_host_port)
    config_dir = _optional(options, "configDir", path, findings, expect_str)
    attach = _optional(options, "attach", path, findings, expect_bool)
    base_id = _optional(options, "baseId", path, findings, _base_id)
    binary = _optional(options, "binary", path, findings, expect_str)
    if listen is None:
        return None
    _apart_from_listen(admin, "admin", listen, path, findings)
    return EnvoyRouterConfig(
        listen=listen,
        admin=admin,
        config_dir=config_dir,
        attach=bool(attach),
        base_id=base_id,
        binary=binary,
    )


def _apart_from_listen(address: str | None, key: str, listen: str, path: str, findings: Findings) -> None:
    """A router's admin or API address must not be its listener's (one socket cannot serve both)."""
    if address is not None and address == listen:
        findings.error(at(path, key), f"is the same address as listen ({listen})")


def _base_id(value: object, path: str, findings: Findings) -> int | None:
    return expect_int(value, path, findings, minimum=0)


def _read_nginx(options: Mapping[str, Any], path: str, findings: Findings) -> NginxRouterConfig | None:
    check_keys(options, NGINX_FIELDS, path, findings)
    listen = _required_address(options, "listen", path, findings)
    config_dir = _optional(options, "configDir", path, findings, expect_str)
    binary = _optional(options, "binary", path, findings, expect_str)
    header = _optional(options, "canaryHeader", path, findings, read_header_name)
    if listen is None:
        return None
    return NginxRouterConfig(
        listen=listen, config_dir=config_dir, binary=binary, canary_header=header or "X-Canary"
    )


def _read_traefik(options: Mapping[str, Any], path: str, findings: Findings) -> TraefikRouterConfig | None:
    check_keys(options, TRAEFIK_FIELDS, path, findings)
    listen = _required_address(options, "listen", path, findings)
    api = _optional(options, "api", path, findings, read_host_port)
    config_dir = _optional(options, "configDir", path, findings, expect_str)
    attach = _optional(options, "attach", path, findings, expect_bool)
    binary = _optional(options, "binary", path, findings, expect_str)
    if listen is None:
        return None
    _apart_from_listen(api, "api", listen, path, findings)
    if attach and api is None:
        findings.error(at(path, "api"), "is required with attach: true (meshshift checks Traefik's API)")
    return TraefikRouterConfig(
        listen=listen, api=api, config_dir=config_dir, attach=bool(attach), binary=binary
    )


def router_kind(router: StandaloneRouterConfig) -> str:
    """`envoy`, `nginx` or `traefik`: the key of spec.router."""
    if isinstance(router, EnvoyRouterConfig):
        return "envoy"
    return "traefik" if isinstance(router, TraefikRouterConfig) else "nginx"


def _optional(
    options: Mapping[str, Any],
    key: str,
    path: str,
    findings: Findings,
    read: Callable[[object, str, Findings], T | None],
) -> T | None:
    """`read(value, path, findings)` when the option is given, else None."""
    if options.get(key) is None:
        return None
    return read(options[key], at(path, key), findings)


def _required_address(options: Mapping[str, Any], key: str, path: str, findings: Findings) -> str | None:
    raw = require(options, key, path, findings)
    return None if raw is None else read_host_port(raw, at(path, key), findings)


def _read_upstream(value: object, path: str, findings: Findings) -> Upstream | None:
    if value is None:
        return None
    upstream = expect_mapping(value, path, findings)
    if upstream is None:
        return None
    check_keys(upstream, ("endpoints", "version"), path, findings)
    version = _read_version(upstream.get("version"), at(path, "version"), findings)
    raw = require(upstream, "endpoints", path, findings)
    entries = None if raw is None else expect_list(raw, at(path, "endpoints"), findings)
    if entries is None:
        return None
    if not entries:
        findings.error(at(path, "endpoints"), "must list at least one host:port")
        return None
    seen: dict[str, str] = {}
    endpoints = []
    for index, entry in enumerate(entries):
        where = at(at(path, "endpoints"), index)
        endpoint = read_host_port(entry, where, findings)
        if endpoint is not None:
            report_duplicate(endpoint, seen, where, findings, what="endpoint")
            endpoints.append(endpoint)
    return Upstream(tuple(endpoints), version) if len(endpoints) == len(entries) else None


_VERSION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def _read_version(value: object, path: str, findings: Findings) -> str | None:
    """The optional `version` label of an endpoint set: a Kubernetes label value (it is templated
    into queries as {{args.canary-hash}} / {{args.stable-hash}}, so nothing that needs escaping)."""
    if value is None:
        return None
    text = expect_str(value, path, findings)
    if text is None:
        return None
    if not _VERSION.fullmatch(text):
        findings.error(
            path,
            f'"{text}" is not a label value: letters, digits, ".", "_" or "-", starting and ending '
            "with a letter or digit, at most 63 characters",
        )
        return None
    return text


def read_host_port(value: object, path: str, findings: Findings) -> str | None:
    """`host:port`, `1.2.3.4:80` or `[::1]:80`; the port 1..65535."""
    text = expect_str(value, path, findings)
    if text is None:
        return None
    problem = host_port_problem(text)
    if problem:
        findings.error(path, problem)
        return None
    return text


def host_port_problem(text: str) -> str | None:
    if "://" in text:
        return f'"{text}" must be host:port, without a scheme'
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        return f'"{text}" must be host:port (e.g. 127.0.0.1:8081)'
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f'"{text}" has an invalid port "{port}" (1..65535)'
    if host.startswith("[") and host.endswith("]"):
        return None if _is_ip(host[1:-1], version=6) else f'"{host}" is not an IPv6 address'
    if ":" in host:
        return f'"{text}": write an IPv6 address in brackets, e.g. [::1]:{port}'
    if _is_ip(host, version=4) or (_HOSTNAME.fullmatch(host) and not host.replace(".", "").isdigit()):
        return None
    return f'"{host}" is not a valid host name or IPv4 address'


def _is_ip(text: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


# --- templates and extras ----------------------------------------------------------


def _read_inline_templates(value: object, path: str, findings: Findings) -> list[AnalysisTemplate]:
    if value is None:
        return []
    entries = expect_list(value, path, findings) or []
    templates = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = at(path, index)
        template = read_template(entry, findings, where)
        if template is not None:
            report_duplicate(template.name, seen, f"{where}.metadata.name", findings, what="template")
            templates.append(template)
    return templates


def _read_extra(spec: Mapping[str, Any], findings: Findings) -> dict[str, Any]:
    """`prometheus: {address}` and `metrics: {listen}`, for the standalone runtime."""
    extra: dict[str, Any] = {}
    if spec.get("prometheus") is not None:
        prometheus = expect_mapping(spec["prometheus"], "spec.prometheus", findings)
        if prometheus is not None:
            check_keys(prometheus, ("address",), "spec.prometheus", findings)
            address = require(prometheus, "address", "spec.prometheus", findings)
            checked = None if address is None else _read_url(address, "spec.prometheus.address", findings)
            if checked is not None:
                extra["prometheus"] = {"address": checked}
    if spec.get("metrics") is not None:
        metrics = expect_mapping(spec["metrics"], "spec.metrics", findings)
        if metrics is not None:
            check_keys(metrics, ("listen",), "spec.metrics", findings)
            listen = _required_address(metrics, "listen", "spec.metrics", findings)
            if listen is not None:
                extra["metrics"] = {"listen": listen}
    return extra


def _read_url(value: object, path: str, findings: Findings) -> str | None:
    text = expect_str(value, path, findings)
    if text is not None and not re.match(r"https?://[^/\s]", text):
        findings.error(path, f'"{text}" is not an http:// or https:// URL')
        return None
    return text


def _check_listen_clash(router: StandaloneRouterConfig, extra: Mapping[str, Any], findings: Findings) -> None:
    metrics_listen = extra.get("metrics", {}).get("listen")
    kind = router_kind(router)
    if metrics_listen is not None and metrics_listen == router.listen:
        findings.error(
            "spec.metrics.listen", f"is the same address as spec.router.{kind}.listen ({metrics_listen})"
        )
    preview = router.preview_listen
    if preview is None:
        return
    taken = {
        f"spec.router.{kind}.listen": router.listen,
        "spec.metrics.listen": metrics_listen,
        f"spec.router.{kind}.admin": getattr(router, "admin", None),
        f"spec.router.{kind}.api": getattr(router, "api", None),
    }
    for field, address in taken.items():
        if address is not None and address == preview:
            findings.error("spec.preview.listen", f"is the same address as {field} ({preview})")
