"""The daemon's API calls (from kmock's request log) are exactly those meshshift/kube/access.py lists."""

from __future__ import annotations

from typing import Any

import pytest

from meshshift.kube.access import API_ACCESS, allowed
from tests.kube import router_scenarios, scenarios
from tests.kube.harness import KubeEnv


def rbac(request: Any) -> tuple[str, str, str] | None:
    """(API group, resource[/subresource], verb) of one request, as RBAC sees it."""
    if request.resource is None:
        return None
    if request.method.value == "GET":
        watch = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = "watch" if watch else "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[request.method.value]
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return request.resource.group, resource, verb


async def test_every_call_is_listed_and_the_list_is_used(kube_env: KubeEnv) -> None:
    await scenarios.both_routers(kube_env)  # both routers: every kind of write
    used = {call for r in scenarios.requests_of(kube_env.kmock) if (call := rbac(r)) is not None}
    assert used <= allowed(), f"not in API_ACCESS: {sorted(used - allowed())}"
    # Listed but not exercised here: calls made only for some templates (secrets, Argo's
    # templates when meshshift.io has none, cluster-scoped templates), and the deletion of
    # an earlier version's shared canary Ingress.
    conditional = {
        ("networking.k8s.io", "ingresses", "delete"),
        ("", "secrets", "get"),
        ("argoproj.io", "analysistemplates", "get"),
        ("argoproj.io", "clusteranalysistemplates", "get"),
        ("meshshift.io", "clusteranalysistemplates", "get"),
    }
    routers = {  # the Traefik and Gateway API routers' calls: test_traefik_and_gateway_calls_are_listed
        (group, resource, verb)
        for group, resource, verbs in API_ACCESS
        if group in ("traefik.io", "gateway.networking.k8s.io")
        for verb in verbs
    }
    assert allowed() - used == conditional | routers


@pytest.mark.parametrize(
    ("scenario", "group"),
    [("traefik_rollout", "traefik.io"), ("gateway_api_rollout", "gateway.networking.k8s.io")],
)
async def test_traefik_and_gateway_calls_are_listed_and_used(
    scenario: str, group: str, kube_env: KubeEnv
) -> None:
    await router_scenarios.ROUTER_SCENARIOS[scenario](kube_env)
    used = {call for r in scenarios.requests_of(kube_env.kmock) if (call := rbac(r)) is not None}
    assert used <= allowed(), f"not in API_ACCESS: {sorted(used - allowed())}"
    listed = {c for c in allowed() if c[0] == group}
    assert listed <= used, f"listed but not used: {sorted(listed - used)}"
