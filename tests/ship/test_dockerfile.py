"""The Dockerfile. No container engine runs here, so it is checked statically (it parses,
builds in two stages from a slim Python image, installs no compiler, and its final stage
runs `meshshift run` as the numeric non-root user the Deployment expects), and the
daemon is run with the image's environment to show it writes no file."""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

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


# --- the image's name, and its file layout built without Docker -------------------------------

IMAGE_NAME = re.compile(r"docker build -t (\S+) \.|kind load docker-image (\S+)|^IMAGE\s*:=\s*(\S+)", re.M)


def named_images(text: str) -> list[str]:
    """The image names `text` builds, loads or defines (a Makefile's $(IMAGE) read as its value)."""
    defined = re.search(r"^IMAGE\s*:=\s*(\S+)", text, re.M)
    if defined is not None:
        text = text.replace("$(IMAGE)", defined.group(1))
    return [next(group for group in match.groups() if group) for match in IMAGE_NAME.finditer(text)]


def test_the_image_is_built_and_loaded_under_the_name_the_deployment_runs() -> None:
    """The Dockerfile's build line, `make image`, the README's docker build and kind load
    lines all name the Deployment's image; its tag is the project's version, the image's
    version label too, and the pull policy runs an image loaded into kind as it is."""
    container = find(installed(), "Deployment", "meshshift")["spec"]["template"]["spec"]["containers"][0]
    image = container["image"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert image.rsplit(":", 1)[1] == version
    assert container["imagePullPolicy"] == "IfNotPresent"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for source, text in [
        ("Dockerfile", DOCKERFILE.read_text(encoding="utf-8")),
        ("Makefile", (REPO / "Makefile").read_text(encoding="utf-8")),
        ("README.md", readme),
    ]:
        names = named_images(text)
        assert names and set(names) == {image}, (source, names)
    assert f"docker build -t {image} ." in readme and f"kind load docker-image {image}" in readme
    _, final = stages()
    labels = dict(shlex.split(pair)[0].split("=", 1) for pair in shlex.split(values(final, "LABEL")[0]))
    assert labels["org.opencontainers.image.version"] == version


# An absolute path in a shell command: at its start, or after a space, `=` or a quote (not in a URL).
ABSOLUTE_PATH = re.compile(r"""(?:(?<=^)|(?<=[\s='"]))/(?=[\w.])""")
KNOWN_INSTRUCTIONS = {
    "COMMENT",
    "ARG",
    "FROM",
    "ENV",
    "WORKDIR",
    "COPY",
    "RUN",
    "LABEL",
    "USER",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
}


def context_files(source: str, patterns: list[str]) -> list[Path]:
    """The files of the build context under `source` that .dockerignore lets through."""
    path = REPO / source
    found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in found if not ignored(p.relative_to(REPO).as_posix(), patterns)]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


class DryBuild:
    """The Dockerfile's steps run on this machine, with / at `root`: WORKDIR and COPY from the
    build context (through .dockerignore), RUN through sh with its absolute paths moved under
    `root` and `python` this interpreter, COPY --from between stages, ENV as each stage sets it."""

    def __init__(self, root: Path, shims: Path) -> None:
        self.root = root
        self.shims = shims  # `python` on PATH: this interpreter, as the base image's
        self.patterns = [
            line.strip()
            for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]

    def at(self, path: str, workdir: str = "/") -> Path:
        absolute = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
        return self.root / absolute.lstrip("/")

    def run_stage(self, stage: list[Instruction], pip_env: dict[str, str]) -> dict[str, str]:
        """Runs one stage; returns its environment."""
        workdir = "/"
        env: dict[str, str] = {}
        for instruction in stage[1:]:
            name, value = instruction["instruction"], str(instruction["value"])
            assert name in KNOWN_INSTRUCTIONS, f"the dry run cannot interpret {name}"
            if name == "ENV":
                for pair in shlex.split(value):
                    key, _, setting = pair.partition("=")
                    env[key] = setting
            elif name == "WORKDIR":
                workdir = value
                self.at(workdir).mkdir(parents=True, exist_ok=True)
            elif name == "COPY":
                self.copy(value.split(), workdir)
            elif name == "RUN":
                command = ABSOLUTE_PATH.sub(str(self.root) + "/", value)
                run_env = {**os.environ, **env, **pip_env, "PATH": f"{self.shims}:{os.environ['PATH']}"}
                result = subprocess.run(
                    ["sh", "-c", command], cwd=self.at(workdir), env=run_env, capture_output=True, text=True
                )
                assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
        return env

    def copy(self, words: list[str], workdir: str) -> None:
        if words[0].startswith("--from="):
            (source, destination) = words[1:]
            # One root for both stages: the venv's paths (shebangs, pyvenv.cfg) stay as built.
            assert source == destination, "COPY --from to another path: the dry run keeps one root"
            assert self.at(source).is_dir(), f"the build stage made no {source}"
            return
        *sources, destination = words
        target = self.at(destination, workdir)
        for source in sources:
            for file in context_files(source, self.patterns):
                relative = file.relative_to(REPO / source) if (REPO / source).is_dir() else Path(file.name)
                into = target / relative if (REPO / source).is_dir() or destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, into)


