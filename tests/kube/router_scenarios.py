"""Scenarios of the Traefik and Gateway API routers in Kubernetes mode.

Traefik: a TraefikService's weights, shadow routes in the user's IngressRoutes. Gateway API:
the weights of an HTTPRoute's managed rules, copies of them for header and mirror routes.
Against the emulator, which validates every write against the projects' own CRD schemas
(tests/data/crds): a write meshshift got wrong would be refused, and the rollout would stall.
tests/ship/test_rbac.py replays them (ROUTER_SCENARIOS) for the RBAC rules.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from meshshift.routers.traefik import mirror_service_name, route_priority
from meshshift.runtime.controller import RolloutKey
from tests.kube.crd_schemas import crd_errors
from tests.kube.harness import KubeEnv, Observer, running_daemon, world
from tests.kube.scenarios import (
    APP,
    HEADER_ROUTE,
    PAUSED_AT,
    apex_service,
    deployment,
    distinct,
    opt_in,
    promote,
    release_and_pause,
    wait_initialized,
    wait_state,
)

STEPS = f"""\
- setWeight: 20
- pause: {{duration: 500ms}}
- setHeaderRoute:
    name: {HEADER_ROUTE}
    match:
    - headerName: X-Canary
      headerValue: {{exact: "true"}}
    - headerName: X-User
      headerValue: {{prefix: qa-}}
- setMirrorRoute:
    name: shadow
    percentage: 25
    match:
    - method: {{exact: GET}}
      path: {{prefix: /api}}
- setWeight: 50
- pause: {{}}
- setWeight: 80
- setHeaderRoute: {{name: {HEADER_ROUTE}}}
"""
SHOP_MATCH = "Host(`shop.example`) && PathPrefix(`/`)"


def ingress_route() -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": APP, "labels": {"team": "shop"}, "annotations": {"owner": "edge-team"}},
        "spec": {
            "entryPoints": ["web"],
            "routes": [
                {
                    "kind": "Rule",
                    "match": SHOP_MATCH,
                    "middlewares": [{"name": "strip-prefix"}],
                    "services": [{"kind": "TraefikService", "name": APP}],
                },
                {
                    "kind": "Rule",
                    "match": "Host(`admin.example`)",
                    "priority": 500,
                    "services": [{"name": "admin", "port": 80}],
                },
            ],
        },
    }


def unrelated_ingress_route() -> dict[str, Any]:
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": "other"},
        "spec": {
            "routes": [
                {
                    "kind": "Rule",
                    "match": "Host(`other.example`)",
                    "services": [{"name": "other", "port": 80}],
                }
            ]
        },
    }


def users_traefik_service() -> dict[str, Any]:
    """As Argo's documentation writes it: no weights (so Argo CD does not see a diff), plus stickiness."""
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": APP, "annotations": {"owner": "edge-team"}},
        "spec": {
            "weighted": {
                "services": [{"name": f"{APP}-primary", "port": 80}, {"name": f"{APP}-canary", "port": 80}],
                "sticky": {"cookie": {"name": "lb", "secure": True}},
            }
        },
    }


def canary_weight(traefik_service: dict[str, Any]) -> int:
    weights = {s["name"]: int(s.get("weight", 1)) for s in traefik_service["spec"]["weighted"]["services"]}
    total = weights[f"{APP}-primary"] + weights[f"{APP}-canary"]
    return round(100 * weights[f"{APP}-canary"] / total)


def shadows(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in route["spec"]["routes"] if r["match"] not in (SHOP_MATCH, "Host(`admin.example`)")]


def every_version_validates(observer: Observer) -> None:
    for kind in ("TraefikService", "IngressRoute"):
        for name, versions in observer.history[kind].items():
            for version in versions:
                assert crd_errors(version) == [], f"{kind}/{name}: {crd_errors(version)}"


