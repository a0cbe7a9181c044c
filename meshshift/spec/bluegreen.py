"""Argo's `strategy.blueGreen` block, read the same way wherever it is written.

- on a Deployment, the annotation `meshshift.io/blue-green` holds the block as YAML;
- in a StandaloneRollout file, `spec.blueGreen` (with `spec.preview.listen` for the preview);
- in a pasted Argo Rollout, `spec.strategy.blueGreen`.

The fields are Argo's (`pkg/apis/rollouts/v1alpha1/types.go`, BlueGreenStrategy), with its
defaults: `autoPromotionEnabled` true, `scaleDownDelaySeconds` 30, `abortScaleDownDelaySeconds`
30, `autoPromotionSeconds` 0 meaning none. `maxUnavailable`, `scaleDownDelayRevisionLimit`
and `antiAffinity` are accepted with a warning (meshshift keeps one stable and one preview
Deployment). `previewHeaderRoute` (a `setHeaderRoute` to the preview on the active routes) is
meshshift's addition, so a pasted Rollout may not use it.

Standalone mode has no Services, pods or replicas: the Kubernetes-only fields are errors there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from meshshift.spec.errors import Findings
from meshshift.spec.fields import (
    at,
    check_keys,
    expect_bool,
    expect_int,
    expect_k8s_name,
    expect_mapping,
    type_name,
)
from meshshift.spec.model import DEFAULT_SCALE_DOWN_DELAY, AnalysisRef, BlueGreen, PodMetadata, SetHeaderRoute
from meshshift.spec.steps import ANALYSIS_FIELDS, read_analysis_ref, read_header_route

Where = Literal["kubernetes", "standalone", "argo"]

ARGO_FIELDS = (
    "activeService",
    "previewService",
    "previewReplicaCount",
    "autoPromotionEnabled",
    "autoPromotionSeconds",
    "maxUnavailable",
    "scaleDownDelaySeconds",
    "scaleDownDelayRevisionLimit",
    "prePromotionAnalysis",
    "antiAffinity",
    "postPromotionAnalysis",
    "previewMetadata",
    "activeMetadata",
    "abortScaleDownDelaySeconds",
)
MESHSHIFT_FIELDS = ("previewHeaderRoute",)
# Fields Argo defines that meshshift accepts and does not act on, and why (one warning each).
NOT_ACTED_ON: Mapping[str, str] = {
    "maxUnavailable": "the preview is its own Deployment, scaled up beside the stable one",
    "scaleDownDelayRevisionLimit": "one old revision at most runs: the stable (<name>-primary)",
    "antiAffinity": "the stable and the preview are separate Deployments; set affinity in the pod template",
}
# Fields that only mean something in Kubernetes mode, and what a standalone file has instead.
KUBERNETES_ONLY: Mapping[str, str] = {
    "activeService": "standalone mode has no Services: user traffic reaches spec.router's listen",
    "previewService": "standalone mode has no Services: the preview is spec.preview.listen",
    "previewReplicaCount": "endpoint sets have no replicas",
    "activeMetadata": "endpoint sets have no pods to label",
    "previewMetadata": "endpoint sets have no pods to label",
}

# Kubernetes' label syntax (apimachinery validation): [prefix/]name, values of 63 characters.
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class BlueGreenBlock:
    """What a blueGreen block gives a rollout: the strategy, and its abortScaleDownDelaySeconds."""

    strategy: BlueGreen
    abort_scale_down_delay: float | None = None


def read_blue_green(value: object, path: str, findings: Findings, *, where: Where) -> BlueGreenBlock | None:
    block = expect_mapping(value if value is not None else {}, path, findings)
    if block is None:
        return None
    allowed = ARGO_FIELDS if where == "argo" else (*ARGO_FIELDS, *MESHSHIFT_FIELDS)
    check_keys(block, allowed, path, findings)
    for field, reason in NOT_ACTED_ON.items():
        if block.get(field) is not None:
            findings.warning(at(path, field), f"not acted on by meshshift: {reason}")
    if where == "standalone":
        for field, reason in KUBERNETES_ONLY.items():
            if block.get(field) is not None:
                findings.error(at(path, field), f"is a Kubernetes field: {reason}")
    active = _service(block, "activeService", path, findings)
    preview = _service(block, "previewService", path, findings)
    if where == "argo" and block.get("activeService") is None:
        findings.error(at(path, "activeService"), "is required (the Service user traffic reaches)")
    if active is not None and active == preview:
        findings.error(
            at(path, "previewService"),
            f'is the same Service as activeService ("{active}"): the preview needs its own Service',
        )
    auto_enabled = _bool(block, "autoPromotionEnabled", path, findings, default=True)
    auto_seconds = _seconds(block, "autoPromotionSeconds", path, findings)
    if not auto_enabled and auto_seconds:
        findings.warning(
            at(path, "autoPromotionSeconds"),
            "is ignored: with autoPromotionEnabled: false the rollout waits for `meshshift promote` "
            "(as in Argo)",
        )
    replicas = None
    if block.get("previewReplicaCount") is not None and where != "standalone":
        replicas = expect_int(
            block["previewReplicaCount"], at(path, "previewReplicaCount"), findings, minimum=1
        )
    pre = _analysis(block, "prePromotionAnalysis", path, findings)
    post = _analysis(block, "postPromotionAnalysis", path, findings)
    delay = _seconds(block, "scaleDownDelaySeconds", path, findings)
    abort_delay = _seconds(block, "abortScaleDownDelaySeconds", path, findings)
    header_route = _header_route(block, path, findings)
    strategy = BlueGreen(
        active_service=active,
        preview_service=preview,
        auto_promotion_enabled=auto_enabled,
        auto_promotion_seconds=float(auto_seconds) if auto_seconds else None,
        preview_replica_count=replicas,
        pre_promotion_analysis=pre,
        post_promotion_analysis=post,
        scale_down_delay=DEFAULT_SCALE_DOWN_DELAY if delay is None else float(delay),
        active_metadata=_metadata(block, "activeMetadata", path, findings, where),
        preview_metadata=_metadata(block, "previewMetadata", path, findings, where),
        preview_header_route=header_route,
    )
    return BlueGreenBlock(strategy, None if abort_delay is None else float(abort_delay))


def _service(block: Mapping[str, object], key: str, path: str, findings: Findings) -> str | None:
    if block.get(key) is None:
        return None
    return expect_k8s_name(block[key], at(path, key), findings)


def _bool(block: Mapping[str, object], key: str, path: str, findings: Findings, *, default: bool) -> bool:
    if block.get(key) is None:
        return default
    checked = expect_bool(block[key], at(path, key), findings)
    return default if checked is None else checked


def _seconds(block: Mapping[str, object], key: str, path: str, findings: Findings) -> int | None:
    """Argo's whole seconds (int32)."""
    if block.get(key) is None:
        return None
    return expect_int(block[key], at(path, key), findings, minimum=0, what="whole seconds")


