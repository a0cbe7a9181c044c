"""The `meshshift.io/*` annotations of a Deployment (DESIGN §4; the keys are fixed).

| key                                  | value                                                 |
|--------------------------------------|-------------------------------------------------------|
| `meshshift.io/enabled`               | `"true"` opts the Deployment in                       |
| `meshshift.io/steps`                 | YAML list of canary steps (Argo syntax)               |
| `meshshift.io/blue-green`            | YAML blue-green strategy (Argo's blueGreen), not with steps |
| `meshshift.io/canary-metadata`       | YAML `{labels, annotations}` of the canary's pods (canaryMetadata) |
| `meshshift.io/stable-metadata`       | YAML `{labels, annotations}` of the stable's pods (stableMetadata) |
| `meshshift.io/analysis`              | YAML background analysis: templates, args, startingStep |
| `meshshift.io/router`                | `istio`, `nginx`, `traefik`, `gateway-api` (or a comma list) |
| `meshshift.io/service`               | Service name (default: the Deployment's name)         |
| `meshshift.io/istio-virtual-service` | VirtualService name (default: the service name)       |
| `meshshift.io/istio-routes`          | comma-separated route names (default: routes holding both hosts) |
| `meshshift.io/nginx-ingress`         | the stable Ingress name (required with nginx)         |
| `meshshift.io/traefik-service`       | TraefikService name (default: the service name)       |
| `meshshift.io/http-route`            | Gateway API HTTPRoute name (default: the service name) |
| `meshshift.io/on-failure`            | `rollback` (default), `gradual`, `freeze`             |
| `meshshift.io/progress-deadline`     | duration, default `10m`                               |
| `meshshift.io/command`               | `promote`, `promote-full`, `abort`, `retry` (kept raw) |
| `meshshift.io/allow-non-monotonic`   | `"true"` lets a later setWeight be lower than an earlier one |
| `meshshift.io/slack-webhook-url`     | Slack incoming webhook for this rollout's notifications |
| `meshshift.io/webhook-url`           | generic JSON webhook for this rollout's notifications |
| `meshshift.io/pagerduty-secret`      | a Secret (key `routing-key`) with this rollout's PagerDuty key |

Beyond the contract: `meshshift.io/allow-non-monotonic` (without it a schedule like
`50 -> 10` is refused as a likely typo) and the notification receivers. The PagerDuty
annotation names a Secret, never the key itself: a value shaped like a routing key is an
error. The same key is honoured on an Argo Rollout's metadata.

Any other `meshshift.io/*` key is reported as a warning with the closest known key, so
that `meshshift.io/setps` does not silently leave a Deployment without steps.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from meshshift.spec import ingress_nginx
from meshshift.spec.bluegreen import BlueGreenBlock, check_selector_labels, read_blue_green, read_pod_metadata
from meshshift.spec.errors import Findings
from meshshift.spec.fields import (
    at,
    closest,
    decimal_int,
    did_you_mean,
    expect_duration,
    expect_k8s_name,
    expect_mapping,
    require,
    type_name,
)
from meshshift.spec.model import (
    ROUTER_KINDS,
    AnnotatedDeployment,
    BackgroundAnalysis,
    KubernetesTarget,
    PodMetadata,
    RolloutSpec,
    SetHeaderRoute,
)
from meshshift.spec.rollout import (
    RolloutPaths,
    RolloutPolicy,
    TemplateCatalog,
    WrittenStep,
    build_rollout,
    read_on_failure,
)
from meshshift.spec.steps import read_background_analysis, read_steps
from meshshift.spec.yamldoc import load_value

PREFIX = "meshshift.io/"
ENABLED = "meshshift.io/enabled"
STEPS = "meshshift.io/steps"
BLUE_GREEN = "meshshift.io/blue-green"
CANARY_METADATA = "meshshift.io/canary-metadata"
STABLE_METADATA = "meshshift.io/stable-metadata"
ANALYSIS = "meshshift.io/analysis"
ROUTER = "meshshift.io/router"
SERVICE = "meshshift.io/service"
ISTIO_VIRTUAL_SERVICE = "meshshift.io/istio-virtual-service"
ISTIO_ROUTES = "meshshift.io/istio-routes"
NGINX_INGRESS = "meshshift.io/nginx-ingress"
TRAEFIK_SERVICE = "meshshift.io/traefik-service"
HTTP_ROUTE = "meshshift.io/http-route"
ON_FAILURE = "meshshift.io/on-failure"
PROGRESS_DEADLINE = "meshshift.io/progress-deadline"
COMMAND = "meshshift.io/command"
ALLOW_NON_MONOTONIC = "meshshift.io/allow-non-monotonic"
MAX_TRAFFIC_WEIGHT = "meshshift.io/max-traffic-weight"
SLACK_WEBHOOK_URL = "meshshift.io/slack-webhook-url"
WEBHOOK_URL = "meshshift.io/webhook-url"
PAGERDUTY_SECRET = "meshshift.io/pagerduty-secret"  # noqa: S105 - names a Secret, holds none
PAGERDUTY_SECRET_KEY = "routing-key"  # noqa: S105 - the data key of that Secret

ANNOTATION_KEYS = (
    ENABLED,
    STEPS,
    BLUE_GREEN,
    CANARY_METADATA,
    STABLE_METADATA,
    ANALYSIS,
    ROUTER,
    SERVICE,
    ISTIO_VIRTUAL_SERVICE,
    ISTIO_ROUTES,
    NGINX_INGRESS,
    TRAEFIK_SERVICE,
    HTTP_ROUTE,
    ON_FAILURE,
    PROGRESS_DEADLINE,
    COMMAND,
    ALLOW_NON_MONOTONIC,
    MAX_TRAFFIC_WEIGHT,
    SLACK_WEBHOOK_URL,
    WEBHOOK_URL,
    PAGERDUTY_SECRET,
)
COMMANDS = ("promote", "promote-full", "abort", "retry", "pause")
DEFAULT_NAMESPACE = "default"

_ANNOTATIONS_PATH = "metadata.annotations"


def annotation_path(key: str) -> str:
    """`metadata.annotations["meshshift.io/steps"]`."""
    return at(_ANNOTATIONS_PATH, key)


def parse_deployment(
    manifest: Mapping[str, Any], *, catalog: TemplateCatalog | None = None
) -> AnnotatedDeployment | None:
    """What meshshift reads off a Deployment; None when it is not opted in.

    Raises SpecError (with every finding) when the annotations have errors. Use
    `read_deployment` to get the warnings too.
    """
    findings = Findings()
    deployment = read_deployment(manifest, findings, catalog)
    findings.raise_if_errors()
    return deployment


def read_deployment(
    manifest: object, findings: Findings, catalog: TemplateCatalog | None = None
) -> AnnotatedDeployment | None:
    """Like parse_deployment, adding findings instead of raising.

    With a `catalog`, the analysis references are checked against its templates too.
    """
    data = expect_mapping(manifest, "", findings)
    raw_metadata = None if data is None else require(data, "metadata", "", findings)
    metadata = None if raw_metadata is None else expect_mapping(raw_metadata, "metadata", findings)
    if metadata is None:
        return None
    raw_annotations = metadata.get("annotations") or {}
    annotations = expect_mapping(raw_annotations, _ANNOTATIONS_PATH, findings) or {}
    _warn_unknown_keys(annotations, findings)
    values = _annotation_strings(annotations, findings)
    _check_pagerduty_secret(values, findings)
    if not _opted_in(annotations, findings):
        return None
    raw_name = require(metadata, "name", "metadata", findings)
    name = None if raw_name is None else expect_k8s_name(raw_name, "metadata.name", findings)
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    blue_green = _read_blue_green(values, findings)
    active = blue_green.strategy.active_service if blue_green is not None else None
    target = _read_target(name or "", str(namespace), values, findings, active_service=active)
    routers = target.routers if target is not None else ()
    rollout = _read_rollout(values, findings, catalog, routers, blue_green)
    rollout = _read_pod_metadata(values, rollout, _selector_labels(data), findings)
    if target is None or name is None:
        return None
    return AnnotatedDeployment(target=target, rollout=rollout)


def _warn_unknown_keys(annotations: Mapping[str, Any], findings: Findings) -> None:
    # Compare without the shared prefix, which would make every key look alike.
    suffixes = {key.removeprefix(PREFIX): key for key in ANNOTATION_KEYS}
    for key in annotations:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in ANNOTATION_KEYS:
            match = closest(key.removeprefix(PREFIX), suffixes)
            hint = f' (did you mean "{suffixes[match]}"?)' if match else ""
            findings.warning(
                annotation_path(key), f'unknown meshshift annotation "{key}"{hint}; it is ignored'
            )


def _annotation_strings(annotations: Mapping[str, Any], findings: Findings) -> dict[str, str]:
    """The known meshshift annotations whose values are strings, as Kubernetes requires."""
    values = {}
    for key in ANNOTATION_KEYS:
        value = annotations.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool | int | float):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            findings.error(annotation_path(key), f'annotation values must be strings; quote it: "{shown}"')
        else:
            findings.error(
                annotation_path(key),
                f"annotation values must be strings, got {type_name(value)}; "
                "write the YAML as a block string (|)",
            )
    return values


# PagerDuty's integration (routing) keys are 32 letters and digits.
_ROUTING_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{32}")


def _check_pagerduty_secret(values: Mapping[str, str], findings: Findings) -> None:
    """The annotation names a Secret in the Deployment's namespace; a key never goes here."""
    value = values.get(PAGERDUTY_SECRET)
    if value is None:
        return
    path = annotation_path(PAGERDUTY_SECRET)
    if _ROUTING_KEY_SHAPE.fullmatch(value) and any(c.isdigit() for c in value):
        findings.error(
            path,
            "looks like a routing key: annotations are readable by anyone who can read the Deployment; "
            f"put the key in a Secret (key {PAGERDUTY_SECRET_KEY!r}) and name that Secret here",
        )
        return
    expect_k8s_name(value, path, findings)


