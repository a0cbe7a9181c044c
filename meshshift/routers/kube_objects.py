"""What the Kubernetes routers share about the objects they write.

The objects meshshift creates carry its label and the Deployment as owner; the ones it
edits record meshshift's own routes in one annotation, so a restarted daemon finds them
again. Weights are split as Argo Rollouts and Flagger split them: the primary and the
canary share what the other backends leave of 100.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from meshshift.kube.resources import JsonObject, owner_reference
from meshshift.spec.model import HeaderMatch

MANAGED_ROUTES_ANNOTATION = "meshshift.io/managed-routes"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
HEADER, MIRROR = "header", "mirror"  # the kinds of meshshift's own routes

_Value = TypeVar("_Value")
Backend = Mapping[str, Any]  # one weighted entry: a destination, a backendRef, a weighted service
Is = Callable[[Backend], bool]


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


class NamedRoutesEdit:
    """Pure edits of one object's routes, meshshift's told from the user's by their names.

    The managed-routes annotation maps each route of meshshift's to its kind and step
    (`{"kind": "header"|"mirror", "step": <the step's route name>, ...}`), so a restarted
    daemon finds and removes them. `routes_field` is the list under `spec` that holds the
    routes (a VirtualService's `http`, an HTTPRoute's `rules`).
    """

    def __init__(self, doc: JsonObject, routes_field: str) -> None:
        self.doc = doc
        managed = annotation_json(doc.setdefault("metadata", {}), MANAGED_ROUTES_ANNOTATION, "{}")
        self.managed: dict[str, dict[str, str]] = managed if isinstance(managed, dict) else {}
        routes = doc.setdefault("spec", {}).setdefault(routes_field, [])
        self.ours: list[JsonObject] = [r for r in routes if r.get("name") in self.managed]
        self.theirs: list[JsonObject] = [r for r in routes if r.get("name") not in self.managed]

    def remove_header_route(self, step: str) -> None:
        self._drop(HEADER, step)

    def remove_mirror_route(self, step: str) -> None:
        self._drop(MIRROR, step)

    def remove_managed_routes(self) -> None:
        self.ours = []
        self.managed = {}

    def _drop(self, kind: str, step: str) -> None:
        names = {
            n for n, info in self.managed.items() if info.get("kind") == kind and info.get("step") == step
        }
        self.ours = [r for r in self.ours if r.get("name") not in names]
        self.managed = {n: info for n, info in self.managed.items() if n not in names}

    def record_managed(self) -> None:
        """Write which routes are meshshift's into the annotation (none: the annotation goes)."""
        value = json.dumps(self.managed, sort_keys=True) if self.managed else None
        set_annotation(self.doc["metadata"], MANAGED_ROUTES_ANNOTATION, value)


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


def weight_or_one(backend: Backend) -> int:
    """A weight as Gateway API and Traefik count it: a missing one is 1."""
    return int(backend["weight"]) if backend.get("weight") is not None else 1


def set_split(
    backends: Sequence[dict[str, Any]],
    canary_weight: int,
    *,
    primary: Is,
    canary: Is,
    weight_of: Callable[[Backend], int],
) -> None:
    """Weigh the primary and canary entries of `backends` for `canary_weight` percent.

    The other entries keep their weights (`weight_of` reads one as its API counts it) and
    their share; the primary and the canary split what they leave of 100.
    """
    others = sum(weight_of(b) for b in backends if not primary(b) and not canary(b))
    to_primary, to_canary = split_weights(canary_weight, others)
    for backend in backends:
        if primary(backend):
            backend["weight"] = to_primary
        elif canary(backend):
            backend["weight"] = to_canary


def canary_share(
    backends: Sequence[Backend], *, primary: Is, canary: Is, weight_of: Callable[[Backend], int]
) -> int | None:
    """The canary's percentage of what `backends` send to the primary and the canary (None: neither)."""
    primary_total = canary_total = 0
    for backend in backends:
        if primary(backend):
            primary_total += weight_of(backend)
        elif canary(backend):
            canary_total += weight_of(backend)
    return canary_percent(primary_total, canary_total)
