"""Hostile YAML for the bounds tests and `bench/chaos.py`, and the Deployment that carries it."""

from __future__ import annotations

from typing import Any


def deployment_with_steps(steps: str, name: str = "shop") -> dict[str, Any]:
    """The least a Deployment holds to opt in with `steps` as its steps annotation (no pod spec)."""
    annotations = {
        "meshshift.io/enabled": "true",
        "meshshift.io/router": "istio",
        "meshshift.io/steps": steps,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
    }


def alias_bomb(levels: int = 6, width: int = 10, *, indent: str = "") -> str:
    """`levels` lists of `width` aliases to the list before: width**levels values from ~400 bytes."""
    lines = [f"{indent}- &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"{indent}- &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def deep_block(levels: int) -> str:
    """A block-style list nested `levels` deep (the shape that made lint hit RecursionError)."""
    return "".join("  " * depth + "-\n" for depth in range(levels - 1)) + "  " * (levels - 1) + "- x\n"


def deep_flow(levels: int) -> str:
    return "[" * levels + "]" * levels + "\n"


def many_aliases(count: int) -> str:
    return "- &x a\n" + "".join("- *x\n" for _ in range(count))
