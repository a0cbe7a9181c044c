"""Blue-green rollouts of annotated Deployments, in Kubernetes mode, through the emulator.

Each scenario follows the objects after every phase: the preview (the canary Deployment at
previewReplicaCount, the preview Service on its pods, 0% of user traffic, the preview header
route), the switch (one router write: Istio 100/0 -> 0/100, NGINX canary-weight 0 -> 100), the
post-promotion analysis, and the end (the primary on the new revision, traffic handed back to
it, the canary scaled down, the preview Service on the primary again), or the switch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.kube.crd_schemas import crd_errors
from tests.kube.harness import (
    HANG_GUARD,
    KubeEnv,
    Observer,
    World,
    daemon_process,
    lease_holder,
    running_daemon,
    world,
)
from tests.kube.router_scenarios import canary_weight as traefik_canary_weight
from tests.kube.router_scenarios import (
    copies,
    http_route,
    ingress_route,
    route_canary_weight,
    shadows,
    users_traefik_service,
)
from tests.kube.scenarios import (
    APP,
    CANARY_INGRESS,
    STATE,
    apex_service,
    deployment,
    distinct,
    ingress_split,
    new_version,
    plural,
    promote,
    requests_of,
    stable_ingress,
    template_env,
    virtual_service,
    vs_split,
    wait_initialized,
    wait_state,
)

PREVIEW = f"{APP}-preview"
PREVIEW_HEADER = ("X-Preview", "true")
BLUE_GREEN = """\
previewService: web-preview
autoPromotionEnabled: false
previewReplicaCount: 1
scaleDownDelaySeconds: 1
prePromotionAnalysis:
  templates: [{templateName: web-check}]
  args: [{name: check, value: pre}]
postPromotionAnalysis:
  templates: [{templateName: web-post}]
  args: [{name: check, value: post}]
previewHeaderRoute:
  name: preview
  match: [{headerName: X-Preview, headerValue: {exact: "true"}}]
"""
Split = tuple[int, tuple[str, ...]]


def opt_in(router: str, blue_green: str = BLUE_GREEN) -> dict[str, str]:
    values = {STATE: "true", "meshshift.io/router": router, "meshshift.io/blue-green": blue_green}
    if router == "nginx":
        values["meshshift.io/nginx-ingress"] = APP
    return values


async def given(w: World, router: str, *, post_count: int = 2, post_interval: str = "200ms") -> None:
    await w.cluster.create_template(w.metrics.template())
    await w.cluster.create_template(w.metrics.template("web-post", count=post_count, interval=post_interval))
    if router == "istio":
        await w.cluster.create_virtual_service(virtual_service())
    else:
        await w.cluster.create_service(apex_service())
        await w.cluster.create_ingress(stable_ingress())
    await w.cluster.create_deployment(deployment(annotations=opt_in(router)))


def split_of(router: str) -> Callable[[dict[str, Any]], Split]:
    """(canary weight of the user route, the header routes meshshift added) of the router's object."""
    if router == "istio":
        return vs_split
    return ingress_split


def router_object(router: str) -> tuple[str, str]:
    return ("VirtualService", APP) if router == "istio" else ("Ingress", CANARY_INGRESS)


def history(observer: Observer, router: str) -> list[Split]:
    kind, name = router_object(router)
    return distinct([split_of(router)(v) for v in observer.history[kind][name]])


def current_split(observer: Observer, router: str) -> Split:
    kind, name = router_object(router)
    return split_of(router)(observer.get(kind, name) or {})


def header_of(router: str) -> tuple[str, ...]:
    return ("preview",) if router == "istio" else PREVIEW_HEADER


def selector(observer: Observer, service: str) -> dict[str, str] | None:
    found = observer.get("Service", service)
    return None if found is None else found["spec"].get("selector")


def replicas(observer: Observer, name: str = APP) -> int | None:
    found = observer.get("Deployment", name)
    return None if found is None else found["spec"].get("replicas")


def switch_events(observer: Observer) -> list[str]:
    return [e["message"] for e in observer.events(APP) if e["reason"] == "SwitchService"]


