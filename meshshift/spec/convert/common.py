"""What every conversion shares: the notes it leaves, the documents it reads and writes, YAML out.

A conversion never drops a field silently: each field it cannot carry over is a note with the
field's path and the reason (`not-converted`), each one it carries over with a different
behaviour says how (`changed`), and each value it had to choose says so (`assumed`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from meshshift.spec import annotations as keys

NoteKind = Literal["not-converted", "changed", "assumed"]
NOTE_KINDS: tuple[NoteKind, ...] = ("not-converted", "changed", "assumed")


@dataclass(frozen=True, slots=True)
class ConversionNote:
    file: str
    document: int  # 0-based index of the source document in its file
    path: str  # the source document's field (`spec.strategy.canary.trafficRouting.alb`)
    reason: str
    kind: NoteKind = "not-converted"

    def __str__(self) -> str:
        return f"{self.file}:{self.document}:{self.path}: {self.kind}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.document,
            "path": self.path,
            "kind": self.kind,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SourceDocument:
    file: str
    index: int
    data: Any

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, Mapping) else None
        return kind if isinstance(kind, str) else None

    @property
    def api_group(self) -> str:
        api = self.data.get("apiVersion") if isinstance(self.data, Mapping) else None
        return str(api).split("/")[0] if isinstance(api, str) and "/" in api else ""

    @property
    def name(self) -> str:
        metadata = self.data.get("metadata") if isinstance(self.data, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        return str(name) if name is not None else ""

    @property
    def namespace(self) -> str | None:
        metadata = self.data.get("metadata") if isinstance(self.data, Mapping) else None
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        return str(namespace) if namespace else None

    def is_(self, kind: str, group: str) -> bool:
        return self.kind == kind and self.api_group == group


@dataclass
class Notes:
    """The notes about one source document."""

    source: SourceDocument
    found: list[ConversionNote] = field(default_factory=list)

    def not_converted(self, path: str, reason: str) -> None:
        self._add(path, reason, "not-converted")

    def changed(self, path: str, reason: str) -> None:
        self._add(path, reason, "changed")

    def assumed(self, path: str, reason: str) -> None:
        self._add(path, reason, "assumed")

    def _add(self, path: str, reason: str, kind: NoteKind) -> None:
        self.found.append(ConversionNote(self.source.file, self.source.index, path, reason, kind))


@dataclass
class OutputDocument:
    data: Any
    comment: str = ""  # written above the document
    converted: bool = True  # False: a source document kept as it was


@dataclass
class Workspace:
    """Every source document, what replaces each, and the documents a conversion adds.

    A source document no conversion touches is written out unchanged, in its place.
    """

    sources: list[SourceDocument]
    replaced: dict[int, list[OutputDocument]] = field(default_factory=dict)  # position -> documents
    edited: dict[int, Any] = field(default_factory=dict)  # position -> a changed copy of its data
    notes: list[ConversionNote] = field(default_factory=list)
    annotated: dict[int, str] = field(default_factory=dict)  # Deployment position -> what annotated it

    def find(self, kind: str, group: str, name: str, namespace: str | None) -> int | None:
        """The position of a source document of this kind and name (and namespace, when both say)."""
        for position, source in enumerate(self.sources):
            same_namespace = namespace is None or source.namespace is None or source.namespace == namespace
            if source.is_(kind, group) and source.name == name and same_namespace:
                return position
        return None

    def data(self, position: int) -> Any:
        """The document at `position` as it will be written (a copy to edit, the first time)."""
        if position not in self.edited:
            self.edited[position] = copy.deepcopy(self.sources[position].data)
        return self.edited[position]

    def replace(self, position: int, *documents: OutputDocument) -> None:
        self.replaced.setdefault(position, []).extend(documents)

    def output(self) -> list[OutputDocument]:
        documents: list[OutputDocument] = []
        for position, source in enumerate(self.sources):
            if position in self.replaced:
                documents.extend(self.replaced[position])
            elif position in self.edited:
                documents.append(OutputDocument(self.edited[position]))
            elif source.data is not None:
                documents.append(OutputDocument(source.data, converted=False))
        return documents


# The order meshshift's annotations are written in: where traffic goes, then how, then the steps.
ANNOTATION_ORDER = (
    keys.ENABLED,
    keys.ROUTER,
    keys.SERVICE,
    keys.ISTIO_VIRTUAL_SERVICE,
    keys.ISTIO_ROUTES,
    keys.NGINX_INGRESS,
    keys.TRAEFIK_SERVICE,
    keys.HTTP_ROUTE,
    keys.MAX_TRAFFIC_WEIGHT,
    keys.PROGRESS_DEADLINE,
    keys.ON_FAILURE,
    keys.ALLOW_NON_MONOTONIC,
    keys.SLACK_WEBHOOK_URL,
    keys.WEBHOOK_URL,
    keys.STEPS,
    keys.BLUE_GREEN,
    keys.ANALYSIS,
)


def ordered_annotations(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The user's annotations as they were, then meshshift's in ANNOTATION_ORDER."""
    theirs = {k: v for k, v in annotations.items() if k not in ANNOTATION_ORDER}
    ours = {k: annotations[k] for k in ANNOTATION_ORDER if k in annotations}
    return {**theirs, **ours}


# --- YAML out ------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (annotation values holding YAML) as `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


class _Flow(dict[Any, Any]):
    """A mapping written on one line."""


class _FlowList(list[Any]):
    """A list written on one line."""


_Dumper.add_representer(
    _Flow, lambda dumper, value: dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=True)
)
_Dumper.add_representer(
    _FlowList,
    lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True),
)


def _scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list)


def _leaves_in_flow(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Mapping):
        items = {k: _leaves_in_flow(v, depth + 1) for k, v in value.items()}
        flat = all(_scalar(v) or isinstance(v, _Flow | _FlowList) for v in items.values())
        return _Flow(items) if depth >= 2 and flat and len(str(items)) < 80 else items
    if isinstance(value, list):
        items_list = [_leaves_in_flow(v, depth + 1) for v in value]
        if (
            depth >= 2
            and all(_scalar(v) or isinstance(v, _Flow) for v in items_list)
            and len(str(items_list)) < 80
        ):
            return _FlowList(items_list)
        return items_list
    return value


def annotation_yaml(value: Any) -> str:
    """A value for an annotation holding YAML (steps, analysis), as people write it: blocks at the
    top, short leaves on one line (`- pause: {duration: 1m}`), in the order written."""
    return yaml.dump(
        _leaves_in_flow(value), Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=100
    )


def documents_yaml(documents: Sequence[OutputDocument]) -> str:
    parts = []
    for document in documents:
        text = yaml.dump(document.data, Dumper=_Dumper, sort_keys=False, width=100)
        comment = "".join(f"# {line}\n" for line in document.comment.splitlines())
        parts.append(comment + text)
    return "---\n".join(parts)
