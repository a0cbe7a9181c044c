"""The Gateway API router in Kubernetes mode, against the emulator (scenarios in router_scenarios.py)."""

from __future__ import annotations

from tests.kube import router_scenarios
from tests.kube.harness import KubeEnv


async def test_gateway_api_rollout_moves_weights_and_copies_the_managed_rule(kube_env: KubeEnv) -> None:
    await router_scenarios.gateway_api_rollout(kube_env)


async def test_an_http_route_without_a_managed_rule_is_never_written(kube_env: KubeEnv) -> None:
    await router_scenarios.gateway_api_mistakes_change_nothing(kube_env)