def _opted_in(annotations: Mapping[str, Any], findings: Findings) -> bool:
    value = annotations.get(ENABLED)
    if value is True:
        return True  # reported as "quote it" already; keep checking the rest
    if value is None or value == "false":
        return False
    if value != "true":
        findings.warning(annotation_path(ENABLED), f'is "{value}"; only "true" opts the Deployment in')
        return False
    return True


def _read_target(
    deployment: str,
    namespace: str,
    values: Mapping[str, str],
    findings: Findings,
    *,
    active_service: str | None = None,
) -> KubernetesTarget | None:
    routers = _read_routers(values, findings)
    # A blue-green block's activeService names the Service user traffic reaches: meshshift's
    # apex Service, which meshshift.io/service names too.
    service = _name_or_default(values, SERVICE, active_service or deployment, findings)
    if active_service is not None and SERVICE in values and values[SERVICE] != active_service:
        findings.error(
            at(annotation_path(BLUE_GREEN), "activeService"),
            f'is "{active_service}", but {SERVICE} names "{values[SERVICE]}": both name the Service user '
            "traffic reaches; give one of them",
        )
    virtual_service = _name_or_default(values, ISTIO_VIRTUAL_SERVICE, service, findings)
    routes = _read_routes(values, findings)
    ingress = _name_or_default(values, NGINX_INGRESS, "", findings) or None
    traefik_service = _name_or_default(values, TRAEFIK_SERVICE, service, findings)
    http_route = _name_or_default(values, HTTP_ROUTE, service, findings)
    if routers is not None:
        _check_router_options(routers, values, ingress, findings)
    command = values.get(COMMAND)
    # A command may carry a unique token: `promote/2026-11-26T10:00:00Z` or `abort:1`.
    if command is not None and re.split(r"[/:]", command, maxsplit=1)[0].strip() not in COMMANDS:
        known = ", ".join(COMMANDS)
        findings.warning(
            annotation_path(COMMAND),
            f'"{command}" is not a command meshshift acts on ({known}){did_you_mean(command, COMMANDS)}',
        )
    if routers is None or routes is None:
        return None
    return KubernetesTarget(
        deployment=deployment,
        namespace=namespace,
        routers=routers,
        service=service,
        istio_virtual_service=virtual_service,
        istio_routes=routes,
        nginx_ingress=ingress,
        traefik_service=traefik_service,
        http_route=http_route,
        command=command,
    )


