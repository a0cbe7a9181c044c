"""The Kubernetes-mode scenarios, each an `async def scenario(env: KubeEnv)` that asserts as it goes.

They run against kmock in tests/kube/test_*.py, against a real cluster in the e2e lane
(test_real_cluster.py), and can be re-run by other suites (the RBAC audit replays them
against a fresh kmock and checks every request it logged). Fault-injection scenarios
need the emulator (`env.kmock`); the others only need an API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import kmock

from meshshift.settings import NotificationSettings
from tests.kube.harness import (
    HANG_GUARD,
    TEMPLATE_VERSION,
    KubeEnv,
    Observer,
    World,
    daemon_process,
    fast_options,
    lease_holder,
    running_daemon,
    world,
    write_kubeconfig,
)
from tests.kube.kmock_ext import k8s_status
from tests.support.receivers import receiver

APP = "web"
IMAGE = os.environ.get("MESHSHIFT_E2E_IMAGE", "registry.k8s.io/pause:3.9")
HEADER_ROUTE = "canary-by-header"
CANARY_INGRESS = f"{APP}-{APP}-canary"  # <deployment>-<stable ingress>-canary
STATE = "meshshift.io/enabled"

STEPS = f"""\
- setWeight: 20
- pause: {{duration: 500ms}}
- setHeaderRoute:
    name: {HEADER_ROUTE}
    match:
    - headerName: X-Canary
      headerValue: {{exact: "true"}}
- setWeight: 50
- analysis:
    templates: [{{templateName: web-check}}]
    args: [{{name: check, value: step4}}]
- pause: {{}}
- setWeight: 80
- setHeaderRoute: {{name: {HEADER_ROUTE}}}
"""
# (canary weight, header routes) of every distinct VirtualService version, in order.
SCHEDULE: list[tuple[int, tuple[str, ...]]] = [
    (0, ()),
    (20, ()),
    (50, (HEADER_ROUTE,)),
    (80, ()),
    (0, ()),
]
PAUSED_AT = 5  # the index of `pause: {}`
HEADER_ROUTE_STEP = f"""\
- setHeaderRoute:
    name: {HEADER_ROUTE}
    match:
    - headerName: X-Canary
      headerValue: {{exact: "true"}}
"""


# --- manifests ------------------------------------------------------------------------------


def deployment(
    name: str = APP,
    *,
    version: str = "v1",
    annotations: dict[str, str] | None = None,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app": name, **(labels or {})},
            "annotations": annotations or {},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": IMAGE,
                            "env": [{"name": "VERSION", "value": version}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ]
                },
            },
        },
    }


def opt_in(router: str = "istio", steps: str = STEPS, **extra: str) -> dict[str, str]:
    values = {STATE: "true", "meshshift.io/router": router, "meshshift.io/steps": steps}
    if "nginx" in router:
        values["meshshift.io/nginx-ingress"] = APP
    values.update({f"meshshift.io/{k.replace('_', '-')}": v for k, v in extra.items()})
    return values


def new_version(version: str) -> dict[str, Any]:
    """The merge patch a release makes: a new pod template."""
    return {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": IMAGE,
                            "env": [{"name": "VERSION", "value": version}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ]
                }
            }
        }
    }


def virtual_service(http: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": APP, "labels": {"team": "shop"}, "annotations": {"owner": "mesh-team"}},
        "spec": {
            "hosts": [APP, f"{APP}.shop.example"],
            "gateways": ["mesh", "shop-gateway"],
            "http": http
            or [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": f"{APP}-primary"}, "weight": 100},
                        {"destination": {"host": f"{APP}-canary"}, "weight": 0},
                    ],
                }
            ],
        },
    }


def stable_ingress() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": APP,
            "annotations": {
                "nginx.ingress.kubernetes.io/rewrite-target": "/",
                "nginx.ingress.kubernetes.io/load-balance": "ewma",
                "kubernetes.io/ingress.class": "nginx",
            },
        },
        "spec": {
            "rules": [
                {
                    "host": "web.shop.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": APP, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def apex_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP},
        "spec": {"selector": {"app": APP}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


async def given(w: World, router: str, steps: str = STEPS, *, user_virtual_service: bool = True) -> None:
    """The analysis template, the router's objects, and the annotated Deployment."""
    await w.cluster.create_template(w.metrics.template())
    if "istio" in router and user_virtual_service:
        await w.cluster.create_virtual_service(virtual_service())
    if "nginx" in router:
        await w.cluster.create_service(apex_service())
        await w.cluster.create_ingress(stable_ingress())
    await w.cluster.create_deployment(deployment(annotations=opt_in(router, steps)))


# --- reading what the daemon did ---------------------------------------------------------------


def vs_split(vs: dict[str, Any], user_routes: Sequence[str] = ("primary",)) -> tuple[int, tuple[str, ...]]:
    """(canary weight of the first user route, names of the routes meshshift added)."""
    http = vs["spec"]["http"]
    route = next(r for r in http if r.get("name") == user_routes[0])
    weights = {d["destination"]["host"]: d.get("weight", 0) for d in route["route"]}
    added = tuple(r["name"] for r in http if r.get("name") not in user_routes)
    return int(weights[f"{APP}-canary"]), added


def ingress_split(ingress: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    annotations = ingress["metadata"].get("annotations") or {}
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations.get(prefix + "canary") == "true"
    header = tuple(
        annotations[prefix + key]
        for key in ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern")
        if prefix + key in annotations
    )
    return int(annotations[prefix + "canary-weight"]), header


def distinct(values: Sequence[Any]) -> list[Any]:
    result: list[Any] = []
    for value in values:
        if not result or result[-1] != value:
            result.append(value)
    return result


def vs_history(observer: Observer, name: str = APP, user_routes: Sequence[str] = ("primary",)) -> list[Any]:
    return distinct([vs_split(v, user_routes) for v in observer.history["VirtualService"][name]])


def ingress_history(observer: Observer) -> list[Any]:
    return distinct([ingress_split(v) for v in observer.history["Ingress"][CANARY_INGRESS]])


def state_seen(**expected: Any) -> Callable[[Observer], dict[str, Any] | None]:
    """A predicate true once any stored state matched (a real cluster may move on before we look)."""

    def check(observer: Observer) -> dict[str, Any] | None:
        for state in observer.states(APP):
            if all(state.get(k) == v for k, v in expected.items()):
                return state
        return None

    return check


def state_is(**expected: Any) -> Callable[[Observer], dict[str, Any] | None]:
    """A predicate on the stored rollout state (camelCase keys, as stored)."""

    def check(observer: Observer) -> dict[str, Any] | None:
        state = observer.state(APP)
        if state is not None and all(state.get(k) == v for k, v in expected.items()):
            return state
        return None

    return check


def template_env(deployment: dict[str, Any]) -> str:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "VERSION"))


async def wait_state(w: World, what: str, **expected: Any) -> dict[str, Any]:
    return await w.observer.wait_for(state_is(**expected), what=what)


async def release_and_pause(w: World, step_index: int = PAUSED_AT, what: str = "the pause") -> dict[str, Any]:
    """Deploy v2 and wait until its rollout holds at the pause at `step_index`."""
    await w.cluster.patch_deployment(APP, new_version("v2"))
    return await wait_state(w, what, phase="Paused", stepIndex=step_index)


async def wait_event(w: World, reason: str, contains: str = "") -> dict[str, Any]:
    def found(observer: Observer) -> dict[str, Any] | None:
        for event in observer.events(APP):
            if event["reason"] == reason and contains in event.get("message", ""):
                return event
        return None

    return await w.observer.wait_for(found, what=f"event {reason} {contains!r}")


async def wait_initialized(w: World) -> dict[str, Any]:
    state = await wait_state(w, "initialization", phase="Healthy", stage="Idle")
    await w.observer.wait_for(
        lambda o: (o.get("Deployment", APP) or {}).get("spec", {}).get("replicas") == 0,
        what="the canary scaled to zero",
    )
    return state


