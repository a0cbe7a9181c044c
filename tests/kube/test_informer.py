"""The list+watch informer against kmock: events in order, resume, relist on 410 and after a gap."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meshshift.kube.informer import Informer
from meshshift.kube.resources import CONFIG_MAPS, KubeApi
from meshshift.kube.tasks import cancel_and_wait
from tests.kube.harness import HANG_GUARD, KubeEnv, api_client
from tests.kube.kmock_ext import k8s_status


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.changed = asyncio.Condition()

    def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, obj["metadata"]["name"]))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, *expected: tuple[str, str]) -> None:
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: all(e in self.events for e in expected))

        await asyncio.wait_for(wait(), HANG_GUARD)


def config_map(name: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


async def test_list_watch_resume_and_relist(kube_env: KubeEnv) -> None:
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=2.0)
        for name in ("a", "b"):
            await api.create(CONFIG_MAPS, config_map(name), "shop")
        await api.create(CONFIG_MAPS, config_map("elsewhere"), "other")
        record = Recorder()
        informer = Informer(api, CONFIG_MAPS, on_event=record, namespace="shop", watch_timeout=1)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), HANG_GUARD)
            assert record.events == [("ADDED", "a"), ("ADDED", "b")]
            await api.create(CONFIG_MAPS, config_map("c"), "shop")
            await api.merge_patch(CONFIG_MAPS, "a", {"data": {"v": "2"}}, "shop")
            await record.until(("ADDED", "c"), ("MODIFIED", "a"))
            # The server ends each watch after 1 s; the informer resumes from the last version
            # without listing again and without replaying what it saw.
            watches = informer.stats.watches
            await asyncio.wait_for(_until(lambda: informer.stats.watches >= watches + 2), HANG_GUARD)
            assert informer.stats.lists == 1
            assert record.events == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("MODIFIED", "a")]
            # A 410 in the stream: list again; nothing changed, so nothing is reported. The
            # server ends each watch after 1 s, and an event sent between two watches
            # reaches nobody, so send it until one watch has seen it.
            await asyncio.wait_for(_expire_a_watch(kube_env, informer), HANG_GUARD)
            await asyncio.wait_for(
                _until(lambda: informer.stats.lists == 1 + informer.stats.expired), HANG_GUARD
            )
            assert informer.stats.expired >= 1 and len(record.events) == 4
        finally:
            await cancel_and_wait([task])
        # While nobody watched, b went away and c changed: the next list reports both.
        await api.delete(CONFIG_MAPS, "b", "shop")
        await api.merge_patch(CONFIG_MAPS, "c", {"data": {"v": "3"}}, "shop")
        task = asyncio.create_task(informer.run())
        try:
            await record.until(("DELETED", "b"), ("MODIFIED", "c"))
            assert sorted(informer.cache) == [("shop", "a"), ("shop", "c")]
            assert ("ADDED", "elsewhere") not in record.events
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await cancel_and_wait([task])


async def _expire_a_watch(kube_env: KubeEnv, informer: Informer) -> None:
    while informer.stats.expired == 0:
        await kube_env.kmock.send_watch_event(  # type: ignore[union-attr]
            "v1/configmaps", "ERROR", k8s_status(410, "Expired", "too old"), namespace="shop"
        )
        await _until(lambda: informer.stats.expired > 0, within=0.5)


async def _until(check: Any, within: float | None = None) -> None:
    """Wait until `check()` holds; with `within`, give up quietly after that many seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 - informer counters have no event to wait on
                await asyncio.sleep(0.02)
