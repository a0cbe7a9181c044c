"""What the Kubernetes routers share (routers/kube_objects.py): weights, annotations, owned objects."""

from __future__ import annotations

import json

from meshshift.routers.kube_objects import (
    MANAGED_BY_LABEL,
    MANAGED_ROUTES_ANNOTATION,
    annotation_json,
    canary_percent,
    owned_metadata,
    put_last,
    set_annotation,
    split_weights,
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