async def promote(w: World, token: str) -> None:
    await w.cluster.annotate(APP, **{"meshshift.io/command": f"promote/{token}"})


# --- scenarios ----------------------------------------------------------------------------------


async def istio_rollout(env: KubeEnv) -> None:
    """A full Istio rollout: weights after each step, header route while active, promotion."""
    async with world(env) as w:
        await given(w, "istio")
        async with running_daemon(env):
            await check_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            await check_paused_with_header_route(w, lambda o: vs_split(o.get("VirtualService", APP) or {}))
            await promote(w, "1")
            await check_promoted(w)
        assert vs_history(w.observer) == SCHEDULE
        if env.kmock is not None:
            assert_traffic_left_before_scale_down(env.kmock)
        records = command_records(w.observer)
        assert [(r["id"], r["applied"]) for r in records.values()] == [("promote/1", True)]


def assert_traffic_left_before_scale_down(km: Any) -> None:
    """Each time the canary was scaled to zero, the traffic had already left it (in request order)."""
    split: tuple[int, tuple[str, ...]] = (0, ())
    scale_downs = 0
    for request in requests_of(km):
        body = json.loads(request.body or b"null")
        if plural(request) == "virtualservices" and request.method.value in ("PATCH", "POST"):
            http = (body.get("spec") or {}).get("http")
            if http is not None:
                split = vs_split({"spec": {"http": http}})
        if request.subresource == "scale" and (body.get("spec") or {}).get("replicas") == 0:
            scale_downs += 1
            assert split == (0, ()), f"the canary was scaled down while the VirtualService sent it {split}"
    assert scale_downs == 2  # after the initialization, after the promotion


async def check_initialized(w: World) -> None:
    state = await wait_initialized(w)
    primary = w.observer.get("Deployment", f"{APP}-primary")
    assert primary is not None and template_env(primary) == "v1"
    labels = primary["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == f"{APP}-primary" and labels["meshshift.io/revision"] == state["stableRevision"]
    assert primary["spec"]["selector"] == {"matchLabels": {"app": f"{APP}-primary"}}
    assert primary["metadata"]["ownerReferences"][0]["name"] == APP
    services = {name: s["spec"]["selector"] for name, s in w.observer.current["Service"].items()}
    assert services[f"{APP}-primary"] == {"app": f"{APP}-primary"}
    assert services[f"{APP}-canary"] == {"app": APP}
    assert services[APP] == {"app": f"{APP}-primary"}  # the apex selects the primary


async def check_paused_with_header_route(
    w: World, split: Callable[[Observer], tuple[int, tuple[str, ...]]]
) -> None:
    state = await wait_state(w, "the pause for promotion", phase="Paused", stepIndex=PAUSED_AT)
    await w.observer.wait_for(lambda o: split(o)[0] == 50, what="weight 50 applied")
    assert split(w.observer)[1], "the header route is active at the pause"
    canary = w.observer.get("Deployment", APP)
    assert canary is not None and canary["spec"]["replicas"] == 2
    assert w.metrics.hits[("step4", state["canaryRevision"])] == 2  # the step's analysis: count 2


async def check_promoted(w: World, *, completed_event: bool = True) -> None:
    canary = await w.cluster.deployment(APP)
    assert canary is not None
    state = await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
    assert state["history"][-1]["outcome"] == "Promoted"
    primary = await w.observer.wait_for(
        lambda o: (
            o.get("Deployment", f"{APP}-primary")
            if template_env(
                o.get("Deployment", f"{APP}-primary")
                or {
                    "spec": {
                        "template": {"spec": {"containers": [{"env": [{"name": "VERSION", "value": ""}]}]}}
                    }
                }
            )
            == "v2"
            else None
        ),
        what="the primary on v2",
    )
    assert (
        primary["spec"]["template"]["metadata"]["labels"]["meshshift.io/revision"] == state["stableRevision"]
    )
    await w.observer.wait_for(
        lambda o: (o.get("Deployment", APP) or {}).get("spec", {}).get("replicas") == 0,
        what="the canary scaled to zero after the promotion",
    )
    if completed_event:  # written after the scale-down: a daemon stopped in between loses it
        await wait_event(w, "RolloutCompleted")


async def nginx_rollout(env: KubeEnv) -> None:
    """The same rollout on ingress-nginx: canary Ingress annotations at each step."""
    async with world(env) as w:
        await given(w, "nginx")
        async with running_daemon(env):
            await check_initialized(w)
            canary = w.observer.get("Ingress", CANARY_INGRESS)
            assert canary is not None
            backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            assert backend == {"name": f"{APP}-canary", "port": {"number": 80}}
            # Only what ingress-nginx reads on a canary Ingress is copied: not rewrite-target,
            # a location setting it takes from the stable Ingress.
            assert "nginx.ingress.kubernetes.io/rewrite-target" not in canary["metadata"]["annotations"]
            assert canary["metadata"]["annotations"]["kubernetes.io/ingress.class"] == "nginx"
            assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/load-balance"] == "ewma"
            await w.cluster.patch_deployment(APP, new_version("v2"))
            await check_paused_with_header_route(
                w, lambda o: ingress_split(o.get("Ingress", CANARY_INGRESS) or {})
            )
            assert ingress_split(w.observer.get("Ingress", CANARY_INGRESS) or {}) == (
                50,
                ("X-Canary", "true"),
            )
            await promote(w, "1")
            await check_promoted(w)
        assert ingress_history(w.observer) == [
            (0, ()),
            (20, ()),
            (50, ("X-Canary", "true")),
            (80, ()),
            (0, ()),
        ]


async def nginx_custom_prefix(env: KubeEnv) -> None:
    """A custom annotation prefix and canary-weight-total."""
    async with world(env) as w:
        await given(w, "nginx", HEADER_STEPS)
        options = fast_options(nginx_annotation_prefix="canary.example.com", nginx_weight_total=10000)
        async with running_daemon(env, options=options):
            await wait_initialized(w)
            await release_and_pause(w, 2)
            ingress = await w.observer.wait_for(
                lambda o: (
                    i
                    if (
                        (i := o.get("Ingress", CANARY_INGRESS) or {}).get("metadata", {}).get("annotations")
                        or {}
                    ).get("canary.example.com/canary-by-header")
                    else None
                ),
                what="the header annotation",
            )
        annotations = ingress["metadata"]["annotations"]
        assert annotations["canary.example.com/canary"] == "true"
        assert annotations["canary.example.com/canary-weight"] == "3000"
        assert annotations["canary.example.com/canary-weight-total"] == "10000"
        assert annotations["canary.example.com/canary-by-header-value"] == "true"
        assert not [k for k in annotations if k.startswith("nginx.ingress.kubernetes.io/canary")]


async def both_routers(env: KubeEnv) -> None:
    """`meshshift.io/router: istio,nginx`: both data planes follow the same schedule."""
    async with world(env) as w:
        await given(w, "istio,nginx", user_virtual_service=False)
        async with running_daemon(env):
            await wait_initialized(w)
            await release_and_pause(w, what="the pause for promotion")
            await promote(w, "1")
            await check_promoted(w)
        assert vs_history(w.observer) == SCHEDULE  # created by meshshift (none existed)
        vs = w.observer.get("VirtualService", APP)
        assert vs is not None and vs["metadata"]["ownerReferences"][0]["name"] == APP
        assert ingress_history(w.observer) == [
            (0, ()),
            (20, ()),
            (50, ("X-Canary", "true")),
            (80, ()),
            (0, ()),
        ]


# --- two rollouts behind one Ingress ----------------------------------------------------------

SHOP_INGRESS = "shop-public"
SHARED_CANARY = f"{SHOP_INGRESS}-canary"  # what earlier versions wrote, one per stable Ingress
WEB_SHOP_STEPS = "- setWeight: 40\n" + HEADER_ROUTE_STEP + "- pause: {}\n- setWeight: 70\n"
# (Deployment, its path on shop-public, steps, index of the pause, (weight, header) there, weight after).
SHOP_ROLLOUTS = (
    ("api", "/api", "- setWeight: 10\n- pause: {}\n- setWeight: 60\n", 1, (10, ()), 60),
    ("web", "/", WEB_SHOP_STEPS, 2, (40, ("X-Canary", "true")), 70),
)


def shop_ingress() -> dict[str, Any]:
    """One stable Ingress, two Services: `/api` is the api Deployment's, `/` the web one's."""

    def path(prefix: str, service: str) -> dict[str, Any]:
        return {
            "path": prefix,
            "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}},
        }

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": SHOP_INGRESS},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "shop.example", "http": {"paths": [path("/api", "api"), path("/", "web")]}}],
        },
    }