def _read_routers(values: Mapping[str, str], findings: Findings) -> tuple[str, ...] | None:
    path = annotation_path(ROUTER)
    raw = values.get(ROUTER)
    if raw is None:
        findings.error(path, 'is required: "istio", "nginx", "traefik", "gateway-api" or a comma list')
        return None
    routers = [part.strip() for part in raw.split(",")]
    ok = True
    for router in routers:
        if router not in ROUTER_KINDS:
            findings.error(
                path,
                f'unknown router "{router}"{did_you_mean(router, ROUTER_KINDS)}; '
                f"use {', '.join(ROUTER_KINDS)} (or several, comma-separated)",
            )
            ok = False
    if ok and len(set(routers)) != len(routers):
        findings.error(path, f'lists a router twice: "{raw}"')
        ok = False
    return tuple(routers) if ok else None


def _name_or_default(values: Mapping[str, str], key: str, default: str, findings: Findings) -> str:
    if key not in values:
        return default
    return expect_k8s_name(values[key], annotation_path(key), findings) or default


def _read_routes(values: Mapping[str, str], findings: Findings) -> tuple[str, ...] | None:
    raw = values.get(ISTIO_ROUTES)
    if raw is None:
        return ()
    routes = tuple(part.strip() for part in raw.split(","))
    if not all(routes):
        findings.error(
            annotation_path(ISTIO_ROUTES), f'"{raw}" has an empty route name; write "primary,secondary"'
        )
        return None
    return routes