async def check_preview(w: World, router: str) -> dict[str, Any]:
    """v2 is up on the preview only, analysed, and paused for promotion."""
    state = await wait_state(w, "the pause before the switch", stage="Preview", pauseReason="BlueGreenPause")
    assert state["phase"] == "Paused" and state["desiredWeight"] == 0
    await w.observer.wait_for(
        lambda o: current_split(o, router) == (0, header_of(router)), what="the preview header route"
    )
    assert replicas(w.observer) == 1, "the preview runs previewReplicaCount"
    assert selector(w.observer, PREVIEW) == {"app": APP}, "the preview Service selects the preview's pods"
    assert selector(w.observer, APP) == {"app": f"{APP}-primary"}, "the apex stays on the stable"
    assert w.metrics.hits[("pre", state["canaryRevision"])] == 2  # the pre-promotion analysis: count 2
    assert not [hit for hit in w.metrics.hits if hit[0] == "post"]
    primary = w.observer.get("Deployment", f"{APP}-primary")
    assert primary is not None and template_env(primary) == "v1"
    return state


async def check_done(w: World, router: str, revision: str) -> None:
    """v2 is the stable: the primary runs it, traffic is back on it, the preview went."""
    await wait_state(w, "the promotion", phase="Healthy", stage="Idle", stableRevision=revision)
    await w.observer.wait_for(lambda o: replicas(o) == 0, what="the canary scaled to zero")
    primary = w.observer.get("Deployment", f"{APP}-primary")
    assert primary is not None and template_env(primary) == "v2"
    await w.observer.wait_for(lambda o: current_split(o, router) == (0, ()), what="the hand-back")
    await w.observer.wait_for(
        lambda o: selector(o, PREVIEW) == {"app": f"{APP}-primary"}, what="the preview Service on the primary"
    )


def assert_full_scale_before_the_switch(env: KubeEnv, router: str) -> None:
    """The canary was scaled to its full replica count before the write that switched user traffic."""
    assert env.kmock is not None
    scaled_full = False
    for request in requests_of(env.kmock):
        body = json.loads(request.body or b"null") or {}
        if request.subresource == "scale" and (body.get("spec") or {}).get("replicas") == 2:
            scaled_full = True
        if _switches(request, body, router):
            assert scaled_full, "user traffic was switched before the preview ran its full replica count"
            return
    raise AssertionError("no write switched user traffic")


def _switches(request: Any, body: dict[str, Any], router: str) -> bool:
    if request.method.value not in ("PATCH", "PUT", "POST"):
        return False
    if router == "istio" and plural(request) == "virtualservices":
        http = (body.get("spec") or {}).get("http")
        return http is not None and vs_split({"spec": {"http": http}})[0] == 100
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return (
        plural(request) == "ingresses"
        and annotations.get("nginx.ingress.kubernetes.io/canary-weight") == "100"
    )


def router_writes(env: KubeEnv, router: str, *, until_the_switch: bool = False) -> int:
    """How many writes the daemons sent to the router's object (up to the one that switched)."""
    assert env.kmock is not None
    kind = "virtualservices" if router == "istio" else "ingresses"
    name = APP if router == "istio" else CANARY_INGRESS
    count = 0
    for request in requests_of(env.kmock):
        if plural(request) == kind and request.method.value in ("PATCH", "PUT") and request.name == name:
            count += 1
            if until_the_switch and _switches(request, json.loads(request.body or b"null") or {}, router):
                return count
    assert not until_the_switch, "no write switched user traffic"
    return count


# --- scenarios ----------------------------------------------------------------------------------


async def healthy(env: KubeEnv, router: str) -> None:
    """Preview, pre-promotion analysis, promote, one-write switch, post-promotion analysis, done."""
    async with world(env) as w:
        await given(w, router)
        async with running_daemon(env):
            await wait_initialized(w)
            assert selector(w.observer, PREVIEW) == {"app": f"{APP}-primary"}, (
                "at rest the preview is the stable"
            )
            await w.cluster.patch_deployment(APP, new_version("v2"))
            state = await check_preview(w, router)
            writes_before = router_writes(env, router)
            await promote(w, "1")
            switched = await w.observer.wait_for(
                lambda o: _stored(o, stage="PostPromotion"), what="the switch"
            )
            assert switched["desiredWeight"] == 100 and switched["switchedAt"] is not None
            # From the recorded versions: the hand-back may follow the switch before a poll.
            await w.observer.wait_for(
                lambda o: any(weight == 100 for weight, _ in history(o, router)), what="the switch applied"
            )
            # One write moved all user traffic: the first write after the pause.
            assert router_writes(env, router, until_the_switch=True) == writes_before + 1
            await check_done(w, router, state["canaryRevision"])
        assert history(w.observer, router) == [
            (0, ()),
            (0, header_of(router)),
            (100, header_of(router)),
            (0, ()),
        ]
        assert w.metrics.hits[("post", state["canaryRevision"])] == 2
        assert_full_scale_before_the_switch(env, router)
        stable, canary = state["stableRevision"], state["canaryRevision"]
        assert switch_events(w.observer) == [
            f"switched user traffic from revision {stable} to revision {canary}"
        ]
        reasons = w.observer.event_reasons(APP)
        assert "PreviewReady" in reasons and "RolloutCompleted" in reasons


