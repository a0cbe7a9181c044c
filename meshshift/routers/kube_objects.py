"""What the Kubernetes routers share about the objects they write.

The objects meshshift creates carry its label and the Deployment as owner; the ones it
edits record meshshift's own routes in one annotation, so a restarted daemon finds them
again. Weights are split as Argo Rollouts and Flagger split them: the primary and the
canary share what the other backends leave of 100.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from meshshift.kube.resources import JsonObject, owner_reference
from meshshift.spec.model import HeaderMatch

MANAGED_ROUTES_ANNOTATION = "meshshift.io/managed-routes"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

_Value = TypeVar("_Value")


def owned_metadata(name: str, namespace: str, owner: Mapping[str, Any]) -> JsonObject:
    """The metadata of an object meshshift creates: its label, and the Deployment as owner."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: "meshshift"},
        "ownerReferences": [owner_reference(owner)],
    }


def annotation_json(metadata: Mapping[str, Any] | None, key: str, default: str) -> Any:
    """The JSON value of one annotation (`default` when it is missing; None when it is not JSON)."""
    annotations = (metadata or {}).get("annotations") or {}
    try:
        return json.loads(annotations.get(key) or default)
    except ValueError:
        return None


def set_annotation(metadata: JsonObject, key: str, value: str | None) -> None:
    """Write one annotation, or remove it (None); an empty `annotations` map is dropped."""
    annotations = dict(metadata.get("annotations") or {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)


def header_entry(match: HeaderMatch) -> dict[str, str]:
    """How a header match is recorded in the managed-routes annotation."""
    return {"header": match.header_name, "kind": match.value.kind, "value": match.value.value}


def put_last(entries: dict[str, _Value], name: str, value: _Value) -> None:
    """Set `name` as the last entry: a route set again goes behind the others (the order they were set in)."""
    entries.pop(name, None)
    entries[name] = value


def split_weights(canary_weight: int, others: int) -> tuple[int, int]:
    """(primary, canary) weights: `canary_weight` percent of what `others` leave of 100."""
    pool = max(0, 100 - others)  # the other backends keep their share
    canary = round(pool * canary_weight / 100)
    return pool - canary, canary


def canary_percent(primary: int, canary: int) -> int | None:
    """The canary's percentage of the primary+canary share (None when both are 0)."""
    return round(100 * canary / (primary + canary)) if primary + canary else None
