"""Blue-green rollouts in Kubernetes mode, on Istio and NGINX, through the emulator."""

from __future__ import annotations

import pytest

from tests.kube import blue_green_scenarios as scenarios
from tests.kube.harness import KubeEnv

ROUTERS = pytest.mark.parametrize("router", ["istio", "nginx"])


@ROUTERS
async def test_a_healthy_revision_is_previewed_switched_to_and_promoted(
    kube_env: KubeEnv, router: str
) -> None:
    await scenarios.healthy(kube_env, router)


@ROUTERS
async def test_a_failed_post_promotion_analysis_switches_back(kube_env: KubeEnv, router: str) -> None:
    await scenarios.post_promotion_failure(kube_env, router)


@ROUTERS
async def test_a_failed_pre_promotion_analysis_never_switches(kube_env: KubeEnv, router: str) -> None:
    await scenarios.pre_promotion_failure(kube_env, router)


@ROUTERS
async def test_kill_9_in_the_preview_and_after_the_switch_resumes_without_a_second_switch(
    kube_env: KubeEnv, router: str
) -> None:
    await scenarios.killed_during_preview_and_post_promotion(kube_env, router)


@pytest.mark.parametrize("router", ["traefik", "gateway-api"])
async def test_blue_green_on_traefik_and_gateway_api(kube_env: KubeEnv, router: str) -> None:
    await scenarios.healthy_on_crd_router(kube_env, router)
