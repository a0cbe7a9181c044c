"""Files are written safely and read defensively (issue 12.3).

A symlinked state file is written through; a symlink planted where a temp file would go
is never followed; a mangled state file is refused with one message, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from meshshift.files import write_atomically
from meshshift.processes import free_port
from meshshift.routers.nginx_conf import NginxFiles, NginxRouter
from meshshift.routers.proxy_process import find_nginx, replace_file
from meshshift.routers.proxy_routes import DesiredRoutes
from meshshift.standalone.state_file import StateFile, StateFileError, StateFileStore, record_stable
from tests.standalone.test_state_file import stored_rollout

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")


async def test_a_symlinked_state_file_is_written_through_to_its_target(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    target = volume / "shop.json"
    target.write_text("{}")
    link = tmp_path / "shop.state.json"
    link.symlink_to(target)
    store = StateFileStore(StateFile(link))
    await store.save(stored_rollout())
    await record_stable(store.file, ["127.0.0.1:8082"])
    assert link.is_symlink() and link.resolve() == target  # still a link, to the same file
    assert json.loads(target.read_text())["workloads"] == {"stableEndpoints": ["127.0.0.1:8082"]}
    assert await StateFileStore(StateFile(target)).load() == stored_rollout()
    assert names(volume) == ["shop.json"]  # no temp file left
    assert names(tmp_path) == ["shop.state.json", "volume"]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def plant(path: Path, victim: Path) -> None:
    """A symlink an attacker placed where a writer with a predictable temp name would write."""
    path.symlink_to(victim)


@pytest.mark.parametrize("writer", ["state file", "watched proxy file"])
async def test_a_symlink_at_the_old_temp_name_is_never_followed(writer: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "shop.state.json"
    plant(tmp_path / f".{path.name}.{os.getpid()}.tmp", victim)
    if writer == "state file":
        await StateFileStore(StateFile(path)).save(stored_rollout())
    else:
        replace_file(path, "{}")
    assert victim.read_text() == "precious"
    assert path.exists() and not path.is_symlink()


async def test_nginx_conf_is_checked_under_a_fresh_name(tmp_path: Path) -> None:
    root = tmp_path / "nginx"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    plant(root / "nginx.conf.next", victim)  # the name NGINX's config used to be staged under
    files = NginxFiles(root)
    router = NginxRouter(
        files,
        binary=find_nginx(),
        listen=f"127.0.0.1:{free_port()}",
        status=f"127.0.0.1:{free_port()}",
        desired=DesiredRoutes(("127.0.0.1:1",), ("127.0.0.1:2",)),
    )
    await router.write_checked(router.desired)
    assert victim.read_text() == "precious"
    assert "split_clients" in files.conf.read_text()
    assert not [name for name in names(root) if name.endswith(".tmp")]


def test_a_rewrite_keeps_the_permissions_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    write_atomically(path, "1")
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    write_atomically(path, "2", durable=True)
    assert path.read_text() == "2" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["routes.json"]


VALID_ROLLOUT = stored_rollout().rollout.to_dict()
MANGLED: list[tuple[str, Any, str]] = [
    ("rollout-list", {"rollout": []}, "rollout: expected an object, got a list"),
    ("rollout-null", {"rollout": None}, "rollout: expected an object, got null"),
    ("rollout-field", {"rollout": {**VALID_ROLLOUT, "phase": 5}}, "rollout: "),
    ("workloads-string", {"rollout": VALID_ROLLOUT, "workloads": "x"}, "workloads: expected an object"),
    ("endpoints", {"workloads": {"stableEndpoints": [1]}}, "workloads.stableEndpoints: expected a list"),
    ("version", {"workloads": {"stableVersion": 2}}, "workloads.stableVersion: expected a string"),
    ("undo", {"workloads": {"undo": []}}, "workloads.undo: expected an object"),
    ("undo-canary", {"workloads": {"undo": {"canary": "x"}}}, "workloads.undo.canary: expected a list"),
    ("runs", {"rollout": VALID_ROLLOUT, "analysisRuns": {"r": 5}}, "analysisRuns.r: "),
    ("runs-list", {"analysisRuns": []}, "analysisRuns: expected an object"),
]


@pytest.mark.parametrize(
    ("document", "message"), [(d, m) for _, d, m in MANGLED], ids=[i for i, _, _ in MANGLED]
)
async def test_a_mangled_state_file_is_refused_whole_with_one_message(
    document: Any, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "shop.state.json"
    path.write_text(json.dumps(document))
    state_file = StateFile(path)
    with pytest.raises(StateFileError, match="is not a meshshift state") as refused:
        await StateFileStore(state_file).load()
    assert message in str(refused.value)
    with pytest.raises(StateFileError):  # every reader of the document is refused the same way
        state_file.read()
    assert json.loads(path.read_text()) == document  # left as it was


def test_a_deeply_nested_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shop.state.json"
    path.write_text('{"rollout": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(StateFileError, match="nested too deeply"):
        StateFile(path).read()


async def test_the_daemon_refuses_a_mangled_state_file_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "rollout.yaml"
    config.write_text(
        "apiVersion: meshshift.io/v1alpha1\nkind: StandaloneRollout\nmetadata: {name: shop}\n"
        f"spec:\n  router: {{envoy: {{listen: '127.0.0.1:{free_port()}'}}}}\n"
        "  stable: {endpoints: ['127.0.0.1:2']}\n  canary: {endpoints: ['127.0.0.1:3']}\n"
    )
    (tmp_path / "shop.state.json").write_text('{"schemaVersion": 1, "rollout": [], "workloads": "x"}')
    process = await asyncio.create_subprocess_exec(
        MESHSHIFT, "run", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stderr.decode()
    assert process.returncode == 1
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        f"meshshift: the state file {tmp_path / 'shop.state.json'} is not a meshshift state: "
        "rollout: expected an object, got a list; fix or remove it"
    )
    assert not (tmp_path / ".meshshift").exists()  # refused before any proxy started
