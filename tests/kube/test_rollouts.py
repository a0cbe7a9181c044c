"""Full rollouts of annotated Deployments against kmock, through the real kubernetes-asyncio client."""

from __future__ import annotations

from tests.kube import scenarios
from tests.kube.harness import KubeEnv


async def test_istio_rollout_follows_the_schedule(kube_env: KubeEnv) -> None:
    await scenarios.istio_rollout(kube_env)


async def test_nginx_rollout_follows_the_schedule(kube_env: KubeEnv) -> None:
    await scenarios.nginx_rollout(kube_env)


async def test_both_routers_together(kube_env: KubeEnv) -> None:
    await scenarios.both_routers(kube_env)


async def test_unmanaged_routes_and_fields_stay(kube_env: KubeEnv) -> None:
    await scenarios.unmanaged_content(kube_env)


async def test_failed_analysis_rolls_back(kube_env: KubeEnv) -> None:
    await scenarios.failed_analysis(kube_env)


async def test_invalid_annotations_change_nothing(kube_env: KubeEnv) -> None:
    await scenarios.invalid_annotations(kube_env)


async def test_invalid_update_holds_the_rollout(kube_env: KubeEnv) -> None:
    await scenarios.invalid_update_holds(kube_env)


async def test_restarts_resume_exactly(kube_env: KubeEnv) -> None:
    await scenarios.restarts(kube_env)


async def test_commands_are_acted_on_once(kube_env: KubeEnv) -> None:
    await scenarios.commands(kube_env)


async def test_namespace_and_selector_scope(kube_env: KubeEnv) -> None:
    await scenarios.scope(kube_env)


async def test_nginx_annotation_prefix_and_weight_total(kube_env: KubeEnv) -> None:
    await scenarios.nginx_custom_prefix(kube_env)


async def test_pagerduty_from_a_secret(kube_env: KubeEnv) -> None:
    await scenarios.pagerduty_from_a_secret(kube_env)


async def test_argo_template_with_a_secret_arg(kube_env: KubeEnv) -> None:
    await scenarios.argo_template_with_secret(kube_env)


async def test_two_rollouts_behind_one_ingress_and_the_shared_canary_migrated(kube_env: KubeEnv) -> None:
    await scenarios.nginx_two_rollouts_one_ingress(kube_env)


async def test_a_revision_arriving_before_the_stable_is_ready_goes_through_the_steps(
    kube_env: KubeEnv,
) -> None:
    await scenarios.revision_before_stable_ready(kube_env)
