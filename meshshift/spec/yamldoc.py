"""YAML text to Python values, keeping what plain `yaml.safe_load` throws away.

For each document: its index in the stream, the line it starts on, the line of every
value by path (so a finding at `spec.steps[3].setWeight` can name line 27) and the keys
written twice in one mapping (YAML keeps only the last, silently).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshshift.spec.bounds import yaml_problem
from meshshift.spec.errors import Findings
from meshshift.spec.fields import at

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class YamlDocument:
    index: int  # 0-based position in the stream
    data: Any
    line: int  # 1-based line where the document's content starts
    lines: Mapping[str, int] = field(default_factory=dict)  # path -> 1-based line
    duplicates: tuple[tuple[str, str], ...] = ()  # (path, reason) of keys written twice

    def line_of(self, path: str, root: str = "") -> int:
        """The line of `path`, or of its closest known ancestor (an annotation's inner steps).

        `root` is the name the findings give the document itself ("steps" for a bare
        steps list), stripped before the lookup.
        """
        if root and path.startswith(root):
            path = path[len(root) :]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return self.line


@dataclass(frozen=True, slots=True)
class YamlSyntaxError:
    index: int  # the document it was found in
    line: int
    column: int
    message: str


def load_all(text: str) -> tuple[list[YamlDocument], YamlSyntaxError | None]:
    """Every document up to the first syntax error, and that error if any.

    A text past one of meshshift's bounds (size, aliases, values, depth: see
    meshshift.spec.bounds) yields no document and an error naming the bound.
    """
    exceeded = yaml_problem(text)
    if exceeded is not None:
        return [], YamlSyntaxError(exceeded.document, exceeded.line, exceeded.column, exceeded.message)
    documents: list[YamlDocument] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # end of stream
                break
            data = loader.construct_document(node)
            lines, duplicates = _index_node(node)
            documents.append(YamlDocument(len(documents), data, node.start_mark.line + 1, lines, duplicates))
    except yaml.YAMLError as error:
        line, column = _position(error)
        return documents, YamlSyntaxError(len(documents), line, column, describe_error(error))
    finally:
        loader.dispose()
    return documents, None


def load_value(text: str, path: str, findings: Findings, *, where: str) -> tuple[bool, Any]:
    """(ok, value) of YAML text held in a string, e.g. an annotation's value.

    A syntax error or a duplicate key becomes a finding at `path`; `where` says what the
    line numbers count from ("the annotation value").
    """
    documents, error = load_all(text)
    if error is not None:
        findings.error(
            path, f"invalid YAML at line {error.line}, column {error.column} of {where}: {error.message}"
        )
        return False, None
    if len(documents) > 1:
        findings.error(path, f"{where} holds {len(documents)} YAML documents; write one")
        return False, None
    if not documents:
        return True, None
    for dup_path, reason in documents[0].duplicates:
        findings.error(path + dup_path if dup_path.startswith("[") else f"{path}.{dup_path}", reason)
    return True, documents[0].data


def describe_error(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [part for part in (error.context, error.problem) if part]
        return "; ".join(parts) or str(error)
    return str(error)


def _position(error: yaml.YAMLError) -> tuple[int, int]:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None:
        return 0, 0
    return mark.line + 1, mark.column + 1


def _parent(path: str) -> str:
    """`a.b[2]` -> `a.b`; `a.b` -> `a`; `a["x.y"]` -> `a`."""
    if path.endswith("]"):
        return path[: _matching_bracket(path)]
    dot = path.rfind(".")
    bracket = path.rfind("]")
    return path[:dot] if dot > bracket else path[: bracket + 1] if bracket >= 0 else ""


def _matching_bracket(path: str) -> int:
    """Index of the `[` opening the last `[...]` of `path` (quoted keys may hold brackets)."""
    if path.endswith('"]'):
        return path.rfind('["', 0, len(path) - 2)
    return path.rfind("[")


def _index_node(node: yaml.Node) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    lines: dict[str, int] = {}
    duplicates: list[tuple[str, str]] = []
    for path, child in _walk(node, "", set()):
        lines.setdefault(path, child.start_mark.line + 1)
        if isinstance(child, yaml.MappingNode):
            duplicates.extend(_duplicate_keys(child, path))
    return lines, tuple(duplicates)


def _walk(node: yaml.Node, path: str, active: set[int]) -> Iterator[tuple[str, yaml.Node]]:
    """(path, node) for the node and everything under it; aliases are followed once per branch."""
    if id(node) in active:
        return
    yield path, node
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                yield from _walk(value, at(path, key.value), active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, at(path, index), active)
    active.discard(id(node))


def _duplicate_keys(node: yaml.MappingNode, path: str) -> Iterator[tuple[str, str]]:
    first_line: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
            continue
        line = key.start_mark.line + 1
        if key.value in first_line:
            yield (
                at(path, key.value),
                f'key "{key.value}" is written twice (lines {first_line[key.value]} and {line}); '
                "YAML keeps only the last one",
            )
        else:
            first_line[key.value] = line
