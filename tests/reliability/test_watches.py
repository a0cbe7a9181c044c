"""The informer under a bad object and a hung watch (issue 12.6), against the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from meshshift.kube.informer import READ_GRACE, WATCH_TIMEOUT, Informer
from meshshift.kube.resources import CONFIG_MAPS, KubeApi
from meshshift.kube.tasks import cancel_and_wait
from tests.kube.harness import HANG_GUARD, KubeEnv, api_client, fast_options, running_daemon, world
from tests.kube.scenarios import (
    APP,
    PAUSED_AT,
    check_promoted,
    given,
    new_version,
    promote,
    wait_initialized,
    wait_state,
)
from tests.kube.test_informer import Recorder, config_map


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(HANG_GUARD):
        while not check():  # noqa: ASYNC110 - informer counters have no event to wait on
            await asyncio.sleep(0.02)


def test_a_watch_is_short_and_noticed_silent_within_a_minute() -> None:
    assert WATCH_TIMEOUT + READ_GRACE <= 60  # the bound /readyz and the read timeout use


async def test_an_error_on_one_object_never_stops_the_events_of_the_others(kube_env: KubeEnv) -> None:
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=2.0)
        for name in ("a", "bad", "c"):
            await api.create(CONFIG_MAPS, config_map(name), "shop")
        record = Recorder()

        def handler(kind: str, obj: dict[str, Any]) -> None:
            record(kind, obj)
            if obj["metadata"]["name"] == "bad":
                raise ValueError("this object breaks the handler")

        informer = Informer(api, CONFIG_MAPS, on_event=handler, namespace="shop", watch_timeout=30)
        task = asyncio.create_task(informer.run())
        try:
            with structlog.testing.capture_logs() as logs:
                await asyncio.wait_for(informer.synced.wait(), HANG_GUARD)
                await api.merge_patch(CONFIG_MAPS, "bad", {"data": {"v": "2"}}, "shop")
                await api.create(CONFIG_MAPS, config_map("d"), "shop")
                await api.merge_patch(CONFIG_MAPS, "c", {"data": {"v": "2"}}, "shop")
                await record.until(("MODIFIED", "bad"), ("ADDED", "d"), ("MODIFIED", "c"))
        finally:
            await cancel_and_wait([task])
    assert record.events == [
        ("ADDED", "a"), ("ADDED", "bad"), ("ADDED", "c"),
        ("MODIFIED", "bad"), ("ADDED", "d"), ("MODIFIED", "c"),
    ]  # fmt: skip
    assert (informer.stats.lists, informer.stats.failures) == (1, 0)  # nothing aborted or reconnected
    failures = [entry for entry in logs if entry["event"] == "event handler failed"]
    assert [(f["event_type"], f["object"]) for f in failures] == [
        ("ADDED", "shop/bad"),
        ("MODIFIED", "shop/bad"),
    ]


async def test_a_hung_watch_is_noticed_and_resumed(kube_env: KubeEnv) -> None:
    emulator: Any = kube_env.kmock
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=2.0)
        await api.create(CONFIG_MAPS, config_map("a"), "shop")
        record = Recorder()
        informer = Informer(
            api, CONFIG_MAPS, on_event=record, namespace="shop", watch_timeout=1, read_grace=1
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), HANG_GUARD)
            emulator.hang_watches = True
            watches = informer.stats.watches
            # Hung watches end on the read timeout and are opened again, while nothing is heard.
            await until(lambda: informer.stats.watches >= watches + 2, "a hung watch abandoned")
            await until(lambda: informer.silence() is not None, "the silence noticed")
            await api.create(CONFIG_MAPS, config_map("while-hung"), "shop")
            assert ("ADDED", "while-hung") not in record.events  # blind: hence /readyz fails
            emulator.hang_watches = False
            await record.until(("ADDED", "while-hung"))
            assert informer.silence() is None
            assert informer.stats.failures >= 2 and informer.stats.lists == 1  # resumed, not relisted
        finally:
            emulator.hang_watches = False
            await cancel_and_wait([task])


async def readyz(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url + "/readyz") as response,
    ):
        return response.status, await response.text()


async def test_readyz_fails_while_the_watch_is_silent(kube_env: KubeEnv) -> None:
    emulator: Any = kube_env.kmock
    options = fast_options(watch_timeout=1, watch_read_grace=1)
    async with running_daemon(kube_env, options=options, leader_elect=False) as operator:
        assert operator.url is not None
        assert await readyz(operator.url) == (200, "ok")
        emulator.hang_watches = True
        try:
            answers: list[tuple[int, str]] = []

            async def failing() -> bool:
                answers.append(await readyz(operator.url or ""))
                return answers[-1][0] == 503

            async with asyncio.timeout(HANG_GUARD):
                while not await failing():  # noqa: ASYNC110 - polling an HTTP endpoint
                    await asyncio.sleep(0.1)
            assert answers[-1][1].startswith(
                "the Deployments watch has heard nothing from the API server for"
            )
        finally:
            emulator.hang_watches = False
        async with asyncio.timeout(HANG_GUARD):
            while (await readyz(operator.url))[0] != 200:  # noqa: ASYNC110 - polling an HTTP endpoint
                await asyncio.sleep(0.1)


async def test_a_rollout_released_while_the_watch_hangs_goes_on_once_it_recovers(kube_env: KubeEnv) -> None:
    emulator: Any = kube_env.kmock
    options = fast_options(watch_timeout=1, watch_read_grace=1)
    async with world(kube_env) as w:
        await given(w, "istio")
        async with running_daemon(kube_env, options=options) as operator:
            assert operator.informer is not None
            await wait_initialized(w)
            informer = operator.informer
            emulator.hang_watches = True
            try:
                await w.cluster.patch_deployment(APP, new_version("v2"))  # the informer does not see it
                failures = informer.stats.failures
                # Hung watches are given up on their read timeout (not just waited out).
                await until(lambda: informer.stats.failures >= failures + 2, "hung watches abandoned")
                assert informer.silence() is not None  # /readyz fails meanwhile
            finally:
                emulator.hang_watches = False
            await wait_state(w, "the pause after the watch recovered", phase="Paused", stepIndex=PAUSED_AT)
            await promote(w, "1")
            await check_promoted(w)
            assert informer.stats.lists == 1  # resumed from the last version, not relisted