async def post_promotion_failure(env: KubeEnv, router: str) -> None:
    """A failed post-promotion analysis switches all user traffic back at once; the stable never changed."""
    async with world(env) as w:
        await given(w, router)
        w.metrics.values["post"] = 0.0
        async with running_daemon(env):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            state = await check_preview(w, router)
            await promote(w, "1")
            aborted = await wait_state(w, "the abort", phase="Degraded", stage="Idle")
            assert aborted["abortReason"] == "AnalysisRunFailed" and aborted["switchedAt"] is None
            await w.observer.wait_for(lambda o: current_split(o, router) == (0, ()), what="the switch back")
            await w.observer.wait_for(lambda o: replicas(o) == 0, what="the preview scaled down")
            await w.observer.wait_for(
                lambda o: selector(o, PREVIEW) == {"app": f"{APP}-primary"}, what="the preview on the primary"
            )
        assert history(w.observer, router) == [
            (0, ()),
            (0, header_of(router)),
            (100, header_of(router)),
            (0, ()),
        ]
        versions = w.observer.history["Deployment"][f"{APP}-primary"]
        assert {template_env(v) for v in versions} == {"v1"}, "the stable kept running the old revision"
        messages = switch_events(w.observer)
        assert len(messages) == 2 and "back to the stable revision" in messages[1]
        assert state["stableRevision"] in messages[1]


async def pre_promotion_failure(env: KubeEnv, router: str) -> None:
    """A failed pre-promotion analysis aborts before any user request could reach the new revision."""
    async with world(env) as w:
        await given(w, router)
        w.metrics.values["pre"] = 0.0
        async with running_daemon(env):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            aborted = await wait_state(w, "the abort", phase="Degraded", stage="Idle")
            assert aborted["abortReason"] == "AnalysisRunFailed"
            await w.observer.wait_for(lambda o: replicas(o) == 0, what="the preview scaled down")
        assert {weight for weight, _ in history(w.observer, router)} == {0}
        assert not switch_events(w.observer)
        assert not [hit for hit in w.metrics.hits if hit[0] == "post"]


async def killed_during_preview_and_post_promotion(env: KubeEnv, router: str) -> None:
    """kill -9 in the preview and again after the switch: each successor resumes, nobody switches twice."""
    async with world(env) as w:
        # A post-promotion analysis long enough to kill the daemon in the middle of it.
        await given(w, router, post_count=6, post_interval="500ms")
        async with _daemon(env, w, "proc-a") as first:
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            state = await check_preview(w, router)
            first.kill()
            await first.wait()
        async with _daemon(env, w, "proc-b") as second:
            await promote(w, "1")
            await w.observer.wait_for(lambda o: _stored(o, stage="PostPromotion"), what="the switch")
            await w.observer.wait_for(
                lambda o: w.metrics.hits[("post", state["canaryRevision"])] >= 2,
                what="post-promotion measurements",
            )
            # Each object has its own watch: the router's may trail the state's by a moment.
            await w.observer.wait_for(lambda o: current_split(o, router)[0] == 100, what="the switch applied")
            second.kill()
            await second.wait()
        async with _daemon(env, w, "proc-c"):
            await check_done(w, router, state["canaryRevision"])
        # User traffic went to the new revision once and never came back before the hand-over.
        assert history(w.observer, router) == [
            (0, ()),
            (0, header_of(router)),
            (100, header_of(router)),
            (0, ()),
        ]
        assert len(switch_events(w.observer)) == 1
        stored = w.observer.states(APP)
        switched_at = {s["switchedAt"] for s in stored if s.get("switchedAt") is not None}
        assert len(switched_at) == 1, "the switch happened once"
        assert state["canaryRevision"] == stored[-1]["stableRevision"]


