"""The pure parts of Kubernetes mode: patches, route edits, ingress annotations, commands, revisions."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest

from meshshift.engine.machine import CommandKind
from meshshift.kube.commands import parse_command
from meshshift.kube.patches import merge_diff, with_resource_version
from meshshift.kube.resources import answer_copy, json_copy
from meshshift.kube.workloads import (
    WorkloadError,
    container_ports,
    primary_selector,
    rolled_out,
    selector_labels,
    template_revision,
)
from meshshift.routers.istio import Hosts, RouterConfigError, VirtualServiceEdit, combine_matches
from meshshift.routers.nginx_ingress import CanaryModel, IngressConfigError
from meshshift.spec.ingress_nginx import parse_canary
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch

# --- merge patches -------------------------------------------------------------------------


def test_merge_diff_sends_only_what_changed() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "gone": "x", "same": {"k": "v"}}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2, 3]}, "added": True, "same": {"k": "v"}}
    assert merge_diff(old, new) == {"b": {"c": 3, "d": [1, 2, 3]}, "gone": None, "added": True}
    assert merge_diff(new, new) == {}


def test_merge_diff_replaces_a_value_whose_type_changed() -> None:
    assert merge_diff({"a": {"b": 1}}, {"a": "text"}) == {"a": "text"}
    assert merge_diff({"a": 1}, {"a": True}) == {"a": True}


def test_answer_copy_is_equal_and_shares_nothing_mutable_with_the_answer() -> None:
    answer = json.loads(
        '{"metadata": {"labels": {"app": "a"}, "finalizers": ["x"], "resourceVersion": "7"},'
        ' "spec": {"replicas": 3, "ratio": 0.1, "big": 9223372036854775807, "paused": false,'
        ' "note": null, "name": "caf\u00e9 \ud83d\ude00"}}'
    )
    copied = answer_copy(answer)
    assert copied == answer and copied is not answer
    copied["metadata"]["labels"]["app"] = "b"
    copied["metadata"]["finalizers"].append("y")
    assert answer["metadata"]["labels"] == {"app": "a"} and answer["metadata"]["finalizers"] == ["x"]


def test_what_is_no_parsed_json_is_copied_as_json_copy_does() -> None:
    class Labels(dict[str, str]):
        pass

    when = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    original = {"labels": Labels(app="a"), "at": when, "big": 2**70}
    copied = answer_copy(original)
    assert copied == original
    assert type(copied["labels"]) is Labels and copied["labels"] is not original["labels"]
    assert copied["at"] == when and copied["big"] == 2**70


def test_json_copy_shares_nothing_mutable_with_the_original() -> None:
    original: dict[str, Any] = {
        "metadata": {"labels": {"app": "a"}, "finalizers": ["x"]},
        "spec": {"replicas": 1, "ratio": 0.5, "paused": False, "note": None, "odd": ({"in": "tuple"},)},
    }
    copied = json_copy(original)
    assert copied == original
    copied["metadata"]["labels"]["app"] = "b"
    copied["metadata"]["finalizers"].append("y")
    copied["spec"]["odd"][0]["in"] = "changed"  # not JSON: deep-copied all the same
    assert original["metadata"] == {"labels": {"app": "a"}, "finalizers": ["x"]}
    assert original["spec"]["odd"] == ({"in": "tuple"},)


def test_resource_version_precondition_is_added_to_metadata() -> None:
    patch = with_resource_version({"metadata": {"labels": {"x": "1"}}, "spec": {}}, "42")
    assert patch == {"metadata": {"labels": {"x": "1"}, "resourceVersion": "42"}, "spec": {}}
    assert with_resource_version({"spec": {}}, None) == {"spec": {}}


# --- the Istio edit --------------------------------------------------------------------------

HOSTS = Hosts("web-primary", "web-canary", "shop")


def vs(*routes: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "annotations": annotations or {}},
        "spec": {"hosts": ["web"], "http": [copy.deepcopy(r) for r in routes]},
    }


def split_route(
    name: str, stable: str = "web-primary", canary: str = "web-canary", **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "route": [
            {"destination": {"host": stable}, "weight": 100},
            {"destination": {"host": canary}, "weight": 0},
        ],
        **extra,
    }


def test_weights_of_routes_naming_services_by_fqdn_change() -> None:
    doc = vs(split_route("main", "web-primary.shop.svc.cluster.local", "web-canary.shop"))
    edit = VirtualServiceEdit(doc, HOSTS, ())
    edit.set_weight(25)
    route = edit.result()["spec"]["http"][0]["route"]
    assert [d["weight"] for d in route] == [75, 25]


def test_a_host_of_another_namespace_is_not_ours() -> None:
    doc = vs(split_route("main", "web-primary.other", "web-canary.other"))
    with pytest.raises(RouterConfigError, match="no HTTP route with both web-primary and web-canary"):
        VirtualServiceEdit(doc, HOSTS, ()).set_weight(10)


def test_named_routes_must_exist_and_hold_both_hosts() -> None:
    doc = vs(split_route("main"), {"name": "other", "route": [{"destination": {"host": "web-primary"}}]})
    with pytest.raises(RouterConfigError, match='no HTTP route named "missing"'):
        VirtualServiceEdit(copy.deepcopy(doc), HOSTS, ("missing",)).set_weight(10)
    with pytest.raises(RouterConfigError, match='route "other" has 0 destinations for web-canary'):
        VirtualServiceEdit(copy.deepcopy(doc), HOSTS, ("other",)).set_weight(10)
    edit = VirtualServiceEdit(copy.deepcopy(doc), HOSTS, ("main",))
    edit.set_weight(10)
    assert edit.result()["spec"]["http"][1] == doc["spec"]["http"][1]


def test_other_destinations_keep_their_share() -> None:
    route = split_route("main")
    route["route"][0]["weight"] = 80
    route["route"].append({"destination": {"host": "legacy"}, "weight": 20})
    edit = VirtualServiceEdit(vs(route), HOSTS, ())
    edit.set_weight(50)
    assert [d["weight"] for d in edit.result()["spec"]["http"][0]["route"]] == [40, 40, 20]
    assert edit.canary_weights() == [50]


def test_header_route_combines_with_the_shadowed_match_and_keeps_its_fields() -> None:
    route = split_route(
        "api", match=[{"uri": {"prefix": "/api"}}], retries={"attempts": 2}, mirror={"host": "x"}
    )
    edit = VirtualServiceEdit(vs(route), HOSTS, ())
    edit.set_header_route(
        "qa",
        (
            HeaderMatch("X-Canary", StringMatch("exact", "true")),
            HeaderMatch("X-User", StringMatch("regex", "qa-.*")),
        ),
    )
    result = edit.result()
    shadow = result["spec"]["http"][0]
    assert shadow["name"] == "qa"
    assert shadow["match"] == [
        {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "true"}}},
        {"uri": {"prefix": "/api"}, "headers": {"x-user": {"regex": "qa-.*"}}},
    ]
    assert shadow["retries"] == {"attempts": 2} and "mirror" not in shadow
    assert shadow["route"] == [{"destination": {"host": "web-canary"}, "weight": 100}]
    assert (
        '"qa": {"kind": "header", "shadows": "api", "step": "qa"}'
        in result["metadata"]["annotations"]["meshshift.io/managed-routes"]
    )


def test_managed_routes_are_found_again_from_the_annotation() -> None:
    edit = VirtualServiceEdit(vs(split_route("a"), split_route("b")), HOSTS, ())
    edit.set_header_route("qa", (HeaderMatch("X-Canary", StringMatch("prefix", "t")),))
    stored = edit.result()
    assert [r["name"] for r in stored["spec"]["http"]] == ["qa-a", "a", "qa-b", "b"]
    again = VirtualServiceEdit(copy.deepcopy(stored), HOSTS, ())  # a new daemon reads it back
    assert again.step_names("header") == ("qa",)
    again.set_weight(30)
    assert [r["name"] for r in again.result()["spec"]["http"]] == ["qa-a", "a", "qa-b", "b"]
    again.remove_managed_routes()
    cleaned = again.result()
    assert [r["name"] for r in cleaned["spec"]["http"]] == ["a", "b"]
    assert "meshshift.io/managed-routes" not in cleaned["metadata"].get("annotations", {})


def test_each_shadow_sits_before_its_route_headers_then_mirrors_whatever_the_order_set() -> None:
    legacy = {
        "name": "legacy",
        "match": [{"uri": {"prefix": "/legacy"}}],
        "route": [{"destination": {"host": "old"}}],
    }
    edit = VirtualServiceEdit(vs(legacy, split_route("a"), split_route("b")), HOSTS, ())
    edit.set_mirror_route("copy", (MirrorMatch(method=StringMatch("exact", "GET")),), 10)
    edit.set_header_route("qa", (HeaderMatch("X-Canary", StringMatch("exact", "1")),))
    assert [r["name"] for r in edit.result()["spec"]["http"]] == [
        "legacy",
        "qa-a",
        "copy-a",
        "a",
        "qa-b",
        "copy-b",
        "b",
    ]


def test_shadows_written_by_earlier_versions_are_placed_by_their_names() -> None:
    """Before `shadows` was recorded, a shadow's route was in its name (`<step>-<route>`, or the
    step's name alone with one managed route); such routes were at the top of the list."""
    legacy = {
        "name": "legacy",
        "route": [{"destination": {"host": "old"}}],
        "match": [{"uri": {"prefix": "/l"}}],
    }
    for managed, shadows in ((["a"], ["qa"]), (["a", "b"], ["qa-a", "qa-b"])):
        routes = [split_route(name) for name in managed]
        info = {name: {"kind": "header", "step": "qa"} for name in shadows}
        doc = vs(
            *[
                {"name": n, "route": [{"destination": {"host": "web-canary"}, "weight": 100}]}
                for n in shadows
            ],
            legacy,
            *routes,
        )
        doc["metadata"]["annotations"] = {"meshshift.io/managed-routes": json.dumps(info)}
        order = [r["name"] for r in VirtualServiceEdit(doc, HOSTS, ()).result()["spec"]["http"]]
        expected = ["legacy"] + [n for pair in zip(shadows, managed, strict=True) for n in pair]
        assert order == expected