async def traefik_rollout(kube_env: KubeEnv) -> None:
    """Weights after every step, header and mirror shadows at the pause, the user's objects intact."""
    async with world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        original = ingress_route()
        await w.cluster.create_custom(copy.deepcopy(original))
        await w.cluster.create_custom(unrelated_ingress_route())
        await w.cluster.create_custom(users_traefik_service())
        await w.cluster.create_deployment(deployment(annotations=opt_in("traefik", STEPS)))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await release_and_pause(w, PAUSED_AT)
            at_pause = await w.observer.wait_for(
                lambda o: (
                    r
                    if len(shadows(r := o.get("IngressRoute", APP) or {"spec": {"routes": []}})) == 3
                    else None
                ),
                what="two header shadows and a mirror shadow",
            )
            traefik_service = w.observer.get("TraefikService", APP)
            assert traefik_service is not None and canary_weight(traefik_service) == 50
            check_shadows(at_pause, original)
            mirror = w.observer.get("TraefikService", mirror_service_name(APP, "shadow"))
            assert mirror is not None
            assert mirror["spec"] == {
                "mirroring": {
                    "kind": "TraefikService",
                    "name": APP,
                    "mirrors": [{"name": f"{APP}-canary", "port": 80, "percent": 25}],
                }
            }
            assert mirror["metadata"]["ownerReferences"][0]["name"] == APP
            await promote(w, "1")
            await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
            final = await w.observer.wait_for(
                lambda o: (
                    r
                    if not shadows(r := o.get("IngressRoute", APP) or {"spec": {"routes": [{"match": ""}]}})
                    else None
                ),
                what="the shadow routes removed",
            )
        history = distinct([canary_weight(v) for v in w.observer.history["TraefikService"][APP]])
        assert history == [50, 0, 20, 50, 80, 0]  # the user's, unweighted (1:1); then meshshift's
        # Header and mirror routes came in one write (steps 2-4 are applied together); the
        # header shadows went at step 7, the mirror with the promotion.
        counts = distinct([len(shadows(v)) for v in w.observer.history["IngressRoute"][APP]])
        assert counts == [0, 3, 1, 0]
        assert final["spec"] == original["spec"]  # the user's IngressRoute is exactly theirs again
        assert final["metadata"]["annotations"] == original["metadata"]["annotations"]
        assert len(w.observer.history["IngressRoute"]["other"]) == 1  # never written
        ts = w.observer.get("TraefikService", APP)
        assert ts is not None
        assert ts["spec"]["weighted"]["sticky"] == {"cookie": {"name": "lb", "secure": True}}
        assert ts["metadata"]["annotations"] == {"owner": "edge-team"}
        assert "ownerReferences" not in ts["metadata"]  # the user's object stays theirs
        every_version_validates(w.observer)


def check_shadows(route: dict[str, Any], original: dict[str, Any]) -> None:
    managed, unmanaged = original["spec"]["routes"]
    theirs = [r for r in route["spec"]["routes"] if r not in shadows(route)]
    assert theirs == [managed, unmanaged]  # untouched
    base = f"({SHOP_MATCH})"
    priority = route_priority(managed) + 1
    assert priority == len(SHOP_MATCH) + 1
    canary = [{"name": f"{APP}-canary", "port": 80}]
    assert shadows(route) == [
        {
            "kind": "Rule",
            "match": f'{base} && Header("X-Canary", "true")',
            "priority": priority,
            "services": canary,
            "middlewares": [{"name": "strip-prefix"}],
        },
        {
            "kind": "Rule",
            "match": f'{base} && HeaderRegexp("X-User", "^qa-")',
            "priority": priority,
            "services": canary,
            "middlewares": [{"name": "strip-prefix"}],
        },
        {
            "kind": "Rule",
            "match": f'{base} && PathPrefix("/api") && Method("GET")',
            "priority": priority,
            "services": [{"kind": "TraefikService", "name": mirror_service_name(APP, "shadow")}],
            "middlewares": [{"name": "strip-prefix"}],
        },
    ]
    assert route["spec"]["entryPoints"] == ["web"]
    assert route["metadata"]["labels"] == {"team": "shop"}