def canary_paths(ingress: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p["path"], p["backend"]["service"]["name"])
        for rule in ingress["spec"].get("rules") or []
        for p in rule["http"]["paths"]
    ]


def shared_canary_of_an_earlier_version(owner: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """`shop-public-canary` as meshshift wrote it before canaries were per rollout: the last writer's
    paths and annotations (here web's, as it was), labelled, owned by its first writer."""
    annotations = dict(canary["metadata"]["annotations"])
    for key in ("meshshift.io/rollout", "meshshift.io/stable-ingress"):  # per-rollout canaries only
        del annotations[key]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": SHARED_CANARY,
            "labels": {"app.kubernetes.io/managed-by": "meshshift"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": canary["spec"],
    }


async def nginx_two_rollouts_one_ingress(env: KubeEnv) -> None:
    """Two Deployments behind one Ingress roll out at once, each on its own canary Ingress;
    a shared canary Ingress an earlier version left mid-rollout is taken over without a gap."""
    names = [name for name, *_ in SHOP_ROLLOUTS]
    canary_of = {name: f"{name}-{SHOP_INGRESS}-canary" for name in names}
    async with world(env) as w:
        await w.cluster.create_ingress(shop_ingress())
        for name, _, steps, *_ in SHOP_ROLLOUTS:
            service = apex_service()
            service["metadata"]["name"] = name
            service["spec"]["selector"] = {"app": name}
            await w.cluster.create_service(service)
            annotations = opt_in("nginx", steps, nginx_ingress=SHOP_INGRESS)
            await w.cluster.create_deployment(deployment(name, annotations=annotations))

        def paused(observer: Observer) -> bool:
            return all(
                (s := observer.state(name)) is not None and s["phase"] == "Paused" and s["stepIndex"] == pause
                for name, _, _, pause, *_ in SHOP_ROLLOUTS
            )

        def split_is(name: str, want: tuple[int, tuple[str, ...]]) -> Callable[[Observer], bool]:
            def check(observer: Observer) -> bool:
                canary = observer.get("Ingress", canary_of[name])
                return canary is not None and ingress_split(canary) == want

            return check

        def scaled_to_zero(name: str) -> Callable[[Observer], bool]:
            return lambda o: (o.get("Deployment", name) or {}).get("spec", {}).get("replicas") == 0

        def promoted(name: str) -> Callable[[Observer], bool]:
            return lambda o: (s := o.state(name)) is not None and s["canaryRevision"] is None

        async with running_daemon(env):
            for name in names:
                await w.observer.wait_for(scaled_to_zero(name), what=f"{name} initialized")
            for name in names:  # both released together: both rollouts run at the same time
                await w.cluster.patch_deployment(name, new_version("v2"))
            await w.observer.wait_for(paused, what="both rollouts at their pause")
            for name, _, _, _, at_pause, _ in SHOP_ROLLOUTS:
                await w.observer.wait_for(split_is(name, at_pause), what=f"{name} at {at_pause}")
        # An earlier version had written web's canary as the shared object: replace it so.
        web = await w.cluster.deployment("web")
        assert web is not None
        web_canary = w.observer.get("Ingress", canary_of["web"])
        assert web_canary is not None
        await w.cluster.create_ingress(shared_canary_of_an_earlier_version(web, web_canary))
        await w.cluster.delete_ingress(canary_of["web"])
        await w.observer.wait_for(lambda o: o.get("Ingress", canary_of["web"]) is None, what="web's deleted")
        async with running_daemon(env):
            await w.observer.wait_for(
                lambda o: o.get("Ingress", SHARED_CANARY) is None, what="the shared canary Ingress migrated"
            )
            taken_over = w.observer.get("Ingress", canary_of["web"])
            assert taken_over is not None and ingress_split(taken_over) == (40, ("X-Canary", "true"))
            for name in names:
                await w.cluster.annotate(name, **{"meshshift.io/command": "promote/1"})
            for name in names:
                await w.observer.wait_for(promoted(name), what=f"{name} promoted")
                await w.observer.wait_for(split_is(name, (0, ())), what=f"{name} back at 0")
        for name, path, _, _, at_pause, after in SHOP_ROLLOUTS:
            versions = w.observer.history["Ingress"][canary_of[name]]
            # Only this rollout's path, on its canary Service, in every version ever written.
            assert {tuple(canary_paths(v)) for v in versions} == {((path, f"{name}-canary"),)}
            weights = distinct([ingress_split(v)[0] for v in versions])
            assert weights == [0, at_pause[0], after, 0], name
            owners = {(r["kind"], r["name"]) for v in versions for r in v["metadata"]["ownerReferences"]}
            assert owners == {("Deployment", name)}
        shared_versions = w.observer.history["Ingress"][SHARED_CANARY]
        assert [ingress_split(v) for v in shared_versions] == [(40, ("X-Canary", "true"))]  # never rewritten
        if env.kmock is not None:
            # web's own canary Ingress was written before the shared one went: no moment without one.
            writes = [
                (r.method.value, r.name or (r.data or {}).get("metadata", {}).get("name"))
                for r in requests_of(env.kmock)
                if plural(r) == "ingresses" and is_write(r)
            ]
            created = [i for i, write in enumerate(writes) if write == ("POST", canary_of["web"])]
            assert len(created) == 2  # at the start, and when the shared one was taken over
            assert writes.index(("DELETE", SHARED_CANARY)) > created[1]
            assert [w for w in writes if w[0] == "DELETE"] == [("DELETE", SHARED_CANARY)]


UNMANAGED_ROUTES: list[dict[str, Any]] = [
    {
        "name": "admin",
        "match": [{"uri": {"prefix": "/admin"}}],
        "route": [{"destination": {"host": f"{APP}-primary"}}],
        "timeout": "3s",
    },
    {
        "name": "api",
        "match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2/api"}}],
        "corsPolicy": {"allowOrigins": [{"exact": "https://shop.example"}], "allowMethods": ["GET", "POST"]},
        "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
        "headers": {"request": {"set": {"x-api": "1"}}},
        "route": [
            {"destination": {"host": f"{APP}-primary", "port": {"number": 80}}, "weight": 100},
            {"destination": {"host": f"{APP}-canary", "port": {"number": 80}}, "weight": 0},
        ],
    },
    {
        "name": "default",
        "timeout": "10s",
        "route": [
            {"destination": {"host": f"{APP}-primary"}, "weight": 100},
            {"destination": {"host": f"{APP}-canary"}, "weight": 0},
        ],
    },
]
HEADER_STEPS = "- setWeight: 30\n" + HEADER_ROUTE_STEP + "- pause: {}\n"