def test_a_user_route_with_the_header_route_name_is_refused() -> None:
    edit = VirtualServiceEdit(vs(split_route("main"), {"name": "qa", "route": []}), HOSTS, ())
    with pytest.raises(RouterConfigError, match='already has a route named "qa"'):
        edit.set_header_route("qa", (HeaderMatch("X-Canary", StringMatch("exact", "1")),))


def test_mirror_route_copies_the_split_and_follows_later_weights() -> None:
    edit = VirtualServiceEdit(vs(split_route("main")), HOSTS, ())
    edit.set_weight(10)
    edit.set_mirror_route("shadow", (MirrorMatch(method=StringMatch("exact", "GET")),), 30)
    edit.set_weight(20)
    mirror = edit.result()["spec"]["http"][0]
    assert mirror["mirror"] == {"host": "web-canary"} and mirror["mirrorPercentage"] == {"value": 30.0}
    assert mirror["match"] == [{"method": {"exact": "GET"}}]
    assert [d["weight"] for d in mirror["route"]] == [80, 20]
    edit.remove_mirror_route("shadow")
    assert [r["name"] for r in edit.result()["spec"]["http"]] == ["main"]


def test_combine_matches_without_an_original_match() -> None:
    assert combine_matches(None, [{"headers": {"a": {"exact": "1"}}}]) == [{"headers": {"a": {"exact": "1"}}}]