async def traefik_service_created(kube_env: KubeEnv) -> None:
    """A missing TraefikService is created, owned by the Deployment, with the primary's port."""
    async with world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        await w.cluster.create_deployment(
            deployment(
                annotations=opt_in("traefik", "- setWeight: 30\n- pause: {}\n", traefik_service="shop-split")
            )
        )
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await release_and_pause(w, 1)
            created = await w.observer.wait_for(
                lambda o: (
                    t if (t := o.get("TraefikService", "shop-split")) and canary_weight(t) == 30 else None
                ),
                what="the TraefikService at 30",
            )
        assert created["spec"] == {
            "weighted": {
                "services": [
                    {"name": f"{APP}-primary", "port": 80, "weight": 70},
                    {"name": f"{APP}-canary", "port": 80, "weight": 30},
                ]
            }
        }
        assert created["metadata"]["ownerReferences"][0]["name"] == APP
        assert created["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshshift"}
        every_version_validates(w.observer)


async def emulator_refuses_invalid_traefik_services(kube_env: KubeEnv) -> None:
    """The check every test above relies on can fail: a misspelt field is a 422, not a silent pass."""
    async with world(kube_env) as w:
        bad = users_traefik_service()
        bad["spec"]["weighted"]["services"][0]["wieght"] = 10
        try:
            await w.cluster.create_custom(bad)
        except Exception as error:  # kubernetes_asyncio's ApiException
            assert getattr(error, "status", None) == 422 and "wieght" in str(getattr(error, "body", ""))
        else:
            raise AssertionError("the emulator stored an invalid TraefikService")
        assert crd_errors(bad) and not crd_errors(users_traefik_service())


# --- Gateway API -------------------------------------------------------------------------------


def http_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": APP, "labels": {"team": "shop"}, "annotations": {"owner": "edge-team"}},
        "spec": {
            "parentRefs": [{"name": "shop-gateway"}],
            "hostnames": ["shop.example"],
            "rules": [
                {
                    "name": "api",
                    "matches": [
                        {"path": {"type": "PathPrefix", "value": "/api"}},
                        {
                            "path": {"type": "PathPrefix", "value": "/v2/api"},
                            "headers": [{"type": "Exact", "name": "X-Env", "value": "prod"}],
                        },
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "X-Route", "value": "api"}]},
                        }
                    ],
                    "backendRefs": [
                        {"name": f"{APP}-primary", "port": 80, "weight": 100},
                        {"name": f"{APP}-canary", "port": 80, "weight": 0},
                    ],
                    "timeouts": {"request": "10s"},
                },
                {
                    "name": "admin",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "admin", "port": 80}],
                },
            ],
        },
    }


def route_canary_weight(route: dict[str, Any]) -> int:
    rule = next(r for r in route["spec"]["rules"] if r.get("name") == "api")
    weights = {ref["name"]: int(ref.get("weight", 1)) for ref in rule["backendRefs"]}
    return round(100 * weights[f"{APP}-canary"] / (weights[f"{APP}-primary"] + weights[f"{APP}-canary"]))


def copies(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in route["spec"]["rules"] if r.get("name") not in ("api", "admin")]


async def gateway_api_rollout(kube_env: KubeEnv) -> None:
    """Weights of the managed rule after every step, header and mirror copies, the rest intact."""
    async with world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        original = http_route()
        await w.cluster.create_custom(copy.deepcopy(original))
        await w.cluster.create_deployment(deployment(annotations=opt_in("gateway-api", STEPS)))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await release_and_pause(w, PAUSED_AT)
            at_pause = await w.observer.wait_for(
                lambda o: (
                    r if len(copies(r := o.get("HTTPRoute", APP) or {"spec": {"rules": []}})) == 2 else None
                ),
                what="a header copy and a mirror copy",
            )
            assert route_canary_weight(at_pause) == 50
            check_copies(at_pause, original)
            await promote(w, "1")
            await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
            final = await w.observer.wait_for(
                lambda o: (
                    r if not copies(r := o.get("HTTPRoute", APP) or {"spec": {"rules": [{}]}}) else None
                ),
                what="the copies removed",
            )
        history = distinct([route_canary_weight(v) for v in w.observer.history["HTTPRoute"][APP]])
        assert history == [0, 20, 50, 80, 0]
        assert distinct([len(copies(v)) for v in w.observer.history["HTTPRoute"][APP]]) == [0, 2, 1, 0]
        assert final["spec"] == original["spec"]  # weights back at 100/0: exactly the user's route
        assert final["metadata"]["annotations"] == original["metadata"]["annotations"]
        for version in w.observer.history["HTTPRoute"][APP]:
            assert crd_errors(version) == [], crd_errors(version)