async def unmanaged_content(env: KubeEnv) -> None:
    """Three routes, one unmanaged: only the managed weights change; header routes copy the fields."""
    async with world(env) as w:
        original = virtual_service([dict(r) for r in UNMANAGED_ROUTES])
        await w.cluster.create_virtual_service(original)
        await w.cluster.create_deployment(deployment(annotations=opt_in("istio", HEADER_STEPS)))
        async with running_daemon(env):
            await wait_initialized(w)
            await release_and_pause(w, 2)
            vs = await w.observer.wait_for(
                lambda o: (
                    v
                    if len((v := o.get("VirtualService", APP) or {}).get("spec", {}).get("http", [])) == 5
                    else None
                ),
                what="two header routes",
            )
            check_header_routes(vs, original)
            await promote(w, "1")
            await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
            final = await w.observer.wait_for(
                lambda o: v if len((v := o.get("VirtualService", APP) or {})["spec"]["http"]) == 3 else None,
                what="header routes removed",
            )
        # Back at 100/0 with no header route, the VirtualService is exactly the user's again.
        assert final["spec"] == original["spec"]
        assert final["metadata"]["labels"] == original["metadata"]["labels"]
        assert final["metadata"]["annotations"] == original["metadata"]["annotations"]


def check_header_routes(vs: dict[str, Any], original: dict[str, Any]) -> None:
    http = {r["name"]: r for r in vs["spec"]["http"]}
    # Each header route right before the route it shadows; the unmanaged `admin` stays first.
    assert [r["name"] for r in vs["spec"]["http"]] == [
        "admin",
        f"{HEADER_ROUTE}-api",
        "api",
        f"{HEADER_ROUTE}-default",
        "default",
    ]
    assert http["admin"] == UNMANAGED_ROUTES[0]  # untouched
    for name in ("api", "default"):
        weights = [d["weight"] for d in http[name]["route"]]
        assert weights == [70, 30]
        expected = dict(next(r for r in UNMANAGED_ROUTES if r["name"] == name))
        expected["route"] = http[name]["route"]
        assert http[name] == expected  # only the weights changed
    shadow = http[f"{HEADER_ROUTE}-api"]
    assert shadow["corsPolicy"] == UNMANAGED_ROUTES[1]["corsPolicy"]
    assert shadow["retries"] == UNMANAGED_ROUTES[1]["retries"]
    assert shadow["headers"] == UNMANAGED_ROUTES[1]["headers"]
    assert shadow["route"] == [
        {"destination": {"host": f"{APP}-canary", "port": {"number": 80}}, "weight": 100}
    ]
    assert shadow["match"] == [
        {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "true"}}},
        {"uri": {"prefix": "/v2/api"}, "headers": {"x-canary": {"exact": "true"}}},
    ]
    default_shadow = http[f"{HEADER_ROUTE}-default"]
    assert default_shadow["timeout"] == "10s"
    assert default_shadow["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]  # Istio wants lowercase
    for key in ("hosts", "gateways"):
        assert vs["spec"][key] == original["spec"][key]
    assert vs["metadata"]["labels"] == original["metadata"]["labels"]
    assert vs["metadata"]["annotations"]["owner"] == "mesh-team"


FAILING_STEPS = f"""\
- setWeight: 20
- setHeaderRoute:
    name: {HEADER_ROUTE}
    match:
    - headerName: X-Canary
      headerValue: {{exact: "true"}}
- analysis:
    templates: [{{templateName: web-check}}]
    args: [{{name: check, value: errors}}]
- setWeight: 60
"""


async def failed_analysis(env: KubeEnv) -> None:
    """A failed analysis: 100/0, header routes removed, a Warning Event with the reason."""
    async with world(env) as w:
        w.metrics.values["errors"] = 0.2  # success needs >= 0.9
        await given(w, "istio", FAILING_STEPS)
        async with running_daemon(env):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            state = await wait_state(w, "the abort", phase="Degraded", stage="Idle")
            assert state["abortReason"] == "AnalysisRunFailed"
            failed = await wait_event(w, "AnalysisRunFailed")
            assert failed["type"] == "Warning" and "Failed" in failed["message"]
            aborted = await wait_event(w, "RolloutAborted")
            assert aborted["type"] == "Warning"
            await w.observer.wait_for(
                lambda o: vs_split(o.get("VirtualService", APP) or {}) == (0, ()),
                what="100/0, no header route",
            )
            await w.observer.wait_for(
                lambda o: (o.get("Deployment", APP) or {}).get("spec", {}).get("replicas") == 0,
                what="the canary scaled to zero after the delay",
            )
            primary = w.observer.get("Deployment", f"{APP}-primary")
            assert primary is not None and template_env(primary) == "v1"  # the stable never changed
        # setWeight and setHeaderRoute take effect in one pass: one write.
        assert vs_history(w.observer) == [(0, ()), (20, (HEADER_ROUTE,)), (0, ())]
        reasons = w.observer.event_reasons(APP)
        assert reasons.count("RolloutAborted") == 1 and "TrafficWeightUpdated" in reasons
        assert 60 not in [weight for weight, _ in vs_history(w.observer)]


INVALID = {
    STATE: "true",
    "meshshift.io/router": "istoi",
    "meshshift.io/steps": "- setWeight: 150\n",
}


async def invalid_annotations(env: KubeEnv) -> None:
    """Invalid annotations: a Warning Event with the lint findings; no object changes."""
    async with world(env) as w:
        await w.cluster.create_virtual_service(virtual_service())
        await w.cluster.create_deployment(deployment(annotations=INVALID))
        before = await snapshot_objects(w)
        async with running_daemon(env):
            event = await wait_event(w, "InvalidSpec")
            assert event["type"] == "Warning"
            message = event["message"]
            assert 'metadata.annotations["meshshift.io/router"]: unknown router "istoi"' in message
            assert 'metadata.annotations["meshshift.io/steps"][0].setWeight' in message
            # A valid Deployment next to it is managed; the invalid one still is not.
            await w.cluster.create_deployment(deployment("shop", annotations=opt_in("istio")))
            await w.observer.wait_for(
                lambda o: o.get("Deployment", "shop-primary"), what="the valid one managed"
            )
            await w.observer.wait_for(
                lambda o: (o.get("Deployment", "shop") or {}).get("spec", {}).get("replicas") == 0,
                what="the valid one initialized",
            )
        after = await snapshot_objects(w)
        for key, value in before.items():
            assert after[key] == value, f"{key} changed"
        assert not [k for k in after if k not in before and not k[1].startswith("shop")], "objects created"
        assert len([e for e in w.observer.events(APP) if e["reason"] == "InvalidSpec"]) == 1


async def invalid_update_holds(env: KubeEnv) -> None:
    """A running rollout whose annotations turn invalid holds its weights; fixed, it goes on."""
    async with world(env) as w:
        await given(w, "istio")
        async with running_daemon(env):
            await wait_initialized(w)
            await release_and_pause(w)
            before = await snapshot_objects(w)
            await w.cluster.annotate(APP, **{"meshshift.io/steps": "- setWeight: banana\n"})
            await wait_event(w, "InvalidSpec", "setWeight")
            await promote(w, "while-invalid")
            # Another invalid change, written after the command: once its Event is out, the
            # daemon has seen the command too (a watch delivers changes in order).
            await w.cluster.annotate(APP, **{"meshshift.io/on-failure": "sometimes"})
            await wait_event(w, "InvalidSpec", "on-failure")
            after = await snapshot_objects(w)
            changed = [k for k in before if before[k] != after.get(k) and k != ("Deployment", APP)]
            assert changed == [], f"an invalid spec changed {changed}"
            assert "promote/while-invalid" not in command_records(w.observer)
            # Fixed, the rollout goes on, and the command written meanwhile is acted on once.
            await w.cluster.annotate(APP, **{"meshshift.io/steps": STEPS, "meshshift.io/on-failure": None})
            await check_promoted(w)
            assert command_records(w.observer)["promote/while-invalid"]["applied"] is True


# --- templates and secrets ----------------------------------------------------------------------

SECRET_STEPS = """\
- setWeight: 10
- analysis:
    templates: [{templateName: web-check}]
    args:
    - {name: check, value: with-token}
    - name: token
      valueFrom: {secretKeyRef: {name: metric-token, key: token}}
- pause: {}
"""


async def argo_template_with_secret(env: KubeEnv) -> None:
    """An Argo Rollouts AnalysisTemplate (argoproj.io) with an arg read from a Secret."""
    async with world(env) as w:
        await w.cluster.create_template(w.metrics.template(token=True), group="argoproj.io")
        await w.cluster.create_secret("metric-token", {"token": "s3cr3t"})
        await w.cluster.create_virtual_service(virtual_service())
        await w.cluster.create_deployment(deployment(annotations=opt_in("istio", SECRET_STEPS)))
        async with running_daemon(env):
            await wait_initialized(w)
            state = await release_and_pause(w, 2, what="the pause after the analysis")
        assert [r["phase"] for r in state["analysisRuns"]] == ["Successful"]
        assert w.metrics.tokens == ["s3cr3t", "s3cr3t"]
        runs = json.loads(w.observer.get("ConfigMap", f"{APP}-meshshift-state")["data"]["state.json"])  # type: ignore[index]
        measured = runs["analysisRuns"][state["analysisRuns"][0]["name"]]["results"][0]["measurements"]
        assert all("s3cr3t" not in m["query"] for m in measured)  # the recorded query hides it


def template_source_steps(cluster_template: str) -> str:
    return f"""\
- setWeight: 10
- analysis:
    templates:
    - {{templateName: web-check}}
    - {{templateName: {cluster_template}, clusterScope: true}}
    args:
    - {{name: check, value: sources}}
    - name: token
      valueFrom: {{secretKeyRef: {{name: metric-token, key: token}}}}
- pause: {{}}
"""


async def template_sources(env: KubeEnv) -> None:
    """Every place a template or an arg comes from, in one analysis (the RBAC audit needs each call):
    an argoproj.io AnalysisTemplate (meshshift.io has none of that name), an argoproj.io
    ClusterAnalysisTemplate (likewise), and an arg read from a Secret."""
    group, version, plural = "argoproj.io", TEMPLATE_VERSION, "clusteranalysistemplates"
    cluster_name = f"platform-{env.namespace}"  # cluster-scoped: unique per run on a shared cluster
    async with world(env) as w:
        cluster_template = w.metrics.template(cluster_name)
        cluster_template.update(apiVersion=f"{group}/{version}", kind="ClusterAnalysisTemplate")
        cluster_template["spec"]["metrics"][0]["name"] = "platform"  # metric names are unique per run
        await w.cluster.custom.create_cluster_custom_object(group, version, plural, cluster_template)
        try:
            await w.cluster.create_template(w.metrics.template(token=True), group="argoproj.io")
            await w.cluster.create_secret("metric-token", {"token": "s3cr3t"})
            await w.cluster.create_virtual_service(virtual_service())
            steps = template_source_steps(cluster_name)
            await w.cluster.create_deployment(deployment(annotations=opt_in("istio", steps)))
            async with running_daemon(env):
                await wait_initialized(w)
                state = await release_and_pause(w, 2, what="the pause after the analysis")
        finally:
            await w.cluster.custom.delete_cluster_custom_object(group, version, plural, cluster_name)
    assert [r["phase"] for r in state["analysisRuns"]] == ["Successful"]
    runs = json.loads(w.observer.get("ConfigMap", f"{APP}-meshshift-state")["data"]["state.json"])  # type: ignore[index]
    results = runs["analysisRuns"][state["analysisRuns"][0]["name"]]["results"]
    assert sorted(r["name"] for r in results) == ["check", "platform"]
    assert w.metrics.hits[("sources", state["canaryRevision"])] == 4  # two measurements per template
    assert w.metrics.tokens == ["s3cr3t", "s3cr3t"]  # only the namespaced template asks for it


# --- notifications --------------------------------------------------------------------------

PAGERDUTY_KEY = "R0ut1ngKeyForKube0123456789abcde"  # 32 characters, as PagerDuty's integration keys


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def pagerduty_from_a_secret(env: KubeEnv) -> None:
    """`meshshift.io/pagerduty-secret`: a failed analysis triggers an incident with the routing key
    read from that Secret (the daemon's `get secrets` grant), the Deployment set back to the stable
    resolves it, and the key is in no object the daemon writes."""
    async with receiver(pagerduty=True) as pd, world(env) as w:
        w.metrics.values["errors"] = 0.2  # success needs >= 0.9
        await w.cluster.create_template(w.metrics.template())
        await w.cluster.create_virtual_service(virtual_service())
        await w.cluster.create_secret("pd-routing", {"routing-key": PAGERDUTY_KEY})
        annotations = opt_in("istio", FAILING_STEPS, pagerduty_secret="pd-routing")
        await w.cluster.create_deployment(deployment(annotations=annotations))
        async with running_daemon(env, notifications=NotificationSettings(pagerduty_events_url=pd.url)):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            aborted = await wait_state(w, "the abort", phase="Degraded", stage="Idle")
            await until(lambda: "trigger" in pd.events(), "the PagerDuty trigger")
            await w.cluster.patch_deployment(APP, new_version("v1"))  # undo: back to the stable
            await wait_state(w, "back on the stable", phase="Healthy", canaryRevision=None)
            await until(lambda: "resolve" in pd.events(), "the PagerDuty resolve")
        assert pd.refused == []
        dedup = f"meshshift/{env.namespace}/{APP}/{aborted['canaryRevision']}"
        assert {e["dedup_key"] for e in pd.received} == {dedup}
        assert {e["routing_key"] for e in pd.received} == {PAGERDUTY_KEY}
        trigger = next(e for e in pd.received if e["event_action"] == "trigger")
        assert (
            "check = 0.2, successCondition: result >= 0.9; failed (1) > failureLimit (0)"
            in trigger["payload"]["summary"]
        ), trigger["payload"]["summary"]
        written = json.dumps(
            [versions for kind, objects in w.observer.history.items() for versions in objects.values()]
        )
        assert PAGERDUTY_KEY not in written, "the routing key in an object"


# --- scope -----------------------------------------------------------------------------------


async def scope(env: KubeEnv) -> None:
    """`--namespace` and `--selector`: Deployments out of scope are left alone."""
    elsewhere = with_namespace(env, "elsewhere")
    async with world(env) as w, world(elsewhere) as other:
        await w.cluster.create_deployment(deployment(annotations=opt_in("istio"), labels={"team": "a"}))
        await w.cluster.create_deployment(
            deployment("shop", annotations=opt_in("istio"), labels={"team": "b"})
        )
        await other.cluster.create_deployment(deployment(annotations=opt_in("istio"), labels={"team": "a"}))
        async with running_daemon(env, selector="team=a") as daemon:
            await wait_initialized(w)
            assert sorted(str(key) for key in daemon.running) == [f"{env.namespace}/{APP}"]
        assert w.observer.get("Deployment", "shop-primary") is None
        assert other.observer.get("Deployment", f"{APP}-primary") is None
        assert (await other.cluster.deployment(APP) or {})["spec"]["replicas"] == 2


# --- commands ------------------------------------------------------------------------------


async def command(w: World, value: str) -> None:
    await w.cluster.annotate(APP, **{"meshshift.io/command": value})


def command_records(observer: Observer) -> dict[str, dict[str, Any]]:
    config_map = observer.get("ConfigMap", f"{APP}-meshshift-state") or {}
    text = (config_map.get("data") or {}).get("commands.json")
    return {r["id"]: r for r in json.loads(text)} if text else {}


async def wait_command(w: World, value: str) -> dict[str, Any]:
    return await w.observer.wait_for(
        lambda o: command_records(o).get(value), what=f"command {value} recorded"
    )


async def commands(env: KubeEnv) -> None:
    """abort, retry, promote-full and a bad value through `meshshift.io/command`, each acted on once."""
    async with world(env) as w:
        await given(w, "istio")
        async with running_daemon(env):
            await wait_initialized(w)
            await release_and_pause(w)
            await command(w, "abort:1")
            assert (await wait_command(w, "abort:1"))["applied"] is True
            state = await wait_state(w, "the abort", phase="Degraded", abortReason="AbortedByUser")
            await w.observer.wait_for(
                lambda o: vs_split(o.get("VirtualService", APP) or {}) == (0, ()),
                what="traffic back on the stable",
            )
            await command(w, "retry:1")
            assert (await wait_command(w, "retry:1"))["applied"] is True
            await wait_state(w, "the retried rollout paused", phase="Paused", stepIndex=PAUSED_AT, attempt=2)
            await command(w, "promote-full/2026-11-26T10:00:00Z")
            record = await wait_command(w, "promote-full/2026-11-26T10:00:00Z")
            assert record["applied"] is True and record["command"] == "promote-full"
            await check_promoted(w)
            # The same value again (after another one) is not a new command.
            await command(w, "nonsense")
            bad = await wait_command(w, "nonsense")
            assert bad["applied"] is False and "promote, promote-full, abort or retry" in bad["message"]
            await wait_event(w, "CommandIgnored", "nonsense")
            events_before = len(w.observer.events(APP))
            await command(w, "abort:1")
            await command(w, "promote/3")
            assert (await wait_command(w, "promote/3"))["applied"] is False  # nothing to promote
        final = w.observer.state(APP)
        assert final is not None and final["phase"] == "Healthy" and final["attempt"] == state["attempt"] + 1
        assert final["handledCommands"].count("abort:1") == 1
        reasons = [e["reason"] for e in w.observer.events(APP)][events_before:]
        assert reasons.count("CommandApplied") == 0 and "RolloutAborted" not in reasons


# --- restarts --------------------------------------------------------------------------------


def with_namespace(env: KubeEnv, namespace: str) -> KubeEnv:
    """The same API server, another namespace (another, independent run)."""
    if env.real:
        return dataclasses.replace(env, namespace=f"{env.namespace}-{namespace}")
    kubeconfig = write_kubeconfig(env.kubeconfig.with_name(f"kubeconfig-{namespace}"), env.url, namespace)
    return dataclasses.replace(env, namespace=namespace, kubeconfig=kubeconfig)


def normalized(obj: dict[str, Any] | None) -> Any:
    """An object without what differs between two equal runs (ids, versions, times, namespace)."""
    if obj is None:
        return None
    obj = json.loads(json.dumps(obj))
    meta = obj.get("metadata") or {}
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "namespace", "managedFields"):
        meta.pop(key, None)
    for owner in meta.get("ownerReferences") or []:
        owner.pop("uid", None)
    obj.pop("status", None)
    return obj


