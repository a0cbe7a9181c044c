"""The NGINX Ingress router on its own, against kmock through the real client.

The full rollouts are in scenarios.py (`nginx_rollout`, `nginx_two_rollouts_one_ingress`);
these check what one router writes and refuses, one call at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshshift.kube.resources import INGRESSES, KubeApi
from meshshift.routers.nginx_ingress import (
    CANARY_SUFFIX,
    MAX_NAME,
    IngressConfigError,
    NginxIngressRouter,
    canary_ingress_name,
    is_shared_canary,
)
from tests.kube.harness import KubeEnv, api_client
from tests.kube.scenarios import SHOP_INGRESS, deployment, shop_ingress

P = "nginx.ingress.kubernetes.io"


@contextlib.asynccontextmanager
async def kube(env: KubeEnv) -> AsyncIterator[KubeApi]:
    async with api_client(env) as client:
        yield KubeApi(client, request_timeout=5.0)


def router(api: KubeApi, env: KubeEnv, name: str = "web", **options: Any) -> NginxIngressRouter:
    owner = deployment(name)
    owner["metadata"].update(uid=f"uid-{name}", namespace=env.namespace)
    return NginxIngressRouter(
        api,
        namespace=env.namespace,
        deployment=name,
        stable_ingress=SHOP_INGRESS,
        service=name,
        owner=owner,
        **options,
    )


def test_the_name_is_argos_and_fits_an_ingress_name() -> None:
    assert canary_ingress_name("web", "shop-public") == "web-shop-public-canary"
    long = canary_ingress_name("d" * 200, "i" * 100)
    assert len(long) == MAX_NAME and long.endswith(CANARY_SUFFIX) and long.startswith("d" * 200 + "-i")


def test_only_an_unmarked_meshshift_object_is_a_shared_canary() -> None:
    labelled = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "meshshift"}}}
    assert is_shared_canary(labelled)
    assert not is_shared_canary({"metadata": {"labels": {}}})  # the user's own
    per_rollout = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "meshshift"},
            "annotations": {"meshshift.io/stable-ingress": SHOP_INGRESS},
        }
    }
    assert not is_shared_canary(per_rollout)


async def test_a_rollout_writes_only_its_paths_owned_by_its_deployment(kube_env: KubeEnv) -> None:
    async with kube(kube_env) as api:
        await api.create(INGRESSES, shop_ingress(), kube_env.namespace)
        api_router, web_router = router(api, kube_env, "api"), router(api, kube_env, "web")
        await api_router.set_weight(10)
        await web_router.set_weight(40)
        await api_router.commit()
        await web_router.commit()
        await api_router.set_weight(20)
        await api_router.commit()
        api_canary = await api.get(INGRESSES, "api-shop-public-canary", kube_env.namespace)
        web_canary = await api.get(INGRESSES, "web-shop-public-canary", kube_env.namespace)
    assert api_canary is not None and web_canary is not None
    assert [p["path"] for p in api_canary["spec"]["rules"][0]["http"]["paths"]] == ["/api"]
    assert [p["path"] for p in web_canary["spec"]["rules"][0]["http"]["paths"]] == ["/"]
    assert api_canary["metadata"]["annotations"][f"{P}/canary-weight"] == "20"
    assert web_canary["metadata"]["annotations"][f"{P}/canary-weight"] == "40"  # untouched by api's write
    assert [(r["kind"], r["name"], r["uid"]) for r in api_canary["metadata"]["ownerReferences"]] == [
        ("Deployment", "api", "uid-api")
    ]


async def test_an_ingress_of_that_name_that_is_not_ours_is_left_alone(kube_env: KubeEnv) -> None:
    theirs = shop_ingress()
    theirs["metadata"] = {"name": "web-shop-public-canary", "annotations": {"team": "payments"}}
    async with kube(kube_env) as api:
        await api.create(INGRESSES, shop_ingress(), kube_env.namespace)
        await api.create(INGRESSES, theirs, kube_env.namespace)
        before = await api.get(INGRESSES, "web-shop-public-canary", kube_env.namespace)
        web = router(api, kube_env)
        await web.set_weight(40)
        with pytest.raises(IngressConfigError, match="not a per-rollout canary Ingress of meshshift"):
            await web.commit()
        after = await api.get(INGRESSES, "web-shop-public-canary", kube_env.namespace)
    assert after == before


async def test_a_shared_canary_holding_two_rollouts_paths_is_split_then_deleted(kube_env: KubeEnv) -> None:
    """Each rollout takes only its own path out; the last one out deletes it. Nothing is carried
    over while the object holds someone else's paths too: whose weight would it be?"""
    shared = shop_ingress()
    for path in shared["spec"]["rules"][0]["http"]["paths"]:
        path["backend"]["service"]["name"] += "-canary"
    shared["metadata"] = {
        "name": f"{SHOP_INGRESS}-canary",
        "labels": {"app.kubernetes.io/managed-by": "meshshift"},
        "annotations": {f"{P}/canary": "true", f"{P}/canary-weight": "35"},
    }
    async with kube(kube_env) as api:
        await api.create(INGRESSES, shop_ingress(), kube_env.namespace)
        await api.create(INGRESSES, shared, kube_env.namespace)
        api_router = router(api, kube_env, "api")
        await api_router.remove_managed_routes()  # a write that sets no weight
        await api_router.commit()
        left = await api.get(INGRESSES, f"{SHOP_INGRESS}-canary", kube_env.namespace)
        assert left is not None
        assert [p["path"] for p in left["spec"]["rules"][0]["http"]["paths"]] == ["/"]
        api_canary = await api.get(INGRESSES, "api-shop-public-canary", kube_env.namespace)
        assert api_canary is not None and api_canary["metadata"]["annotations"][f"{P}/canary-weight"] == "0"
        web_router = router(api, kube_env, "web")
        await web_router.remove_managed_routes()
        await web_router.commit()
        assert await api.get(INGRESSES, f"{SHOP_INGRESS}-canary", kube_env.namespace) is None
        web_canary = await api.get(INGRESSES, "web-shop-public-canary", kube_env.namespace)
        assert web_canary is not None
        assert [p["path"] for p in web_canary["spec"]["rules"][0]["http"]["paths"]] == ["/"]