def check_copies(route: dict[str, Any], original: dict[str, Any]) -> None:
    rules = {r["name"]: r for r in route["spec"]["rules"]}
    assert rules["admin"] == original["spec"]["rules"][1]  # unmanaged: untouched
    api = original["spec"]["rules"][0]
    assert {k: v for k, v in rules["api"].items() if k != "backendRefs"} == {
        k: v for k, v in api.items() if k != "backendRefs"
    }
    assert [ref["weight"] for ref in rules["api"]["backendRefs"]] == [50, 50]
    header, mirror = copies(route)
    canary = {"name": f"{APP}-canary", "port": 80}
    exact = {"type": "Exact", "name": "X-Canary", "value": "true"}
    prefix = {"type": "RegularExpression", "name": "X-User", "value": "^qa-.*$"}
    env = {"type": "Exact", "name": "X-Env", "value": "prod"}
    assert header["matches"] == [  # each original match AND each entry (entries are ORed)
        {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [exact]},
        {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [prefix]},
        {"path": {"type": "PathPrefix", "value": "/v2/api"}, "headers": [env, exact]},
        {"path": {"type": "PathPrefix", "value": "/v2/api"}, "headers": [env, prefix]},
    ]
    assert header["backendRefs"] == [{**canary, "weight": 1}]
    assert header["filters"] == api["filters"] and header["timeouts"] == api["timeouts"]
    # The mirror's /api holds with /api (and not with /v2/api, which gets no copy); the method is added.
    assert mirror["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}]
    assert [ref["weight"] for ref in mirror["backendRefs"]] == [50, 50]  # the split, kept in step
    assert mirror["filters"] == [
        *api["filters"],
        {"type": "RequestMirror", "requestMirror": {"backendRef": canary, "percent": 25}},
    ]
    annotations = route["metadata"]["annotations"]
    assert json.loads(annotations["meshshift.io/managed-routes"]) == {
        header["name"]: {"kind": "header", "step": HEADER_ROUTE},
        mirror["name"]: {"kind": "mirror", "step": "shadow"},
    }
    assert annotations["owner"] == "edge-team"


async def gateway_api_mistakes_change_nothing(kube_env: KubeEnv) -> None:
    """An HTTPRoute without a rule to both Services: the rollout holds, the route is not written."""
    async with world(kube_env) as w:
        await w.cluster.create_service(apex_service())
        route = http_route()
        route["spec"]["rules"] = route["spec"]["rules"][1:]  # only the admin rule
        await w.cluster.create_custom(route)
        await w.cluster.create_deployment(deployment(annotations=opt_in("gateway-api", STEPS)))
        async with running_daemon(kube_env) as operator:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            running = operator.running[RolloutKey(kube_env.namespace, APP)]
            while "no rule with both" not in str(running.controller.last_error):
                assert loop.time() < deadline, running.controller.last_error
                await asyncio.sleep(0.05)
        assert "web-primary and web-canary in its backendRefs" in str(running.controller.last_error)
        assert len(w.observer.history["HTTPRoute"][APP]) == 1  # never written


ROUTER_SCENARIOS = {
    "traefik_rollout": traefik_rollout,
    "traefik_service_created": traefik_service_created,
    "gateway_api_rollout": gateway_api_rollout,
}