def state_summary(state: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "phase",
        "stage",
        "stableRevision",
        "canaryRevision",
        "attempt",
        "stepIndex",
        "desiredWeight",
        "headerRoutes",
        "mirrorRoutes",
        "canaryScale",
        "handledCommands",
        "abortReason",
    )
    summary = {k: state.get(k) for k in keys}
    summary["history"] = [(h["revision"], h["outcome"]) for h in state.get("history", [])]
    summary["runs"] = [(r["name"], r["phase"]) for r in state.get("analysisRuns", [])]
    return summary


def measurements(observer: Observer, run: str) -> int:
    config_map = observer.get("ConfigMap", f"{APP}-meshshift-state") or {}
    runs = json.loads(config_map["data"]["state.json"]).get("analysisRuns", {})
    return sum(len(result["measurements"]) for result in runs[run]["results"])


@dataclasses.dataclass
class RunRecord:
    """What one run of the restart rollout left behind."""

    vs_history: list[Any]
    objects: dict[tuple[str, str], Any]
    state: dict[str, Any]
    events: list[tuple[str, str]]
    step4_measurements: int
    daemons: int  # how many daemons ran it in turn


async def restart_rollout(env: KubeEnv, *, stops: str) -> RunRecord:
    """The istio rollout; `stops` is "never", "after-each-step" (effects seen) or "at-each-state-write"."""
    async with world(env) as w:
        await given(w, "istio")
        daemons = 1
        if stops == "never":
            async with running_daemon(env):
                await wait_initialized(w)
                await release_and_pause(w)
                await promote(w, "1")
                await check_promoted(w)
        elif stops == "after-each-step":
            daemons = await stop_after_each_step(env, w)
        else:
            daemons = await stop_at_each_state_write(env, w)
        state = w.observer.state(APP)
        assert state is not None
        run = next(r["name"] for r in state["analysisRuns"] if r["name"].endswith("-step5"))
        objects = {
            (kind, name): normalized(obj)
            for kind in ("Deployment", "Service", "VirtualService")
            for name, obj in w.observer.current[kind].items()
        }
        events = [
            (e["reason"], e["message"])
            for e in sorted(w.observer.events(APP), key=lambda e: e["metadata"]["name"])
        ]
        return RunRecord(
            vs_history(w.observer),
            objects,
            state_summary(state),
            events,
            measurements(w.observer, run),
            daemons,
        )


