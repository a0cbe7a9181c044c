"""Imports flow one way (DESIGN.md §3): a module imports only from its own layer or below.

The layers, top to bottom. A module belongs to the most specific entry naming it; siblings
in one layer (separated by `|`) must not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meshshift"

LAYERS: list[list[str]] = [
    ["meshshift.cli"],
    ["meshshift.demo"],
    ["meshshift.kube.operator", "meshshift.standalone.daemon"],
    ["meshshift.observe"],
    ["meshshift.runtime"],
    ["meshshift.routers", "meshshift.analysis.providers", "meshshift.kube", "meshshift.standalone"],
    ["meshshift.ports"],
    ["meshshift.engine", "meshshift.analysis"],
    ["meshshift.spec"],
    ["meshshift.analysis.expr"],
    [
        "meshshift.codec",
        "meshshift.settings",
        "meshshift.logs",
        "meshshift.processes",
        "meshshift.backoff",
        "meshshift.files",
    ],
    ["meshshift"],
]
# Adapters of one layer may use each other where one is the other's client library.
ALLOWED_SIBLINGS = {
    ("meshshift.routers", "meshshift.kube"),  # the Kubernetes routers use the API client
}


def _owner(module: str) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for depth, layer in enumerate(LAYERS):
        for name in layer:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (depth, name)
    assert best is not None, module
    return best


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from meshshift.routers import envoy` imports the submodule
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "meshshift" or name.startswith("meshshift.")}


def _violations(package: Path = PACKAGE) -> list[str]:
    modules = _modules(package)
    problems = []
    for module, path in sorted(modules.items()):
        depth, owner = _owner(module)
        for imported in sorted(_imports(module, path)):
            if imported not in modules:
                continue  # a name imported from a module, not a module
            their_depth, their_owner = _owner(imported)
            if their_owner == owner or their_depth > depth:
                continue
            if their_depth == depth and (owner, their_owner) in ALLOWED_SIBLINGS:
                continue
            problems.append(f"{module} ({owner}) imports {imported} ({their_owner})")
    return problems


def test_imports_flow_down_the_layers() -> None:
    assert _violations() == []


def test_nothing_but_the_demo_and_cli_imports_the_demo() -> None:
    users = [
        module
        for module, path in _modules().items()
        if not module.startswith(("meshshift.demo", "meshshift.cli"))
        and any(name.startswith("meshshift.demo") for name in _imports(module, path))
    ]
    assert users == []


def test_the_checker_flags_a_climbing_import(tmp_path: Path) -> None:
    package = tmp_path / "meshshift"
    (package / "engine").mkdir(parents=True)
    (package / "cli").mkdir()
    for init in ("__init__.py", "engine/__init__.py", "cli/__init__.py"):
        (package / init).write_text("")
    (package / "cli" / "main.py").write_text("from meshshift.engine import machine\n")
    (package / "engine" / "machine.py").write_text("def f():\n    from meshshift.cli import main\n")
    assert _violations(package) == [
        "meshshift.engine.machine (meshshift.engine) imports meshshift.cli (meshshift.cli)",
        "meshshift.engine.machine (meshshift.engine) imports meshshift.cli.main (meshshift.cli)",
    ]