def _check_router_options(
    routers: tuple[str, ...], values: Mapping[str, str], ingress: str | None, findings: Findings
) -> None:
    if "nginx" in routers and ingress is None and NGINX_INGRESS not in values:
        findings.error(
            annotation_path(NGINX_INGRESS), "is required with the nginx router: the stable Ingress name"
        )
    unused = [
        (key, router)
        for key, router in (
            (NGINX_INGRESS, "nginx"),
            (ISTIO_VIRTUAL_SERVICE, "istio"),
            (ISTIO_ROUTES, "istio"),
            (TRAEFIK_SERVICE, "traefik"),
            (HTTP_ROUTE, "gateway-api"),
        )
        if key in values and router not in routers
    ]
    for key, router in unused:
        findings.warning(annotation_path(key), f"is ignored: {ROUTER} does not include {router}")


def _read_rollout(
    values: Mapping[str, str],
    findings: Findings,
    catalog: TemplateCatalog | None,
    routers: tuple[str, ...] = (),
    blue_green: BlueGreenBlock | None = None,
) -> RolloutSpec:
    policy = _read_policy(values, findings)
    paths = RolloutPaths(
        steps=annotation_path(STEPS),
        analysis=annotation_path(ANALYSIS),
        allow_non_monotonic=f'{ALLOW_NON_MONOTONIC}: "true"',
        blue_green=annotation_path(BLUE_GREEN),
        on_failure=annotation_path(ON_FAILURE),
    )
    steps = _read_steps(values, paths.steps, findings)
    if "nginx" in routers:
        ingress_nginx.check_header_routes(steps, paths.steps, findings)
        if blue_green is not None and blue_green.strategy.preview_header_route is not None:
            _check_nginx_preview_route(blue_green.strategy.preview_header_route, paths.blue_green, findings)
    analysis = _read_analysis(values, paths.analysis, findings)
    if blue_green is not None and blue_green.abort_scale_down_delay is not None:
        policy = dataclasses.replace(policy, abort_scale_down_delay=blue_green.abort_scale_down_delay)
    strategy = blue_green.strategy if blue_green is not None else None
    return build_rollout(steps, analysis, policy, paths, findings, catalog, strategy)


