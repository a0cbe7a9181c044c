"""Argo Rollouts `kind: Rollout` documents, and bare `strategy:` fragments.

meshshift runs either strategy: `spec.strategy.canary` (its `steps` and `analysis`) or
`spec.strategy.blueGreen` (read by spec/bluegreen.py). The other fields Argo defines are
accepted, so a Rollout can be pasted unchanged, and each one meshshift does not act on gets
a warning naming it and saying what meshshift does instead (`NOT_ACTED_ON`): nothing is
accepted and then silently ignored. A field Argo does not define is an error. The pod-template fields
(`replicas`, `selector`, `template`, `workloadRef`, `minReadySeconds`,
`revisionHistoryLimit`) describe the workload, which meshshift takes from the Deployment.

`spec.progressDeadlineSeconds`, `spec.progressDeadlineAbort` (as in Argo, a passed deadline
aborts only with `progressDeadlineAbort: true`; otherwise it is reported and the rollout waits)
and `canary.abortScaleDownDelaySeconds` are honoured.
The `meshshift.io/allow-non-monotonic: "true"` annotation on the Rollout allows weights
that go down, as on a Deployment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from meshshift.spec.bluegreen import check_selector_labels, read_blue_green, read_pod_metadata
from meshshift.spec.errors import Findings
from meshshift.spec.fields import (
    at,
    check_keys,
    exactly_one_key,
    expect_choice,
    expect_int,
    expect_k8s_name,
    expect_mapping,
    require,
)
from meshshift.spec.model import RolloutSpec
from meshshift.spec.rollout import RolloutPaths, RolloutPolicy, TemplateCatalog, build_rollout
from meshshift.spec.steps import read_background_analysis, read_steps

API_VERSION = "argoproj.io/v1alpha1"
ALLOW_NON_MONOTONIC = "meshshift.io/allow-non-monotonic"

ROLLOUT_SPEC_FIELDS = (
    "replicas",
    "selector",
    "template",
    "workloadRef",
    "minReadySeconds",
    "revisionHistoryLimit",
    "paused",
    "progressDeadlineSeconds",
    "progressDeadlineAbort",
    "restartAt",
    "rollbackWindow",
    "analysis",
    "strategy",
)
# Canary fields Argo defines that meshshift accepts and does not use.
IGNORED_CANARY_FIELDS = (
    "canaryService",
    "stableService",
    "trafficRouting",
    "canaryMetadata",
    "stableMetadata",
    "maxSurge",
    "maxUnavailable",
    "scaleDownDelaySeconds",
    "scaleDownDelayRevisionLimit",
    "abortScaleDownDelaySeconds",
    "dynamicStableScale",
    "antiAffinity",
    "pingPong",
    "minPodsPerReplicaSet",
    "replicaProgressThreshold",
)
CANARY_FIELDS = ("steps", "analysis", *IGNORED_CANARY_FIELDS)

# The routers meshshift drives, and the annotations that say which (a Rollout's
# trafficRouting is not read: the Deployment's annotations are).
ROUTER_ANNOTATIONS = {
    "istio": "meshshift.io/router: istio (and meshshift.io/istio-virtual-service, -routes)",
    "nginx": "meshshift.io/router: nginx (with meshshift.io/nginx-ingress)",
}
_SCALING = "meshshift scales the canary Deployment itself (setCanaryScale, or the traffic weight)"
# Field (relative to spec.strategy.canary, or `spec.` for the Rollout's spec) -> why a
# Rollout's value has no effect in meshshift. Each gets one warning.
NOT_ACTED_ON: Mapping[str, str] = {
    "spec.paused": "meshshift starts every rollout; use a `pause: {}` step, or `meshshift abort`",
    "spec.restartAt": "meshshift does not restart pods; use `kubectl rollout restart` on the Deployment",
    "spec.rollbackWindow": "meshshift rolls every revision out through the steps",
    "canaryService": "meshshift routes to the Service <name>-canary it manages",
    "stableService": "meshshift routes to the Service <name>-primary it manages",
    "maxSurge": _SCALING,
    "maxUnavailable": _SCALING,
    "minPodsPerReplicaSet": _SCALING,
    "replicaProgressThreshold": _SCALING,
    "dynamicStableScale": "the stable (<name>-primary) keeps its replicas until promotion",
    "scaleDownDelaySeconds": "the stable is updated in place at promotion; there is no old ReplicaSet",
    "scaleDownDelayRevisionLimit": "the stable is updated in place at promotion; there is no old ReplicaSet",
    "antiAffinity": "the stable and the canary are separate Deployments; set affinity in the pod template",
    "pingPong": "meshshift keeps one stable (<name>-primary) and one canary Deployment",
}
STRATEGIES = ("canary", "blueGreen")


def parse_argo_rollout(doc: object, *, catalog: TemplateCatalog | None = None) -> RolloutSpec:
    """The canary of an Argo Rollout, or SpecError with every finding."""
    findings = Findings()
    spec = read_argo_rollout(doc, findings, catalog)
    findings.raise_if_errors()
    assert spec is not None  # no errors means it was read
    return spec


def parse_strategy(doc: object, *, catalog: TemplateCatalog | None = None) -> RolloutSpec:
    """A bare `strategy: {canary: ...}` fragment, or SpecError."""
    findings = Findings()
    spec = read_strategy_fragment(doc, findings, catalog)
    findings.raise_if_errors()
    assert spec is not None
    return spec


def read_argo_rollout(
    doc: object, findings: Findings, catalog: TemplateCatalog | None = None
) -> RolloutSpec | None:
    data = expect_mapping(doc, "", findings)
    if data is None:
        return None
    check_keys(data, ("apiVersion", "kind", "metadata", "spec", "status"), "", findings)
    api_version = require(data, "apiVersion", "", findings)
    if api_version is not None:
        expect_choice(api_version, (API_VERSION,), "apiVersion", findings)
    allow_non_monotonic = _read_metadata(data, findings)
    raw_spec = require(data, "spec", "", findings)
    spec = None if raw_spec is None else expect_mapping(raw_spec, "spec", findings)
    if spec is None:
        return None
    check_keys(spec, ROLLOUT_SPEC_FIELDS, "spec", findings)
    deadline = RolloutPolicy().progress_deadline
    if spec.get("progressDeadlineSeconds") is not None:
        seconds = expect_int(
            spec["progressDeadlineSeconds"], "spec.progressDeadlineSeconds", findings, minimum=1
        )
        deadline = deadline if seconds is None else float(seconds)
    for field in ("paused", "restartAt", "rollbackWindow"):
        if spec.get(field) not in (None, False) and f"spec.{field}" in NOT_ACTED_ON:
            _not_acted_on(at("spec", field), NOT_ACTED_ON[f"spec.{field}"], findings)
    strategy = require(spec, "strategy", "spec", findings)
    if strategy is None:
        return None
    # Argo only marks a rollout whose deadline passed, unless progressDeadlineAbort is true.
    abort = spec.get("progressDeadlineAbort", False)
    if not isinstance(abort, bool):
        findings.error("spec.progressDeadlineAbort", f"must be true or false, got {abort!r}")
        abort = False
    policy = RolloutPolicy(
        progress_deadline=deadline, allow_non_monotonic=allow_non_monotonic, progress_deadline_abort=abort
    )
    rollout = read_strategy(strategy, "spec.strategy", findings, policy, catalog)
    if rollout is not None:
        _check_pod_metadata(rollout, spec, findings)
    return rollout


def _check_pod_metadata(rollout: RolloutSpec, spec: Mapping[str, Any], findings: Findings) -> None:
    selector = spec.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    if not isinstance(labels, Mapping):
        return
    if rollout.blue_green is not None:
        path = "spec.strategy.blueGreen"
        check_selector_labels(
            rollout.blue_green.preview_metadata, labels, at(path, "previewMetadata"), findings
        )
        check_selector_labels(
            rollout.blue_green.active_metadata, labels, at(path, "activeMetadata"), findings
        )
        return
    path = "spec.strategy.canary"
    check_selector_labels(rollout.canary_metadata, labels, at(path, "canaryMetadata"), findings)
    check_selector_labels(rollout.stable_metadata, labels, at(path, "stableMetadata"), findings)


def _read_metadata(data: Mapping[str, Any], findings: Findings) -> bool:
    """Check the name; whether the allow-non-monotonic annotation is set."""
    raw = require(data, "metadata", "", findings)
    metadata = None if raw is None else expect_mapping(raw, "metadata", findings)
    if metadata is None:
        return False
    raw_name = require(metadata, "name", "metadata", findings)
    if raw_name is not None:
        expect_k8s_name(raw_name, "metadata.name", findings)
    annotations = metadata.get("annotations")
    return isinstance(annotations, Mapping) and annotations.get(ALLOW_NON_MONOTONIC) == "true"


def read_strategy_fragment(
    doc: object, findings: Findings, catalog: TemplateCatalog | None = None
) -> RolloutSpec | None:
    """`strategy: {canary: {...}}` on its own, as tutorials print it."""
    data = expect_mapping(doc, "", findings)
    if data is None:
        return None
    check_keys(data, ("strategy",), "", findings)
    strategy = require(data, "strategy", "", findings)
    if strategy is None:
        return None
    return read_strategy(strategy, "strategy", findings, RolloutPolicy(), catalog)


def read_strategy(
    value: object,
    path: str,
    findings: Findings,
    policy: RolloutPolicy,
    catalog: TemplateCatalog | None = None,
) -> RolloutSpec | None:
    strategy = expect_mapping(value, path, findings)
    if strategy is None:
        return None
    check_keys(strategy, STRATEGIES, path, findings, what="strategy")
    kind = exactly_one_key(strategy, STRATEGIES, path, findings, what="strategy")
    if kind is None:
        return None
    if kind == "blueGreen":
        return _read_blue_green(strategy[kind], at(path, kind), findings, policy, catalog)
    return _read_canary(strategy[kind], at(path, kind), findings, policy, catalog)


def _read_blue_green(
    value: object, path: str, findings: Findings, policy: RolloutPolicy, catalog: TemplateCatalog | None
) -> RolloutSpec | None:
    block = read_blue_green(value, path, findings, where="argo")
    if block is None:
        return None
    if block.abort_scale_down_delay is not None:
        policy = dataclasses.replace(policy, abort_scale_down_delay=block.abort_scale_down_delay)
    paths = RolloutPaths(steps=at(path, "steps"), analysis=at(path, "analysis"), blue_green=path)
    return build_rollout((), None, policy, paths, findings, catalog, block.strategy)


def _read_canary(
    value: object, path: str, findings: Findings, policy: RolloutPolicy, catalog: TemplateCatalog | None
) -> RolloutSpec | None:
    canary = expect_mapping(value if value is not None else {}, path, findings)
    if canary is None:
        return None
    check_keys(canary, CANARY_FIELDS, path, findings)
    for field, reason in NOT_ACTED_ON.items():
        if canary.get(field) is not None:
            _not_acted_on(at(path, field), reason, findings)
    if canary.get("trafficRouting") is not None:
        _read_traffic_routing(canary["trafficRouting"], at(path, "trafficRouting"), findings)
    paths = RolloutPaths(
        steps=at(path, "steps"),
        analysis=at(path, "analysis"),
        allow_non_monotonic=f'the annotation {ALLOW_NON_MONOTONIC}: "true" on the Rollout',
    )
    max_weight = _max_traffic_weight(canary.get("trafficRouting"), at(path, "trafficRouting"), findings)
    steps = (
        read_steps(canary["steps"], paths.steps, findings, max_weight=max_weight)
        if canary.get("steps") is not None
        else ()
    )
    analysis = None
    if canary.get("analysis") is not None:
        analysis = read_background_analysis(canary["analysis"], paths.analysis, findings)
    if canary.get("canaryMetadata") is not None:
        metadata = read_pod_metadata(canary["canaryMetadata"], at(path, "canaryMetadata"), findings)
        policy = dataclasses.replace(policy, canary_metadata=metadata)
    if canary.get("stableMetadata") is not None:
        metadata = read_pod_metadata(canary["stableMetadata"], at(path, "stableMetadata"), findings)
        policy = dataclasses.replace(policy, stable_metadata=metadata)
    delay = canary.get("abortScaleDownDelaySeconds")
    if delay is not None:
        seconds = expect_int(delay, at(path, "abortScaleDownDelaySeconds"), findings, minimum=0)
        if seconds is not None:
            policy = dataclasses.replace(policy, abort_scale_down_delay=float(seconds))
    return build_rollout(steps, analysis, policy, paths, findings, catalog)


def _max_traffic_weight(routing: object, path: str, findings: Findings) -> int:
    """`trafficRouting.maxTrafficWeight` (default 100): the unit setWeight counts in."""
    if not isinstance(routing, Mapping) or routing.get("maxTrafficWeight") is None:
        return 100
    weight = expect_int(routing["maxTrafficWeight"], at(path, "maxTrafficWeight"), findings, minimum=1)
    return 100 if weight is None else weight


def _not_acted_on(path: str, reason: str, findings: Findings) -> None:
    findings.warning(path, f"not acted on by meshshift: {reason}")


def _read_traffic_routing(value: object, path: str, findings: Findings) -> None:
    """One warning per router a Rollout names: meshshift takes the router from annotations."""
    routing = expect_mapping(value, path, findings)
    if routing is None:
        return
    for key in routing:
        if key == "maxTrafficWeight":
            continue  # acted on: setWeight counts in its units
        if key in ROUTER_ANNOTATIONS:
            reason = f"meshshift reads the router from the Deployment: {ROUTER_ANNOTATIONS[key]}"
        elif key == "managedRoutes":
            reason = "meshshift manages the header and mirror routes of its steps without a list"
        else:
            known = ", ".join(sorted(ROUTER_ANNOTATIONS))
            reason = f"meshshift has no {key} router (it drives {known}; Envoy and NGINX in standalone mode)"
        _not_acted_on(at(path, str(key)), reason, findings)
