"""The Traefik router in Kubernetes mode, against the emulator (scenarios in router_scenarios.py)."""

from __future__ import annotations

from tests.kube import router_scenarios
from tests.kube.harness import KubeEnv


async def test_traefik_rollout_moves_weights_and_shadows_the_users_route(kube_env: KubeEnv) -> None:
    await router_scenarios.traefik_rollout(kube_env)


async def test_a_missing_traefik_service_is_created_with_the_primarys_port(kube_env: KubeEnv) -> None:
    await router_scenarios.traefik_service_created(kube_env)


async def test_the_emulator_refuses_what_traefiks_schema_refuses(kube_env: KubeEnv) -> None:
    await router_scenarios.emulator_refuses_invalid_traefik_services(kube_env)