# --- ingress-nginx annotations ---------------------------------------------------------------

P = "nginx.ingress.kubernetes.io"


def header(name: str, kind: str, value: str) -> dict[str, str]:
    return {"header": name, "kind": kind, "value": value}


def test_one_exact_header_uses_the_value_annotation() -> None:
    model = CanaryModel(headers={"qa": [header("X-Canary", "exact", "true")]})
    assert model.header_annotations(P) == {
        f"{P}/canary-by-header": "X-Canary",
        f"{P}/canary-by-header-value": "true",
    }


def test_regex_and_prefix_use_the_pattern_annotation_anchored() -> None:
    model = CanaryModel(headers={"qa": [header("X-User", "regex", "qa-[0-9]+")]})
    assert model.header_annotations(P)[f"{P}/canary-by-header-pattern"] == "^(?:qa-[0-9]+)$"
    model = CanaryModel(headers={"qa": [header("X-User", "prefix", "a.b")]})
    assert model.header_annotations(P)[f"{P}/canary-by-header-pattern"] == r"^(?:a\.b.*)$"


def test_several_values_of_one_header_become_one_pattern() -> None:
    model = CanaryModel(
        headers={"a": [header("X-Canary", "exact", "yes")], "b": [header("x-canary", "exact", "1")]}
    )
    annotations = model.header_annotations(P)
    assert annotations[f"{P}/canary-by-header-pattern"] == "^(?:yes|1)$"
    assert f"{P}/canary-by-header-value" not in annotations


