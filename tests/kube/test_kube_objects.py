"""What the Kubernetes routers share (routers/kube_objects.py): weights, annotations, owned objects."""

from __future__ import annotations

import json
from typing import Any

from meshshift.routers.kube_objects import (
    MANAGED_BY_LABEL,
    MANAGED_ROUTES_ANNOTATION,
    Backend,
    annotation_json,
    canary_percent,
    canary_share,
    owned_metadata,
    put_last,
    set_annotation,
    set_split,
    split_weights,
    weight_or_one,
)

OWNER = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "uid": "u-1"}}


def test_split_weights_share_what_the_other_backends_leave() -> None:
    assert split_weights(30, 0) == (70, 30)
    assert split_weights(50, 20) == (40, 40)  # another backend keeps its 20
    assert split_weights(100, 0) == (0, 100)
    assert split_weights(25, 150) == (0, 0)  # the others take more than 100: nothing is left
    assert split_weights(33, 10) == (60, 30)  # round(90 * 0.33) = 30


def test_canary_percent_of_the_primary_and_canary_share() -> None:
    assert canary_percent(70, 30) == 30
    assert canary_percent(1, 2) == 67
    assert canary_percent(0, 0) is None
    assert canary_percent(0, 5) == 100


def test_set_annotation_writes_and_removes_without_leaving_an_empty_map() -> None:
    metadata: dict[str, object] = {"name": "vs"}
    set_annotation(metadata, MANAGED_ROUTES_ANNOTATION, '{"a": 1}')
    assert metadata["annotations"] == {MANAGED_ROUTES_ANNOTATION: '{"a": 1}'}
    set_annotation(metadata, MANAGED_ROUTES_ANNOTATION, None)
    assert "annotations" not in metadata
    metadata["annotations"] = {"theirs": "x", MANAGED_ROUTES_ANNOTATION: "{}"}
    set_annotation(metadata, MANAGED_ROUTES_ANNOTATION, None)
    assert metadata["annotations"] == {"theirs": "x"}


def test_annotation_json_reads_missing_and_broken_values() -> None:
    assert annotation_json(None, MANAGED_ROUTES_ANNOTATION, "{}") == {}
    assert annotation_json({"annotations": {}}, MANAGED_ROUTES_ANNOTATION, "[]") == []
    value = {"step": {"kind": "header"}}
    metadata = {"annotations": {MANAGED_ROUTES_ANNOTATION: json.dumps(value)}}
    assert annotation_json(metadata, MANAGED_ROUTES_ANNOTATION, "{}") == value
    broken = {"annotations": {MANAGED_ROUTES_ANNOTATION: "{not json"}}
    assert annotation_json(broken, MANAGED_ROUTES_ANNOTATION, "{}") is None


def test_put_last_moves_a_route_set_again_to_the_end() -> None:
    routes = {"a": 1, "b": 2}
    put_last(routes, "a", 3)
    assert list(routes.items()) == [("b", 2), ("a", 3)]
    put_last(routes, "c", 4)
    assert list(routes) == ["b", "a", "c"]


def test_owned_metadata_carries_the_label_and_the_deployment_as_owner() -> None:
    metadata = owned_metadata("shop", "prod", OWNER)
    assert metadata["name"] == "shop" and metadata["namespace"] == "prod"
    assert metadata["labels"] == {MANAGED_BY_LABEL: "meshshift"}
    (owner,) = metadata["ownerReferences"]
    assert owner["kind"] == "Deployment" and owner["name"] == "shop" and owner["uid"] == "u-1"


PRIMARY, CANARY = "shop-primary", "shop-canary"


def _is_primary(backend: Backend) -> bool:
    return backend.get("name") == PRIMARY


def _is_canary(backend: Backend) -> bool:
    return backend.get("name") == CANARY


def _weight_or_zero(backend: Backend) -> int:
    return int(backend.get("weight") or 0)


def test_set_split_weighs_primary_and_canary_and_leaves_the_others() -> None:
    backends: list[dict[str, Any]] = [
        {"name": PRIMARY, "weight": 100},
        {"name": "x", "weight": 20},
        {"name": CANARY},
    ]
    set_split(backends, 25, primary=_is_primary, canary=_is_canary, weight_of=weight_or_one)
    assert [b.get("weight") for b in backends] == [60, 20, 20]  # x keeps its 20
    # Another backend without a weight takes 1 where the API says so (weight_or_one), none where it does not.
    unweighted: list[dict[str, Any]] = [{"name": PRIMARY}, {"name": "other"}, {"name": CANARY}]
    set_split(unweighted, 50, primary=_is_primary, canary=_is_canary, weight_of=weight_or_one)
    assert (unweighted[0]["weight"], unweighted[2]["weight"]) == (49, 50)  # 99 left: round(49.5) is 50
    assert "weight" not in unweighted[1]
    set_split(unweighted, 50, primary=_is_primary, canary=_is_canary, weight_of=_weight_or_zero)
    assert (unweighted[0]["weight"], unweighted[2]["weight"]) == (50, 50)


def test_canary_share_reads_the_split_back() -> None:
    backends: list[Backend] = [{"name": PRIMARY, "weight": 60}, {"name": "x", "weight": 20}, {"name": CANARY}]
    assert canary_share(backends, primary=_is_primary, canary=_is_canary, weight_of=weight_or_one) == 2
    assert canary_share(backends, primary=_is_primary, canary=_is_canary, weight_of=_weight_or_zero) == 0
    alone: list[Backend] = [{"name": "x", "weight": 5}]
    assert canary_share(alone, primary=_is_primary, canary=_is_canary, weight_of=weight_or_one) is None
