"""Faults, restarts and leader election, against kmock."""

from __future__ import annotations

from tests.kube import scenarios
from tests.kube.harness import KubeEnv


async def test_injected_faults_lose_and_repeat_nothing(kube_env: KubeEnv) -> None:
    await scenarios.injected_faults(kube_env)


async def test_only_the_leader_writes_and_the_other_takes_over(kube_env: KubeEnv) -> None:
    await scenarios.leader_election(kube_env)


async def test_a_killed_leader_is_replaced(kube_env: KubeEnv) -> None:
    await scenarios.leader_crash(kube_env)
