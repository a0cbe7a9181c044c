"""The Dockerfile. No container engine runs here, so it is checked statically (it parses,
builds in two stages from a slim Python image, installs no compiler, and its final stage
runs `meshshift run` as the numeric non-root user the Deployment expects), and the
daemon is run with the image's environment to show it writes no file."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

from meshshift.cli.main import build_parser
from tests.kube import scenarios
from tests.kube.conftest import NAMESPACE
from tests.kube.harness import HANG_GUARD, lease_holder, world
from tests.ship.support import REPO, emulated_cluster, find, installed

DOCKERFILE = REPO / "Dockerfile"
# Packages and tools that compile: none may be installed, in any stage.
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|c\+\+|build-essential|make|cmake|gfortran|rustc|cargo|"
    r"python3?(\.\d+)?-dev|libc6?-dev|musl-dev|linux-headers)\b"
)
Instruction = dict[str, Any]


def stages() -> list[list[Instruction]]:
    """The instructions of each build stage, in order (each starts with its FROM)."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    found: list[list[Instruction]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def values(stage: list[Instruction], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for value in values(stage, "ENV"):
        for pair in shlex.split(value):
            key, _, setting = pair.partition("=")
            env[key] = setting
    return env


def test_it_is_a_multi_stage_build_on_slim_python() -> None:
    parser = DockerfileParser(path=str(DOCKERFILE))
    build, final = stages()
    assert len(parser.parent_images) == 2
    for image in parser.parent_images:  # ARG defaults substituted
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-[a-z]+)?", image), image
    assert " AS " in build[0]["value"].upper()
    assert [v.split()[0] for v in values(final, "COPY")] == ["--from=build"]


def test_no_compiler_is_installed_and_nothing_is_built_in_the_final_stage() -> None:
    build, final = stages()
    for stage in (build, final):
        for command in values(stage, "RUN"):
            assert not COMPILERS.search(command), command
            assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b", command), "no system packages"
    assert values(final, "RUN") == []
    (install,) = [c for c in values(build, "RUN") if " install " in c]
    assert "--only-binary=:all:" in install  # wheels only: nothing can be compiled


def test_the_final_stage_runs_as_the_deployments_numeric_non_root_user() -> None:
    _, final = stages()
    user = values(final, "USER")[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), "numeric, so runAsNonRoot can check it"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    pod = find(installed(), "Deployment", "meshshift")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert str(pod["securityContext"]["runAsGroup"]) == (gid or uid)


def test_the_entrypoint_is_meshshift_run() -> None:
    build, final = stages()
    assert json.loads(values(final, "ENTRYPOINT")[-1]) == ["meshshift", "run"]
    assert values(final, "CMD") == []  # the Deployment's args follow the entrypoint
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["meshshift"] == "meshshift.cli.main:main"
    assert build_parser().parse_args(["run"]).command == "run"
    # `meshshift` resolves to the virtualenv built in the first stage and copied over.
    venv = re.search(r"python -m venv (?:--\S+ )*(\S+)", values(build, "RUN")[0])
    assert venv is not None
    assert env_of(final)["PATH"].split(":")[0] == f"{venv.group(1)}/bin"


def test_nothing_is_written_at_run_time() -> None:
    """A read-only root filesystem: bytecode is compiled at build time and never written after."""
    build, final = stages()
    assert any("compileall" in command for command in values(build, "RUN"))
    assert env_of(final)["PYTHONDONTWRITEBYTECODE"] == "1"
    container = find(installed(), "Deployment", "meshshift")["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "volumeMounts" not in container  # nothing writable is mounted either


async def test_the_daemon_writes_no_file_during_a_rollout(tmp_path: Path) -> None:
    """What a read-only root filesystem needs: `meshshift run`, with the image's environment,
    takes a rollout from start to promotion (kmock) without opening a file for writing."""
    _, final = stages()
    image_env = {key: value for key, value in env_of(final).items() if key != "PATH"}
    report = tmp_path / "writes.txt"
    async with emulated_cluster(tmp_path, NAMESPACE) as env, world(env) as w:
        await scenarios.given(w, "istio")
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.ship.audited_daemon", str(report)),
            *(str(env.kubeconfig), env.namespace, "audited"),
            cwd=str(REPO),
            env={**os.environ, **image_env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await w.observer.wait_for(lambda o: lease_holder(o) == "audited", what="the daemon leading")
            await scenarios.wait_initialized(w)
            await w.cluster.patch_deployment(scenarios.APP, scenarios.new_version("v2"))
            await scenarios.wait_state(w, "the pause", phase="Paused", stepIndex=scenarios.PAUSED_AT)
            await scenarios.promote(w, "1")
            await scenarios.check_promoted(w)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), HANG_GUARD) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    marker, *writes = report.read_text(encoding="utf-8").splitlines()
    assert marker.startswith(f"open {os.devnull!r}")  # the hook was armed
    assert writes == []


def test_the_port_is_the_containers() -> None:
    _, final = stages()
    container = find(installed(), "Deployment", "meshshift")["spec"]["template"]["spec"]["containers"][0]
    assert values(final, "EXPOSE") == [str(container["ports"][0]["containerPort"])]


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern matching the path (or a parent folder) decides."""
    result = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), glob) for i in range(len(parts))):
            result = not negate
    return result


def test_the_build_context_holds_the_sources_and_nothing_else() -> None:
    build, _ = stages()
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [name for value in values(build, "COPY") for name in value.split()[:-1]]
    assert sources == ["pyproject.toml", "README.md", "meshshift"]
    for source in sources:
        assert (REPO / source).exists(), source
        assert not ignored(source, patterns), source
    assert not ignored("meshshift/observe/static/app.js", patterns)  # package data
    for unwanted in (
        ".venv",
        "tests",
        ".git",
        "test-artifacts",
        "meshshift.egg-info",
        "meshshift/__pycache__",
    ):
        assert ignored(unwanted, patterns), unwanted