def test_two_different_headers_cannot_be_expressed() -> None:
    model = CanaryModel(
        headers={"a": [header("X-Canary", "exact", "1")], "b": [header("X-User", "exact", "qa")]}
    )
    with pytest.raises(IngressConfigError, match="one header only"):
        model.header_annotations(P)


def test_weight_total_scales_the_weight() -> None:
    def percent(annotations: dict[str, str]) -> float:
        return parse_canary(
            {f"{P}/{k}": v for k, v in {"canary": "true", **annotations}.items()}
        ).canary_percent

    assert percent({"canary-weight": "2500", "canary-weight-total": "10000"}) == 25
    assert percent({"canary-weight": "30"}) == 30
    assert percent({"canary-weight": "+30"}) == 30  # strconv.Atoi takes a sign
    assert percent({"canary-weight": "30.0"}) == 0  # and no decimals: dropped, 0
    assert percent({"canary-weight": "150"}) == 100  # weight >= total: every request
    assert percent({"canary-weight": "-5"}) == 0
    assert percent({}) == 0


def test_a_weight_of_thousands_of_digits_is_dropped_not_a_crash() -> None:
    # int() refuses 4,300 digits and more with a ValueError; strconv.Atoi says out of range.
    config = parse_canary({f"{P}/canary": "true", f"{P}/canary-weight": "9" * 5000})
    assert config.canary_percent == 0
    assert config.dropped == ("canary-weight: a number of 5000 digits is out of range, as strconv.Atoi says",)


# --- commands and workloads --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("promote", CommandKind.PROMOTE),
        ("promote-full", CommandKind.PROMOTE_FULL),
        ("promote/2026-11-26T10:00:00Z", CommandKind.PROMOTE),
        ("abort:1", CommandKind.ABORT),
        ("retry/x", CommandKind.RETRY),
        ("promote-full:7", CommandKind.PROMOTE_FULL),
    ],
)
def test_command_values(value: str, kind: CommandKind) -> None:
    command = parse_command(value)
    assert command is not None and command.kind == kind and command.id == value


@pytest.mark.parametrize("value", ["", "promotee", "undo", "abort now", "/promote"])
def test_values_that_are_not_commands(value: str) -> None:
    assert parse_command(value) is None


def test_revision_is_a_stable_hash_of_the_template() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "a", "image": "x:1"}]},
    }
    reordered = {
        "spec": {"containers": [{"image": "x:1", "name": "a"}]},
        "metadata": {"labels": {"app": "web"}},
    }
    assert template_revision(template) == template_revision(reordered)
    changed: dict[str, Any] = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "x:2"
    assert template_revision(changed) != template_revision(template)


def test_rolled_out_follows_kubectl() -> None:
    ready = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }
    assert rolled_out(ready)
    stale = copy.deepcopy(ready)
    stale["status"]["observedGeneration"] = 2
    old_pods = copy.deepcopy(ready)
    old_pods["status"]["replicas"] = 3
    unavailable = copy.deepcopy(ready)
    unavailable["status"]["availableReplicas"] = 1
    assert not rolled_out(stale) and not rolled_out(old_pods) and not rolled_out(unavailable)


def test_selectors_need_match_labels() -> None:
    deployment: dict[str, Any] = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
    }
    assert primary_selector(selector_labels(deployment)) == {"app": "web-primary"}
    deployment["spec"]["selector"]["matchExpressions"] = [{"key": "app", "operator": "In", "values": ["web"]}]
    with pytest.raises(WorkloadError, match="matchExpressions is not supported"):
        selector_labels(deployment)


def test_container_ports_become_service_ports_once() -> None:
    template = {
        "spec": {
            "containers": [
                {"ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090}]},
                {"ports": [{"containerPort": 8080}]},
            ]
        }
    }
    assert container_ports(template) == [
        {"port": 8080, "targetPort": 8080, "protocol": "TCP", "name": "http"},
        {"port": 9090, "targetPort": 9090, "protocol": "TCP"},
    ]
