"""Standalone proxies: a port already in use is refused, naming the field; live traffic never splits.

Real daemons (`meshshift run --config` subprocesses), real Envoys, real HTTP traffic counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.envoy import EnvoyFiles, EnvoyRouter, render_bootstrap
from meshshift.routers.proxy_process import find_envoy
from meshshift.routers.proxy_routes import DesiredRoutes
from tests.standalone.conftest import App, Apps, versions

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")
REQUESTS = 200


def rollout_file(folder: Path, stable: App, canary: App, envoy: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rollout.yaml"
    rollout = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": "shop"},
        "spec": {
            "router": {"envoy": envoy},
            "stable": {"endpoints": [stable.endpoint]},
            "canary": {"endpoints": [canary.endpoint]},
            "steps": [{"setWeight": 50}, {"pause": {}}],
        },
    }
    path.write_text(yaml.safe_dump(rollout))
    return path


async def run_to_exit(config: Path) -> tuple[int, str]:
    """A daemon that is expected to stop by itself: its exit code and its stderr."""
    process = await asyncio.create_subprocess_exec(
        MESHSHIFT,
        "run",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{free_port()}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"the daemon for {config} did not stop") from None
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


async def test_a_second_daemon_on_the_same_listen_port_exits_and_the_first_keeps_every_request(
    apps: Apps, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first = rollout_file(tmp_path / "first", apps.stable, apps.stable, {"listen": listen})
    daemon = ManagedProcess(
        "meshshift-first",
        [MESHSHIFT, "run", "--config", str(first), "--listen", f"127.0.0.1:{free_port()}"],
        tmp_path / "first.log",
    )
    await daemon.start()
    try:
        await wait_until_http_ready(f"http://{listen}/", process=daemon, wait_seconds=60)
        # The second one would serve a retired version (apps.other) beside the first.
        second = rollout_file(tmp_path / "second", apps.other, apps.other, {"listen": listen})
        code, err = await run_to_exit(second)
        assert code == 1
        port = listen.rsplit(":", 1)[1]
        assert f"spec.router.envoy.listen: port {port} ({listen}) is in use" in err
        assert err.count("is in use") == 1, err  # a fatal error is said once
        assert not (
            tmp_path / "second" / ".meshshift" / "shop" / "envoy" / "envoy.log"
        ).exists()  # never started
        counts = await versions(f"http://{listen}/", REQUESTS)
        assert counts == {apps.stable.version: REQUESTS}
        daemon.check_alive()
    finally:
        await daemon.stop()


async def test_envoy_itself_does_not_share_its_listen_port(apps: Apps, tmp_path: Path) -> None:
    """Without the daemon's check: meshshift's bootstrap makes a second Envoy fail to bind."""
    listen = f"127.0.0.1:{free_port()}"
    started = []
    try:
        for name in ("one", "two"):
            files = EnvoyFiles(tmp_path / name)
            files.root.mkdir(parents=True)
            admin = f"127.0.0.1:{free_port()}"
            files.bootstrap.write_text(json.dumps(render_bootstrap(files, listen=listen, admin=admin)))
            desired = DesiredRoutes((apps.stable.endpoint,), (apps.canary.endpoint,))
            EnvoyRouter(files, f"http://{admin}", desired).write_files(desired)
            process = ManagedProcess(
                f"envoy-{name}",
                [find_envoy(), "-c", str(files.bootstrap), "--disable-hot-restart", "-l", "warning"],
                files.log,
            )
            await process.start()
            started.append(process)
            if name == "one":
                await wait_until_http_ready(f"http://{admin}/ready", process=process, wait_seconds=30)
        second = started[1].process
        assert second is not None
        assert await asyncio.wait_for(second.wait(), 30) != 0
        assert f"cannot bind '{listen}': Address already in use" in started[1].output_tail(50)
        started[0].check_alive()
    finally:
        for process in started:
            await process.stop()


async def test_a_busy_admin_port_is_reported_at_once_naming_the_field(apps: Apps, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = f"127.0.0.1:{taken.getsockname()[1]}"
        config = rollout_file(
            tmp_path / "rollout",
            apps.stable,
            apps.canary,
            {"listen": f"127.0.0.1:{free_port()}", "admin": admin},
        )
        code, err = await run_to_exit(config)
    assert code == 1
    assert f"spec.router.envoy.admin: port {admin.rsplit(':', 1)[1]} ({admin}) is in use" in err
    assert "did not apply" not in err
    assert not (tmp_path / "rollout" / ".meshshift" / "shop" / "envoy" / "envoy.log").exists()


async def test_nginx_on_a_busy_listen_port_is_refused_naming_the_field(apps: Apps, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        folder = tmp_path / "rollout"
        folder.mkdir()
        config = folder / "rollout.yaml"
        rollout = yaml.safe_load(rollout_file(folder, apps.stable, apps.canary, {}).read_text())
        rollout["spec"]["router"] = {"nginx": {"listen": listen}}
        config.write_text(yaml.safe_dump(rollout))
        code, err = await run_to_exit(config)
    assert code == 1
    assert f"spec.router.nginx.listen: port {listen.rsplit(':', 1)[1]} ({listen}) is in use" in err