async def stop_after_each_step(env: KubeEnv, w: World) -> int:
    """One daemon per step: each is stopped once its step has taken effect (state, traffic, Event)."""

    def seen(reason: str, count: int = 1) -> Callable[[Observer], bool]:
        return lambda o: o.event_reasons(APP).count(reason) >= count

    async def one_daemon(*conditions: Callable[[Observer], Any], what: str) -> None:
        async with running_daemon(env):
            for condition in conditions:
                await w.observer.wait_for(condition, what=what)

    await one_daemon(state_seen(phase="Healthy", stage="Idle"), seen("Initialized"), what="initialized")
    await w.cluster.patch_deployment(APP, new_version("v2"))
    w.sim.hold(APP)  # the canary's pods do not get ready yet
    await one_daemon(
        state_seen(stage="Stepping", stepIndex=0),
        seen("RolloutUpdated"),
        lambda o: (o.get("Deployment", APP) or {})["spec"]["replicas"] == 2,
        what="the canary scaled up",
    )
    await w.sim.release(APP)
    await one_daemon(
        state_seen(stepIndex=1),
        seen("TrafficWeightUpdated"),
        seen("RolloutPaused"),
        lambda o: vs_split(o.get("VirtualService", APP) or {})[0] == 20,
        what="step 1",
    )
    await one_daemon(
        state_seen(stepIndex=4), seen("AnalysisRunStarted"), seen("TrafficWeightUpdated", 2), what="analysis"
    )
    await one_daemon(
        state_seen(stepIndex=PAUSED_AT, phase="Paused"),
        seen("RolloutPaused", 2),
        seen("AnalysisRunSuccessful"),
        what="the pause",
    )
    hits = sum(n for (check, _), n in w.metrics.hits.items() if check == "step4")
    await promote(w, "1")  # written while no daemon runs
    w.sim.hold(f"{APP}-primary")
    await one_daemon(
        state_seen(stage="Promoting"),
        seen("RolloutPromoting"),
        seen("CommandApplied"),
        lambda o: template_env(o.get("Deployment", f"{APP}-primary") or {}) == "v2",
        what="promoting",
    )
    await w.sim.release(f"{APP}-primary")
    async with running_daemon(env):
        await check_promoted(w)
        await w.observer.wait_for(seen("RolloutCompleted"), what="completed")
    # The finished analysis was not measured again by any later daemon.
    assert sum(n for (check, _), n in w.metrics.hits.items() if check == "step4") == hits
    return 7


async def stop_at_each_state_write(env: KubeEnv, w: World) -> int:
    """One daemon per state change, stopped as soon as the change is written (before its effects)."""

    def key(state: dict[str, Any] | None) -> Any:
        if state is None:
            return None
        return (
            state["phase"],
            state["stage"],
            state["stepIndex"],
            state["desiredWeight"],
            state["canaryRevision"],
        )

    last: Any = key(w.observer.state(APP))
    patched = promoted = False
    stops = 0
    while True:

        def changed(observer: Observer, last: Any = last) -> dict[str, Any] | None:
            state = observer.state(APP)
            return state if key(state) != last or is_done(observer) else None

        async with running_daemon(env):
            state = await w.observer.wait_for(changed, what="a state change")
        stops += 1
        assert stops < 40, "the rollout does not advance across restarts"
        last = key(state)
        if state["phase"] == "Healthy" and state["stage"] == "Idle" and not patched:
            await w.observer.wait_for(lambda o: o.get("Deployment", f"{APP}-primary"), what="primary")
            await w.cluster.patch_deployment(APP, new_version("v2"))
            patched = True
        if state["stepIndex"] == PAUSED_AT and state["phase"] == "Paused" and not promoted:
            await promote(w, "1")
            promoted = True
        if is_done(w.observer):
            break
    async with running_daemon(env):
        await check_promoted(w, completed_event=False)
    return stops + 1


