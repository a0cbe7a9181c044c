"""The list+watch informer against kmock: events in order, resume, relist on 410 and after a gap."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meshshift.kube.informer import Informer
from meshshift.kube.resources import CONFIG_MAPS, DEPLOYMENTS, KubeApi, resource_version
from meshshift.kube.tasks import cancel_and_wait
from meshshift.kube.workloads import InformedDeployments
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


def deployment_object(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"v": "1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "a", "image": "a"}]},
            },
        },
    }


async def test_a_write_answer_overtaken_by_the_watch_yields_to_the_cache(kube_env: KubeEnv) -> None:
    """Read-your-writes over the informer: our write's answer is used while the cache is behind it,
    never once the watch brought that version or a newer one (even before the answer arrived:
    at 1,000 rollouts the watch often wins that race; a rollout then waited for ever for a
    primary the cache knew was ready)."""
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=2.0)
        informer = Informer(api, DEPLOYMENTS, on_event=lambda _kind, _obj: None, namespace="shop")
        known = InformedDeployments(
            lambda name: informer.cache.get(("shop", name)),
            lambda name, version: informer.has_seen(("shop", name), version),
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), HANG_GUARD)
            created = await api.create(DEPLOYMENTS, deployment_object("web"), "shop")
            # Someone else writes after us, and the watch brings both before our answer is handled.
            later = await api.merge_patch(DEPLOYMENTS, "web", {"metadata": {"labels": {"v": "2"}}}, "shop")

            def caught_up() -> bool:
                return resource_version(informer.cache.get(("shop", "web"))) == resource_version(later)

            await asyncio.wait_for(_until(caught_up), HANG_GUARD)
            known.put(DEPLOYMENTS, "web", "shop", created)
            seen = known.get(DEPLOYMENTS, "web", "shop")
            assert seen is not None and seen["metadata"]["labels"]["v"] == "2"
        finally:
            await cancel_and_wait([task])
        # With the watch stopped, the cache stays behind our next write: the answer is what we see.
        mine = await api.merge_patch(DEPLOYMENTS, "web", {"metadata": {"labels": {"v": "3"}}}, "shop")
        known.put(DEPLOYMENTS, "web", "shop", mine)
        seen = known.get(DEPLOYMENTS, "web", "shop")
        assert seen is not None and seen["metadata"]["labels"]["v"] == "3"
        assert resource_version(informer.cache.get(("shop", "web"))) == resource_version(later)
        # The watch resumes and brings our write: the cache is used again, and it holds it.
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(
                _until(lambda: informer.has_seen(("shop", "web"), resource_version(mine))), HANG_GUARD
            )
            assert known.get(DEPLOYMENTS, "web", "shop") is informer.cache[("shop", "web")]
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await cancel_and_wait([task])
