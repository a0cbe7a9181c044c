"""Leader election never starves: the Lease is renewed on a thread of its own, whatever the daemon's
loop is doing; a write the daemon sends for a rollout is fenced by the Lease of its shard.

The emulator runs on a thread of its own here (with its own event loop), so the test can stop
the daemon's loop cold, as a thousand rollouts' work or a slow render would, and still have
an API server that answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from meshshift.kube.ratelimit import FairRateLimiter
from meshshift.kube.resources import CONFIG_MAPS, LEASES, KubeApi, NotHolderError, requests_owned_by
from tests.kube.conftest import NAMESPACE, register_resources
from tests.kube.harness import HANG_GUARD, KubeEnv, running_daemon, write_kubeconfig
from tests.kube.kmock_ext import K8sEmulator
from tests.kube.scenarios import plural, requests_of


@contextlib.contextmanager
def emulator_on_a_thread(directory: Path) -> Iterator[KubeEnv]:
    """The emulator served from another thread's event loop, for as long as the block runs."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with K8sEmulator() as emulator, kmock.Server(emulator):
            register_resources(emulator)
            box.update(emulator=emulator, loop=asyncio.get_running_loop(), stop=asyncio.Event())
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="emulator", daemon=True)
    thread.start()
    assert ready.wait(HANG_GUARD), "the emulator did not start"
    emulator = box["emulator"]
    url = str(emulator.url).rstrip("/")
    try:
        yield KubeEnv(url, write_kubeconfig(directory / "kubeconfig", url, NAMESPACE), NAMESPACE, emulator)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(HANG_GUARD)


def lease_renewals(km: Any, identity: str) -> int:
    return sum(1 for r in requests_of(km, identity) if plural(r) == "leases" and r.method.value == "PATCH")


async def test_the_lease_is_renewed_while_the_daemons_loop_is_stuck(tmp_path: Path) -> None:
    with emulator_on_a_thread(tmp_path) as env:
        async with running_daemon(env, "daemon-a") as daemon:  # a 2 s Lease: renew deadline 1.33 s
            assert daemon.election is not None
            elector = daemon.election.electors["meshshift-leader"]
            timings = elector.timings
            before = lease_renewals(env.kmock, "daemon-a")
            # The daemon's loop runs nothing for three renew deadlines.
            time.sleep(3 * timings.renew_deadline)  # noqa: ASYNC251 - blocking the loop is the test
            during = lease_renewals(env.kmock, "daemon-a") - before
            await asyncio.sleep(timings.retry_period)  # the loop catches up on whatever happened
            assert daemon.leading and elector.transitions == 1
            lease = await daemon.api.get(LEASES, "meshshift-leader", NAMESPACE)
            assert lease is not None and lease["spec"]["holderIdentity"] == "daemon-a"
    # About one renewal per retry period went out while the loop was stuck.
    print(f"renewals while the daemon's loop was stuck for {3 * timings.renew_deadline:.1f}s: {during}")
    assert during >= 3


async def test_a_write_that_waited_for_the_rate_limiter_is_fenced_again_as_it_leaves(tmp_path: Path) -> None:
    """The Lease is checked when a write is asked for and again when the limiter lets it go: a
    write queued behind the limit while the Lease was lost is never sent."""
    with emulator_on_a_thread(tmp_path) as env:
        async with running_daemon(env, "daemon-a") as daemon:
            assert daemon.election is not None
            slow = KubeApi(
                daemon.api.client,
                write_guard=daemon.api.write_guard,
                limiter=FairRateLimiter(0.5, 1),  # one token now, the next in 2 s
                requests=daemon.api.requests,
            )
            with requests_owned_by(NAMESPACE, "web"):
                await slow.create(
                    CONFIG_MAPS, {"metadata": {"name": "web-meshshift-state"}, "data": {}}, NAMESPACE
                )
                queued = asyncio.create_task(
                    slow.merge_patch(CONFIG_MAPS, "web-meshshift-state", {"data": {"x": "1"}}, NAMESPACE)
                )
            await asyncio.sleep(0.2)
            assert not queued.done() and slow.limiter is not None and slow.limiter.queued() == 1
            sent = len(requests_of(env.kmock, "daemon-a"))
            await daemon.election.stop()  # the Lease released while the write waits for its token
            with pytest.raises(NotHolderError):
                await asyncio.wait_for(queued, HANG_GUARD)
            written = [r for r in requests_of(env.kmock, "daemon-a")[sent:] if plural(r) == "configmaps"]
            assert written == []
            stored = await daemon.api.get(CONFIG_MAPS, "web-meshshift-state", NAMESPACE)
            assert stored is not None and "x" not in (stored.get("data") or {})


async def test_a_write_for_a_rollout_is_not_sent_without_its_lease(tmp_path: Path) -> None:
    with emulator_on_a_thread(tmp_path) as env:
        async with running_daemon(env, "daemon-a") as daemon:
            api = daemon.api
            with requests_owned_by(NAMESPACE, "web"):
                await api.create(
                    CONFIG_MAPS, {"metadata": {"name": "web-meshshift-state"}, "data": {}}, NAMESPACE
                )
            assert daemon.election is not None
            await daemon.election.stop()  # the Lease released, and nobody renews it any more
            assert not daemon.election.holds("meshshift-leader")
            sent = len(requests_of(env.kmock, "daemon-a"))
            with requests_owned_by(NAMESPACE, "web"), pytest.raises(NotHolderError):
                await api.merge_patch(CONFIG_MAPS, "web-meshshift-state", {"data": {"x": "1"}}, NAMESPACE)
            assert await api.get(CONFIG_MAPS, "web-meshshift-state", NAMESPACE) is not None  # reads go on
            written = [r for r in requests_of(env.kmock, "daemon-a")[sent:] if plural(r) == "configmaps"]
            assert [r.method.value for r in written] == ["GET"]