def _weight_object(router: str) -> tuple[str, str, Callable[[dict[str, Any]], int]]:
    """Where the router keeps the weights: (kind, name, canary weight of a version)."""
    if router == "traefik":
        return "TraefikService", APP, traefik_canary_weight
    return "HTTPRoute", APP, route_canary_weight


def _has_preview_route(observer: Observer, router: str) -> bool:
    if router == "traefik":
        return bool(shadows(observer.get("IngressRoute", APP) or {"spec": {"routes": []}}))
    return bool(copies(observer.get("HTTPRoute", APP) or {"spec": {"rules": []}}))


async def healthy_on_crd_router(env: KubeEnv, router: str) -> None:
    """The rollout on Traefik (TraefikService weights, IngressRoute shadows) or Gateway API (HTTPRoute)."""
    kind, name, weight_of = _weight_object(router)
    async with world(env) as w:
        await w.cluster.create_template(w.metrics.template())
        await w.cluster.create_template(w.metrics.template("web-post"))
        await w.cluster.create_service(apex_service())
        if router == "traefik":
            await w.cluster.create_custom(ingress_route())
            await w.cluster.create_custom(users_traefik_service())
        else:
            await w.cluster.create_custom(http_route())
        await w.cluster.create_deployment(deployment(annotations=opt_in(router)))

        def weight(observer: Observer) -> int | None:
            found = observer.get(kind, name)
            return None if found is None else weight_of(found)

        def writes() -> int:
            assert env.kmock is not None
            plural_of = {"TraefikService": "traefikservices", "HTTPRoute": "httproutes"}[kind]
            return sum(
                1
                for r in requests_of(env.kmock)
                if plural(r) == plural_of and r.method.value in ("PATCH", "PUT") and r.name == name
            )

        async with running_daemon(env):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            state = await wait_state(w, "the preview", stage="Preview", pauseReason="BlueGreenPause")
            await w.observer.wait_for(
                lambda o: _has_preview_route(o, router), what="the preview header route"
            )
            assert weight(w.observer) == 0
            before = writes()
            await promote(w, "1")
            await w.observer.wait_for(lambda o: weight(o) == 100, what="the switch")
            assert writes() == before + 1, "the switch is one write"
            await wait_state(w, "the promotion", phase="Healthy", stableRevision=state["canaryRevision"])
            await w.observer.wait_for(
                lambda o: not _has_preview_route(o, router), what="the header route removed"
            )
            await w.observer.wait_for(lambda o: weight(o) == 0, what="the hand-back to the stable")
        versions = w.observer.history[kind][name]
        written = [
            weight_of(v)
            for v in versions
            if v["metadata"].get("resourceVersion") != versions[0]["metadata"].get("resourceVersion")
        ]
        assert distinct(written)[-3:] == [0, 100, 0] and 100 not in distinct(written)[:-2]
        for observed in (
            *w.observer.history["TraefikService"].values(),
            *w.observer.history["IngressRoute"].values(),
            *w.observer.history["HTTPRoute"].values(),
        ):
            for version in observed:
                assert crd_errors(version) == [], crd_errors(version)


async def healthy_istio(env: KubeEnv) -> None:
    await healthy(env, "istio")


async def healthy_nginx(env: KubeEnv) -> None:
    await healthy(env, "nginx")


# Replayed by tests/ship/test_rbac.py for the RBAC rules (the preview Service's calls).
async def healthy_traefik(env: KubeEnv) -> None:
    await healthy_on_crd_router(env, "traefik")


BLUE_GREEN_SCENARIOS = {
    "blue_green_istio": healthy_istio,
    "blue_green_nginx": healthy_nginx,
    "blue_green_traefik": healthy_traefik,
}


# --- helpers ----------------------------------------------------------------------------------------


def _stored(observer: Observer, **expected: Any) -> dict[str, Any] | None:
    for state in observer.states(APP):
        if all(state.get(k) == v for k, v in expected.items()):
            return state
    return None


@contextlib.asynccontextmanager
async def _daemon(env: KubeEnv, w: World, identity: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A daemon process (tests/kube/daemon_process.py) that leads before the block starts."""
    async with daemon_process(env, identity) as process:
        await w.observer.wait_for(
            lambda o: lease_holder(o) == identity, what=f"{identity} leading", within=HANG_GUARD
        )
        yield process