def test_the_image_layout_builds_and_its_entrypoint_runs(tmp_path: Path) -> None:
    """The Dockerfile's steps, run without Docker into a folder (DryBuild): the wheel is built
    from the copied sources, installed into the virtualenv the final stage copies, and the
    image's entrypoint, `meshshift run`, found on the image's PATH, starts from that
    virtualenv. What cannot run here: pulling the base image (this machine's Python 3.11
    stands in for python:3.11-slim) and fetching the dependencies from the index (pip is
    told --no-deps and --no-index; the virtualenv reads them from this test environment,
    after its own site-packages, and each one is checked against the wheel's requirements)."""
    build, final = stages()
    backend = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    for requirement in map(Requirement, backend):  # pip builds with these, not an isolated copy
        have = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(have), (
            f"{requirement} is needed, {have} is installed: make venv"
        )
    root, shims = tmp_path / "root", tmp_path / "shims"
    root.mkdir()
    shims.mkdir()
    shim = shims / "python"  # a script, not a symlink: a symlink would lose this virtualenv
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    dry = DryBuild(root, shims)
    # No network: no index, no dependencies, the build backend from this environment
    # (pip reads PIP_NO_BUILD_ISOLATION=0 as --no-build-isolation).
    pip_env = {"PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "PIP_NO_BUILD_ISOLATION": "0"}
    dry.run_stage(build, pip_env)
    final_env = dry.run_stage(final, pip_env)
    ((source, _),) = [v.split()[1:] for v in values(final, "COPY")]
    venv = dry.at(source)

    # The copied virtualenv: meshshift with its package data and bytecode, no pip.
    (site,) = venv.glob("lib/python3.*/site-packages")
    package = site / "meshshift"
    shipped = {
        p.relative_to(REPO / "meshshift").as_posix()
        for pattern in ("py.typed", "observe/static/*", "observe/templates/*")
        for p in (REPO / "meshshift").glob(pattern)
    }
    assert "observe/static/favicon.svg" in shipped
    assert {name for name in shipped if (package / name).is_file()} == shipped
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 50
    tag = sys.implementation.cache_tag
    uncompiled = [m for m in modules if not (m.parent / "__pycache__" / f"{m.stem}.{tag}.pyc").is_file()]
    assert uncompiled == []
    assert not (venv / "bin" / "pip").exists() and not list(site.glob("pip*"))

    # The dependencies the wheel requires, satisfied by what the virtualenv is given.
    (dist,) = importlib.metadata.distributions(path=[str(site)])
    required = [Requirement(r) for r in dist.requires or []]
    needed = [r for r in required if r.marker is None or r.marker.evaluate({"extra": ""})]
    assert len(needed) > 5
    for requirement in needed:
        installed_version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed_version, prereleases=True), (
            requirement,
            installed_version,
        )
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz-test-dependencies.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")

    # The entrypoint as the image runs it: the final stage's ENV, `meshshift` from its PATH.
    outer = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run_env = {**outer}
    for key, value in final_env.items():
        run_env[key] = ABSOLUTE_PATH.sub(str(root) + "/", expand(value, outer))
    entrypoint = json.loads(values(final, "ENTRYPOINT")[-1])
    program = shutil.which(entrypoint[0], path=run_env["PATH"])
    assert program == str(venv / "bin" / entrypoint[0])
    assert Path(program).read_text(encoding="utf-8").splitlines()[0] == f"#!{venv}/bin/python"
    started = subprocess.run(
        [program, *entrypoint[1:], "--help"], cwd=tmp_path, env=run_env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("usage: meshshift run")
    # Every composition root imports from the copied virtualenv, not from this checkout.
    probe = (
        "import meshshift, meshshift.kube.operator, meshshift.standalone.daemon, meshshift.observe.server;"
        "print(meshshift.__file__)"
    )
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=run_env, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(package / "__init__.py")