def is_done(observer: Observer) -> bool:
    state = observer.state(APP)
    return bool(
        state
        and state["phase"] == "Healthy"
        and state["canaryRevision"] is None
        and state.get("history")
        and state["history"][-1]["outcome"] == "Promoted"
    )


async def restarts(env: KubeEnv) -> None:
    """Stopping the daemon at each step (or mid-action) ends exactly as an uninterrupted run."""
    reference = await restart_rollout(with_namespace(env, "ref"), stops="never")
    assert reference.vs_history == SCHEDULE and reference.step4_measurements == 2
    stepwise = await restart_rollout(with_namespace(env, "steps"), stops="after-each-step")
    assert stepwise.vs_history == reference.vs_history
    assert stepwise.objects == reference.objects
    assert stepwise.state == reference.state
    assert stepwise.events == reference.events  # no step repeated or skipped
    assert stepwise.step4_measurements == 2
    abrupt = await restart_rollout(with_namespace(env, "abrupt"), stops="at-each-state-write")
    assert abrupt.vs_history == reference.vs_history
    assert abrupt.objects == reference.objects
    assert abrupt.state == reference.state
    assert abrupt.step4_measurements == 2
    print(
        f"restarts: {stepwise.daemons} daemons (one per step), {abrupt.daemons} daemons (one per state write)"
    )


# --- injected faults (kmock only) ------------------------------------------------------------

EXPECTED_REASONS = [
    "Initializing",
    "Initialized",
    "RolloutUpdated",
    "TrafficWeightUpdated",
    "RolloutStepCompleted",  # 1/8 setWeight: 20
    "RolloutPaused",
    "RolloutStepCompleted",  # 2/8 pause: 0.5s
    "RolloutResumed",
    "HeaderRouteSet",
    "RolloutStepCompleted",  # 3/8 setHeaderRoute
    "TrafficWeightUpdated",
    "RolloutStepCompleted",  # 4/8 setWeight: 50
    "AnalysisRunStarted",
    "AnalysisRunSuccessful",
    "RolloutStepCompleted",  # 5/8 analysis
    "RolloutPaused",
    "RolloutStepCompleted",  # 6/8 pause, promoted
    "RolloutResumed",
    "CommandApplied",
    "TrafficWeightUpdated",
    "RolloutStepCompleted",  # 7/8 setWeight: 80
    "HeaderRouteRemoved",
    "RolloutStepCompleted",  # 8/8 setHeaderRoute (removed)
    "RolloutPromoting",
    "RolloutCompleted",
]
VS_RESOURCE = "networking.istio.io/v1beta1/virtualservices"
CM_RESOURCE = "v1/configmaps"
DEPLOY_RESOURCE = "apps/v1/deployments"
EVENT_RESOURCE = "v1/events"


def requests_of(km: Any, identity: str | None = None) -> list[Any]:
    """The requests meshshift daemons sent (by User-Agent), in order."""
    result = []
    for request in list(km):
        agent = request.headers.get("User-Agent", "")
        if agent.startswith("meshshift/") and (identity is None or f"({identity})" in agent):
            result.append(request)
    return result


def is_write(request: Any) -> bool:
    return request.method.value in ("POST", "PUT", "PATCH", "DELETE")


def plural(request: Any) -> str | None:
    return request.resource.plural if request.resource is not None else None


def from_daemon(request: Any) -> bool:
    return str(request.headers.get("User-Agent", "")).startswith("meshshift/")


def daemon_calls(km: Any, *criteria: Any) -> tuple[Any, int]:
    """The view of the daemons' requests matching `criteria`, and how many there were so far.

    A fault for "the next N" such requests is `view[n : n + N] << ...`.
    """
    view = km[(from_daemon, *criteria)]
    return view, len(view)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return k8s_status(code, reason, message)


async def injected_faults(env: KubeEnv) -> None:
    """409s, 500s, timeouts (answers lost after the write) and 410s: nothing lost, nothing twice."""
    km = env.kmock
    assert km is not None, "fault injection needs the emulator"
    gate = asyncio.Event()  # hung requests wait on it until the end

    async def hang() -> None:
        await gate.wait()

    async with world(env) as w:
        await given(w, "istio")
        try:
            async with running_daemon(env, options=fast_options(request_timeout=1.0)) as daemon:
                assert daemon.informer is not None
                await wait_initialized(w)
                # The step-1 traffic write meets a conflict; the state saves meet two 500s;
                # the primary's next read hangs; the next Event's answer is lost after it was written.
                view, n = daemon_calls(km, "patch", kmock.resource(VS_RESOURCE))
                view[n : n + 1] << 409 << status(409, "Conflict", "modified")
                view, n = daemon_calls(km, "patch", kmock.resource(CM_RESOURCE))
                view[n : n + 2] << 500 << status(500, "InternalError", "etcd")
                view, n = daemon_calls(
                    km, "get", kmock.resource(DEPLOY_RESOURCE), kmock.name(f"{APP}-primary")
                )
                view[n : n + 1] << hang
                view, n = daemon_calls(km, "post", kmock.resource(EVENT_RESOURCE))
                view[n : n + 1] << hang
                await w.cluster.patch_deployment(APP, new_version("v2"))
                await w.observer.wait_for(
                    lambda o: vs_split(o.get("VirtualService", APP) or {})[0] == 20, what="weight 20"
                )
                # The next traffic write fails beyond the client's retries: the controller
                # backs off and re-asserts everything (reading the VirtualService afresh).
                view, n = daemon_calls(km, "patch", kmock.resource(VS_RESOURCE))
                view[n : n + 6] << 500 << status(500, "InternalError", "down")
                await wait_state(w, "the pause", phase="Paused", stepIndex=PAUSED_AT)
                # The Deployment watch expires (410) mid-stream, and once more at reconnect,
                # while the promote command is written: the relists must not lose it.
                view, n = daemon_calls(km, kmock.action.WATCH, kmock.resource(DEPLOY_RESOURCE))
                view[n : n + 1] << 410 << status(410, "Expired", "too old resource version")
                await km.send_watch_event(
                    DEPLOY_RESOURCE, "ERROR", status(410, "Expired", "too old"), namespace=env.namespace
                )
                await promote(w, "1")
                # The weight-80 write lands but its answer is lost; so does a state save's.
                view, n = daemon_calls(km, "patch", kmock.resource(VS_RESOURCE))
                view[n : n + 1] << hang
                view, n = daemon_calls(km, "patch", kmock.resource(CM_RESOURCE))
                view[n : n + 1] << hang
                await check_promoted(w)
                assert daemon.informer.stats.expired == 2
                assert daemon.informer.stats.lists == 3
        finally:
            gate.set()
        assert vs_history(w.observer) == SCHEDULE
        assert w.observer.event_reasons(APP) == EXPECTED_REASONS
        assert w.metrics.hits[("step4", w.observer.state(APP)["stableRevision"])] == 2  # type: ignore[index]
        sent = requests_of(km)
        conflicted = next(
            i for i, r in enumerate(sent) if plural(r) == "virtualservices" and r.method.value == "PATCH"
        )
        after = [
            (r.method.value, plural(r)) for r in sent[conflicted + 1 :] if plural(r) == "virtualservices"
        ]
        assert after[:2] == [("GET", "virtualservices"), ("PATCH", "virtualservices")]  # read again, retry