def _selector_labels(manifest: Mapping[str, Any] | None) -> Mapping[str, object]:
    spec = (manifest or {}).get("spec")
    selector = spec.get("selector") if isinstance(spec, Mapping) else None
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _read_pod_metadata(
    values: Mapping[str, str], rollout: RolloutSpec, selector: Mapping[str, object], findings: Findings
) -> RolloutSpec:
    """`meshshift.io/canary-metadata` and `-stable-metadata` (Argo's canaryMetadata, stableMetadata)."""
    found: dict[str, PodMetadata] = {}
    for key in (CANARY_METADATA, STABLE_METADATA):
        if key not in values:
            continue
        path = annotation_path(key)
        if rollout.blue_green is not None:
            instead = "previewMetadata" if key == CANARY_METADATA else "activeMetadata"
            findings.error(path, f"is for canary steps; a blue-green rollout has {instead} in {BLUE_GREEN}")
            continue
        ok, data = load_value(values[key], path, findings, where="the annotation value")
        if ok and data is not None:
            found[key] = read_pod_metadata(data, path, findings)
            check_selector_labels(found[key], selector, path, findings)
    if rollout.blue_green is not None:
        where = annotation_path(BLUE_GREEN)
        check_selector_labels(
            rollout.blue_green.preview_metadata, selector, at(where, "previewMetadata"), findings
        )
        check_selector_labels(
            rollout.blue_green.active_metadata, selector, at(where, "activeMetadata"), findings
        )
    return dataclasses.replace(
        rollout,
        canary_metadata=found.get(CANARY_METADATA, rollout.canary_metadata),
        stable_metadata=found.get(STABLE_METADATA, rollout.stable_metadata),
    )


def _read_blue_green(values: Mapping[str, str], findings: Findings) -> BlueGreenBlock | None:
    if BLUE_GREEN not in values:
        return None
    path = annotation_path(BLUE_GREEN)
    ok, data = load_value(values[BLUE_GREEN], path, findings, where="the annotation value")
    if not ok:
        return None
    return read_blue_green(data, path, findings, where="kubernetes")


def _check_nginx_preview_route(route: SetHeaderRoute, path: str, findings: Findings) -> None:
    where = at(path, "previewHeaderRoute")
    ingress_nginx.check_header_route(route, where, findings)
    headers = sorted({match.header_name.lower() for match in route.match})
    if len(headers) > 1:
        findings.error(
            where, f"ingress-nginx routes a canary on one header only; this route uses {', '.join(headers)}"
        )


def _read_policy(values: Mapping[str, str], findings: Findings) -> RolloutPolicy:
    defaults = RolloutPolicy()
    on_failure = defaults.on_failure
    if ON_FAILURE in values:
        on_failure = read_on_failure(values[ON_FAILURE], annotation_path(ON_FAILURE), findings) or on_failure
    deadline = defaults.progress_deadline
    if PROGRESS_DEADLINE in values:
        checked = expect_duration(
            values[PROGRESS_DEADLINE], annotation_path(PROGRESS_DEADLINE), findings, positive=True
        )
        deadline = deadline if checked is None else checked
    allow = values.get(ALLOW_NON_MONOTONIC, "false")
    if allow not in ("true", "false"):
        findings.error(annotation_path(ALLOW_NON_MONOTONIC), f'must be "true" or "false", got "{allow}"')
    return RolloutPolicy(
        on_failure=on_failure, progress_deadline=deadline, allow_non_monotonic=allow == "true"
    )


def _read_steps(values: Mapping[str, str], path: str, findings: Findings) -> tuple[WrittenStep, ...]:
    if STEPS not in values:
        return ()
    ok, data = load_value(values[STEPS], path, findings, where="the annotation value")
    if not ok or data is None:
        return ()
    return read_steps(data, path, findings, max_weight=_max_traffic_weight(values, findings))


def _max_traffic_weight(values: Mapping[str, str], findings: Findings) -> int:
    """Argo's maxTrafficWeight as an annotation: setWeight counts in its units (default 100)."""
    raw = values.get(MAX_TRAFFIC_WEIGHT)
    if raw is None:
        return 100
    try:
        weight = decimal_int(raw) if raw.strip().isdigit() else 0
    except ValueError as error:  # thousands of digits: the value itself is no use in the message
        raw = str(error)
        weight = 0
    if weight < 1:
        findings.error(
            annotation_path(MAX_TRAFFIC_WEIGHT), f'must be a whole number of 1 or more, got "{raw}"'
        )
        return 100
    return weight


def _read_analysis(values: Mapping[str, str], path: str, findings: Findings) -> BackgroundAnalysis | None:
    if ANALYSIS not in values:
        return None
    ok, data = load_value(values[ANALYSIS], path, findings, where="the annotation value")
    if not ok or data is None:
        return None
    return read_background_analysis(data, path, findings)
