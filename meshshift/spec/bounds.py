"""How much input meshshift reads: bounds checked before anything is built or expanded.

Any tenant who can annotate a Deployment, and anyone who hands `meshshift lint` a file,
writes input this daemon parses. YAML aliases make a few hundred bytes expand into
millions of values (a 413-byte "alias bomb" of six levels of ten aliases is over 10^6;
seven levels exhaust memory), and deep nesting exhausts Python's recursion in any
recursive walker. So YAML text is checked as a stream of parser events, before a single
node is composed:

- size: 1 MiB of text. Kubernetes caps all annotations of an object at 256 KiB and an
  object at 1.5 MiB; a rollout file with inline templates is a few kB.
- aliases: 100 uses (`*name`) per text. Hand-written specs use a handful (merge keys for
  shared metric fields); a bomb needs many.
- values: 20,000 nodes, each alias counted as what it expands to. The largest document of
  Argo Rollouts' examples and docs (its full Rollout specification) has 250; checking and
  reading 20,000 takes a fraction of a second and a few MB.
- depth: 64 nested collections. Argo's full specification is 12 deep; 64 stays far below
  Python's recursion limit for every recursive walker after this check.
- integers: 4,300 digits, Python's own limit for reading one (past it, int() raises).

Already-parsed JSON (an AnalysisTemplate object from the API) gets the same values and
depth bounds through `data_problem`. An input past a bound is refused with a message
naming the bound: a lint error, or the InvalidSpec of a rollout; nothing else changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_TEXT_CHARS = 1024 * 1024
MAX_ALIASES = 100
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_INT_DIGITS = 4300  # sys.int_info.default_max_str_digits
_LONG_INTEGER = re.compile(r"[-+]?(0[xob])?[0-9a-fA-F_]+")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class BoundExceeded:
    """Where and how a YAML text passes a bound (1-based line and column)."""

    document: int  # 0-based index of the document it was found in
    line: int
    column: int
    message: str


def yaml_problem(text: str) -> BoundExceeded | None:
    """The first bound `text` passes, or None; syntax errors are left to the real parse."""
    if len(text) > MAX_TEXT_CHARS:
        return BoundExceeded(
            0, 1, 1, f"the text is {len(text)} characters, more than meshshift reads ({MAX_TEXT_CHARS})"
        )
    document = 0
    aliases = 0
    nodes = 0
    open_frames: list[tuple[int, str | None]] = []  # (nodes so far, anchor) per open collection
    open_anchors: set[str] = set()
    sizes: dict[str, int] = {}  # anchor -> how many nodes an alias to it expands to
    try:
        for event in yaml.parse(text, Loader=_Loader):
            mark = event.start_mark
            size = 0
            if isinstance(event, yaml.DocumentEndEvent):
                document += 1
                continue
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_frames) >= MAX_DEPTH:
                    return _at(
                        document, mark, f"nested more than {MAX_DEPTH} levels deep (meshshift's limit)"
                    )
                open_frames.append((1, event.anchor))
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                size, anchor = open_frames.pop()
                if anchor is not None:
                    open_anchors.discard(anchor)
                    sizes[anchor] = size
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                value = event.value
                if len(value) > MAX_INT_DIGITS and event.implicit[0] and _LONG_INTEGER.fullmatch(value):
                    return _at(
                        document,
                        mark,
                        f"an integer of {len(value)} digits (meshshift reads at most {MAX_INT_DIGITS})",
                    )
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    return _at(document, mark, f"more than {MAX_ALIASES} aliases (meshshift's limit)")
                if event.anchor in open_anchors:
                    return _at(
                        document, mark, f"alias *{event.anchor} is inside the node it names (recursive YAML)"
                    )
                size = sizes.get(event.anchor or "", 1)  # an unknown anchor: the parse reports it
            else:
                continue
            nodes += size
            if open_frames:
                count, anchor = open_frames[-1]
                open_frames[-1] = (count + size, anchor)
            if nodes > MAX_NODES:
                return _at(
                    document,
                    mark,
                    f"more than {MAX_NODES} values once its aliases are expanded (meshshift's limit)",
                )
    except yaml.YAMLError:
        return None  # a syntax error: the composing parse reports it with its position
    return None


def _at(document: int, mark: Any, message: str) -> BoundExceeded:
    if mark is None:
        return BoundExceeded(document, 0, 0, message)
    return BoundExceeded(document, mark.line + 1, mark.column + 1, message)


def data_problem(value: object) -> str | None:
    """The first bound a parsed JSON value passes (values, depth), or None. Never recursive."""
    nodes = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        current, depth = pending.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"more than {MAX_NODES} values (meshshift's limit)"
        if isinstance(current, dict | list):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep (meshshift's limit)"
            if nodes + len(current) > MAX_NODES:
                return f"more than {MAX_NODES} values (meshshift's limit)"
            children = current.values() if isinstance(current, dict) else current
            pending.extend((child, depth + 1) for child in children)
    return None