def _analysis(block: Mapping[str, object], key: str, path: str, findings: Findings) -> AnalysisRef | None:
    if block.get(key) is None:
        return None
    return read_analysis_ref(block[key], at(path, key), findings, ANALYSIS_FIELDS)


def _header_route(block: Mapping[str, object], path: str, findings: Findings) -> SetHeaderRoute | None:
    if block.get("previewHeaderRoute") is None:
        return None
    where = at(path, "previewHeaderRoute")
    route = read_header_route(block["previewHeaderRoute"], where, findings)
    if route is not None and route.removes:
        findings.error(at(where, "match"), "is required: the headers that reach the preview")
        return None
    return route


def _metadata(
    block: Mapping[str, object], key: str, path: str, findings: Findings, where: Where
) -> PodMetadata:
    if block.get(key) is None or where == "standalone":
        return PodMetadata()
    return read_pod_metadata(block[key], at(path, key), findings)


def read_pod_metadata(value: object, path: str, findings: Findings) -> PodMetadata:
    """Argo's PodTemplateMetadata: `{labels: {k: v}, annotations: {k: v}}`, strings only."""
    metadata = expect_mapping(value, path, findings)
    if metadata is None:
        return PodMetadata()
    check_keys(metadata, ("labels", "annotations"), path, findings)
    labels = _string_map(metadata.get("labels"), at(path, "labels"), findings, labels=True)
    annotations = _string_map(metadata.get("annotations"), at(path, "annotations"), findings, labels=False)
    return PodMetadata(labels, annotations)


def _string_map(value: object, path: str, findings: Findings, *, labels: bool) -> dict[str, str]:
    if value is None:
        return {}
    entries = expect_mapping(value, path, findings)
    if entries is None:
        return {}
    found: dict[str, str] = {}
    for key, raw in entries.items():
        where = at(path, str(key))
        if not isinstance(key, str) or not isinstance(raw, str):
            shown = raw if not isinstance(raw, bool) else str(raw).lower()
            findings.error(
                where, f'keys and values must be strings, got {type_name(raw)}; quote it: "{shown}"'
            )
            continue
        problem = metadata_key_problem(key) or (label_value_problem(raw) if labels else None)
        if problem:
            findings.error(where, problem)
            continue
        if key.startswith("meshshift.io/"):
            findings.error(where, "the meshshift.io/ prefix is meshshift's own")
            continue
        found[key] = raw
    return found


def check_selector_labels(
    metadata: PodMetadata, selector: Mapping[str, object], path: str, findings: Findings
) -> None:
    """Pod labels meshshift adds must leave the Deployment's selector labels alone: changing one
    would take the pods out of their own Deployment (the API server refuses such a template)."""
    for key in metadata.labels:
        if key in selector:
            findings.error(
                at(at(path, "labels"), key),
                f'"{key}" is a label of the Deployment\'s spec.selector.matchLabels; '
                "pod metadata may not change it",
            )


def metadata_key_problem(key: str) -> str | None:
    """Kubernetes' rule for label and annotation keys: `[DNS-subdomain/]name` (name ≤ 63)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f'"{key}": the prefix before "/" must be a DNS subdomain (e.g. example.com)'
    if not _LABEL_NAME.fullmatch(name):
        return (
            f'"{key}" is not a valid key: up to 63 letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if not _LABEL_VALUE.fullmatch(value):
        return (
            f'"{value}" is not a valid label value: up to 63 letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return None
