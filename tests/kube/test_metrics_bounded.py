"""/metrics stays bounded in Kubernetes mode: a Deployment that goes takes every series it
brought, the counters of its API calls too; an invalid one is InvalidSpec until it goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from meshshift.kube.operator import Operator
from meshshift.runtime.controller import RolloutKey
from tests.kube.harness import HANG_GUARD, KubeEnv, fast_options, running_daemon, world
from tests.kube.scenarios import deployment, new_version

STEPS = """\
- setWeight: 20
- analysis:
    templates: [{templateName: web-check}]
    args: [{name: check, value: x}]
- pause: {}
"""


def opt_in(router: str = "istio") -> dict[str, str]:
    return {"meshshift.io/enabled": "true", "meshshift.io/router": router, "meshshift.io/steps": STEPS}


def phase_of(operator: Operator, name: str) -> str | None:
    """The phase the daemon publishes (what /metrics shows)."""
    snapshot = operator.registry.snapshots.get(RolloutKey("shop", name))
    state = snapshot.state if snapshot is not None else None
    return state.phase.value if state is not None else None


async def scrape(operator: Operator) -> list[str]:
    async with aiohttp.ClientSession() as session, session.get(f"{operator.url}/metrics") as response:
        return [line for line in (await response.text()).splitlines() if line and not line.startswith("#")]


def about(name: str, lines: list[str]) -> list[str]:
    """The series of one rollout: its labels name it, its objects or its analysis runs."""
    objects = {name, f"{name}-primary", f"{name}-canary", f"{name}-meshshift-state", f"{name}-check"}
    marks = [f'name="{o}"' for o in objects] + [f'rollout="{name}"', f'workload="{name}', f'name="{name}-']
    return [line for line in lines if any(mark in line for mark in marks)]


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_deleted_deployment_takes_every_series_with_it(kube_env: KubeEnv) -> None:
    async with world(kube_env) as w:
        await w.cluster.create_template(w.metrics.template("web-check", interval="100ms", count=1))
        for name in ("web", "cart"):
            await w.cluster.create_deployment(deployment(name, annotations=opt_in()))
        broken = opt_in("istoi")  # a typo
        await w.cluster.create_deployment(deployment("broken", annotations=broken))
        options = fast_options(request_timeout=30.0)
        async with running_daemon(kube_env, options=options, leader_elect=False) as operator:
            await until(
                lambda: phase_of(operator, "web") == phase_of(operator, "cart") == "Healthy", "set up"
            )
            await w.cluster.patch_deployment("web", new_version("v2"))
            await until(lambda: phase_of(operator, "web") == "Paused", "the pause")
            snapshots = operator.registry.snapshots
            before = await scrape(operator)
            web = about("web", before)
            assert any(line.startswith("controller_clientset_k8s_request_total{") for line in web)
            assert any(line.startswith("analysis_run_info{") for line in web)
            assert any(line.startswith("analysis_template_info{") for line in before)
            assert any(
                'name="broken",strategy="canary",traffic_router="",phase="InvalidSpec"} 1' in line
                for line in before
            )

            await w.cluster.delete_deployment("web")
            await w.cluster.delete_deployment("broken")
            await until(lambda: {k.name for k in snapshots} == {"cart"}, "web and broken to go")
            after = await scrape(operator)
            assert about("web", after) == []
            assert about("broken", after) == []
            # cart's stay, and so do the daemon's own calls and the shared ones of the namespace.
            assert len(about("cart", after)) == len(about("cart", before)) > 20
            assert any('kind="deployments",namespace="shop",name="",verb="Watch"' in line for line in after)
            assert any('kind="events",namespace="shop",name="N/A"' in line for line in after)
            assert len(after) < len(before) - len(web) // 2
