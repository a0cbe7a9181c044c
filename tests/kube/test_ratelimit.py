"""Client-side rate limiting: client-go's token bucket (qps, burst), fair between rollouts.

Order is asserted, never time: one rollout's burst must not push another rollout's request
behind all of it.
"""

from __future__ import annotations

import asyncio

import pytest

from meshshift.kube.ratelimit import FairRateLimiter
from meshshift.kube.resources import CONFIG_MAPS, KubeApi, requests_owned_by
from meshshift.settings import DaemonSettings, bounded_number
from tests.kube.conftest import NAMESPACE
from tests.kube.harness import KubeEnv, api_client


async def test_the_burst_goes_at_once_then_the_queues_take_turns() -> None:
    limiter = FairRateLimiter(qps=200, burst=3)
    served: list[str] = []

    async def request(owner: str, index: int) -> None:
        await limiter.acquire(("shop", owner))
        served.append(f"{owner}{index}")

    burst = [asyncio.create_task(request("a", i)) for i in range(10)]
    await asyncio.sleep(0)  # a's ten are in: three took the burst, seven queue
    late = [asyncio.create_task(request(name, 0)) for name in ("b", "c")]
    await asyncio.gather(*burst, *late)
    assert served[:3] == ["a0", "a1", "a2"]
    # Round robin from there: a's next one, then b's and c's, before the rest of a's.
    assert served[3:6] == ["a3", "b0", "c0"]
    assert served[6:] == [f"a{i}" for i in range(4, 10)]
    assert limiter.waited == 9 and limiter.queued() == 0


async def test_a_caller_that_gives_up_waiting_costs_no_token() -> None:
    limiter = FairRateLimiter(qps=100, burst=1)
    await limiter.acquire(None)
    impatient = asyncio.create_task(limiter.acquire(("shop", "a")))
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.gather(impatient, return_exceptions=True)
    await asyncio.wait_for(limiter.acquire(("shop", "b")), 5)
    assert limiter.queued() == 0


async def test_through_the_client_one_rollouts_burst_does_not_hold_back_another(kube_env: KubeEnv) -> None:
    async with api_client(kube_env) as client:
        api = KubeApi(client, retries=0, limiter=FairRateLimiter(qps=50, burst=1))
        await api.create(CONFIG_MAPS, {"metadata": {"name": "a"}, "data": {}}, NAMESPACE)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "b"}, "data": {}}, NAMESPACE)

        async def reads(name: str, count: int) -> None:
            with requests_owned_by(NAMESPACE, name):
                await asyncio.gather(*(api.get(CONFIG_MAPS, name, NAMESPACE) for _ in range(count)))

        bursting = asyncio.create_task(reads("a", 20))
        await asyncio.sleep(0.05)  # a's burst is queued
        await reads("b", 1)
        await bursting
    assert kube_env.kmock is not None
    order = [r.name for r in kube_env.kmock if r.method.value == "GET"]
    assert len(order) == 21
    assert order.index("b") <= 4, order  # not behind the twenty of a


def test_qps_burst_and_shards_from_the_environment_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSHIFT_QPS", "150.5")
    monkeypatch.setenv("MESHSHIFT_BURST", "300")
    monkeypatch.setenv("MESHSHIFT_SHARDS", "6")
    settings = DaemonSettings.from_env()
    assert (settings.qps, settings.burst, settings.shards) == (150.5, 300, 6)
    assert DaemonSettings().qps == 40 and DaemonSettings().burst == 80  # Argo Rollouts' defaults
    monkeypatch.setenv("MESHSHIFT_SHARDS", "0")
    with pytest.raises(ValueError, match="MESHSHIFT_SHARDS: 0 is below 1"):
        DaemonSettings.from_env()
    with pytest.raises(ValueError, match="--qps: 'fast' is not a number"):
        bounded_number("--qps", "fast", 0, integer=False)
    with pytest.raises(ValueError, match="is below 0"):
        bounded_number("--qps", "nan", 0, integer=False)