# --- leader election ---------------------------------------------------------------------------


async def leader_election(env: KubeEnv) -> None:
    """Two daemons: only the leader writes; when it stops, the other takes over and finishes."""
    km = env.kmock
    async with world(env) as w:
        await given(w, "istio")
        async with contextlib.AsyncExitStack() as stack_b:
            async with running_daemon(env, "daemon-a") as a:
                b = await stack_b.enter_async_context(running_daemon(env, "daemon-b", wait_leading=False))
                await wait_initialized(w)
                await release_and_pause(w)
                # Stopped mid-pass, a daemon leaves that pass's Events unwritten (the state and
                # traffic are re-asserted by the next one, Events are not): let it finish.
                await w.observer.wait_for(
                    lambda o: o.event_reasons(APP).count("RolloutPaused") == 2, what="the pause's Event"
                )
                assert a.leading and not b.leading and not b.running
                stopped_at = len(list(km)) if km is not None else 0
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(b.leader.wait(), HANG_GUARD)
            takeover = loop.time() - started
            await promote(w, "1")
            await check_promoted(w)
        print(f"leader takeover after a clean stop: {takeover:.2f}s (lease duration 2s)")
        assert vs_history(w.observer) == SCHEDULE
        assert w.observer.event_reasons(APP) == EXPECTED_REASONS
        if km is not None:
            sent = list(km)
            before, after = requests_of_list(sent[:stopped_at]), requests_of_list(sent[stopped_at:])
            assert not [r for r in before if is_write(r) and "(daemon-b)" in r.headers["User-Agent"]]
            assert [r for r in before if is_write(r) and plural(r) != "leases"], "daemon-a did the writing"
            assert not [
                r
                for r in after
                if is_write(r) and "(daemon-a)" in r.headers["User-Agent"] and plural(r) != "leases"
            ]


async def leader_crash(env: KubeEnv) -> None:
    """A daemon process stops on SIGTERM (releasing the Lease); one killed -9 is replaced after the lease."""
    async with world(env) as w:
        await given(w, "istio")
        async with daemon_process(env, "proc-a") as first:
            await w.observer.wait_for(lambda o: lease_holder(o) == "proc-a", what="proc-a leading")
            await wait_initialized(w)
            first.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.wait(), HANG_GUARD) == 0
            await w.observer.wait_for(lambda o: not lease_holder(o), what="the lease released")
        async with daemon_process(env, "proc-b") as second:
            await w.observer.wait_for(lambda o: lease_holder(o) == "proc-b", what="proc-b leading")
            async with running_daemon(env, "daemon-c", wait_leading=False) as standby:
                await release_and_pause(w)
                await w.observer.wait_for(
                    lambda o: o.event_reasons(APP).count("RolloutPaused") == 2, what="the pause's Event"
                )
                assert not standby.leading
                loop = asyncio.get_running_loop()
                second.kill()  # no release: the standby must wait the lease out
                killed_at = loop.time()
                await asyncio.wait_for(standby.leader.wait(), HANG_GUARD)
                takeover = loop.time() - killed_at
                await promote(w, "1")
                await check_promoted(w)
        print(f"leader takeover after kill -9: {takeover:.2f}s (lease duration 2s)")
        assert vs_history(w.observer) == SCHEDULE
        assert w.observer.event_reasons(APP) == EXPECTED_REASONS


def requests_of_list(requests: Sequence[Any]) -> list[Any]:
    return [r for r in requests if r.headers.get("User-Agent", "").startswith("meshshift/")]


async def snapshot_objects(w: World) -> dict[tuple[str, str], Any]:
    """Every object's spec (or data) by (kind, name), read fresh."""
    c = w.cluster
    result: dict[tuple[str, str], Any] = {}
    for item in (await c.apps.list_namespaced_deployment(c.ns)).items:
        d = c.api.sanitize_for_serialization(item)
        result[("Deployment", d["metadata"]["name"])] = (d["spec"], d["metadata"].get("annotations"))
    for item in (await c.core.list_namespaced_service(c.ns)).items:
        s = c.api.sanitize_for_serialization(item)
        result[("Service", s["metadata"]["name"])] = s["spec"]
    for item in (await c.core.list_namespaced_config_map(c.ns)).items:
        m = c.api.sanitize_for_serialization(item)
        result[("ConfigMap", m["metadata"]["name"])] = m.get("data")
    for item in (await c.net.list_namespaced_ingress(c.ns)).items:
        i = c.api.sanitize_for_serialization(item)
        result[("Ingress", i["metadata"]["name"])] = (i["spec"], i["metadata"].get("annotations"))
    listing = await c.custom.list_namespaced_custom_object(
        "networking.istio.io", "v1beta1", c.ns, "virtualservices"
    )
    for v in listing["items"]:
        result[("VirtualService", v["metadata"]["name"])] = (v["spec"], v["metadata"].get("annotations"))
    return result


async def with_timeout(awaitable: Awaitable[Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, HANG_GUARD)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


SCENARIOS: dict[str, Callable[[KubeEnv], Awaitable[None]]] = {
    "istio_rollout": istio_rollout,
    "nginx_rollout": nginx_rollout,
    "both_routers": both_routers,
    "nginx_custom_prefix": nginx_custom_prefix,
    "nginx_two_rollouts_one_ingress": nginx_two_rollouts_one_ingress,
    "unmanaged_content": unmanaged_content,
    "failed_analysis": failed_analysis,
    "invalid_annotations": invalid_annotations,
    "invalid_update_holds": invalid_update_holds,
    "restarts": restarts,
    "leader_election": leader_election,
    "leader_crash": leader_crash,
    "commands": commands,
    "scope": scope,
    "argo_template_with_secret": argo_template_with_secret,
    "template_sources": template_sources,
    "pagerduty_from_a_secret": pagerduty_from_a_secret,
}
KMOCK_ONLY: dict[str, Callable[[KubeEnv], Awaitable[None]]] = {"injected_faults": injected_faults}


async def revision_before_stable_ready(env: KubeEnv) -> None:
    """Revision B arrives while the primary of revision A is still starting: A stays the stable
    (chosen at first sight, as Argo marks it at its first reconcile) and B goes through every
    step, with its analysis, before it is promoted."""
    async with world(env) as w:
        await given(w, "istio")
        w.sim.hold(f"{APP}-primary")  # A's primary pods do not get ready yet
        async with running_daemon(env):
            first = await wait_state(w, "initializing", stage="Initializing")
            await w.observer.wait_for(
                lambda o: (
                    template_env(o.get("Deployment", f"{APP}-primary") or deployment(version="")) == "v1"
                ),
                what="the primary created with v1",
            )
            await w.cluster.patch_deployment(APP, new_version("v2"))
            await w.observer.wait_for(
                lambda o: template_env(o.get("Deployment", APP) or deployment(version="")) == "v2",
                what="v2 written",
            )
            await w.sim.release(f"{APP}-primary")
            state = await check_paused_with_header_route_state(w)
            assert state["stableRevision"] == first["stableRevision"]  # A stayed the stable
            assert state["canaryRevision"] != first["stableRevision"]
            assert w.metrics.hits[("step4", state["canaryRevision"])] == 2  # B's step analysis ran
            await promote(w, "1")
            await check_promoted(w)
        assert vs_history(w.observer) == SCHEDULE  # every step of the schedule, in order
        primary_versions = distinct(
            [template_env(d) for d in w.observer.history["Deployment"][f"{APP}-primary"]]
        )
        assert primary_versions == ["v1", "v2"]  # B reached the primary only at promotion
        assert "Initialized" in w.observer.event_reasons(APP)


async def check_paused_with_header_route_state(w: World) -> dict[str, Any]:
    await check_paused_with_header_route(w, lambda o: vs_split(o.get("VirtualService", APP) or {}))
    state = w.observer.state(APP)
    assert state is not None
    return state
