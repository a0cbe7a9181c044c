"""Multi-document YAML files, and the parser that checks each document.

Checked, by kind:
- `Deployment`: its `meshshift.io/*` annotations (a Deployment not opted in is skipped);
- `AnalysisTemplate`, `ClusterAnalysisTemplate`;
- `StandaloneRollout`;
- `Rollout` (Argo Rollouts): its canary strategy;
and the fragments tutorials print: a bare list (canary steps), `strategy: {canary: ...}`
and `metrics: [...]`. Any other kind (Service, VirtualService, Ingress...) is skipped:
it is not a meshshift kind, and not an error.

Templates are collected from every document of every file first, so a rollout may use a
template defined in another file of the same run. The builtin names are always known.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshshift.spec.annotations import read_deployment
from meshshift.spec.argo import read_argo_rollout, read_strategy_fragment
from meshshift.spec.errors import Findings, Severity, SpecError, SpecIssue
from meshshift.spec.fields import check_keys, type_name
from meshshift.spec.model import AnalysisTemplate
from meshshift.spec.rollout import (
    BUILTIN_TEMPLATE_NAMES,
    RolloutPaths,
    RolloutPolicy,
    TemplateCatalog,
    build_rollout,
)
from meshshift.spec.standalone import read_standalone
from meshshift.spec.steps import read_steps
from meshshift.spec.templates import TEMPLATE_KINDS, compose_template, read_metrics, read_template
from meshshift.spec.yamldoc import YamlDocument, load_all

STEPS_ROOT = "steps"  # the path findings give a document that is a bare steps list


@dataclass(frozen=True, slots=True)
class Document:
    filename: str
    yaml: YamlDocument

    @property
    def index(self) -> int:
        return self.yaml.index

    @property
    def data(self) -> Any:
        return self.yaml.data


@dataclass(frozen=True, slots=True)
class DocumentFinding:
    """One finding of a lint run: where (file, document, path, line) and why."""

    file: str
    document: int | None  # 0-based index in the file; None for the file as a whole
    path: str
    reason: str
    severity: Severity = "error"
    line: int | None = None

    def __str__(self) -> str:
        document = "-" if self.document is None else str(self.document)
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{document}:{self.path}: {prefix}{self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.document,
            "path": self.path,
            "reason": self.reason,
            "severity": self.severity,
            "line": self.line,
        }


def load_documents(text: str, filename: str) -> tuple[list[Document], list[DocumentFinding]]:
    """The documents of a YAML stream, and a finding for a syntax error (which ends the stream)."""
    documents, error = load_all(text)
    loaded = [Document(filename, document) for document in documents]
    if error is None:
        return loaded, []
    finding = DocumentFinding(
        filename,
        error.index,
        "",
        f"invalid YAML at line {error.line}, column {error.column}: {error.message}",
        line=error.line,
    )
    return loaded, [finding]


# --- what a document is ------------------------------------------------------------

TEMPLATE = "template"
DEPLOYMENT = "deployment"
STANDALONE = "standalone"
ARGO_ROLLOUT = "argo-rollout"
STRATEGY = "strategy"
METRICS = "metrics"
STEPS = "steps"
OTHER_KIND = "other-kind"  # a Kubernetes kind meshshift does not read
EMPTY = "empty"
UNKNOWN = "unknown"

_KINDS = {
    **{kind: TEMPLATE for kind in TEMPLATE_KINDS},
    "Deployment": DEPLOYMENT,
    "StandaloneRollout": STANDALONE,
    "Rollout": ARGO_ROLLOUT,
}


def classify(data: object) -> str:
    if data is None:
        return EMPTY
    if isinstance(data, list):
        return STEPS
    if not isinstance(data, Mapping):
        return UNKNOWN
    kind = data.get("kind")
    if kind is None:
        if "strategy" in data:
            return STRATEGY
        if "metrics" in data:
            return METRICS
        return UNKNOWN
    return _KINDS.get(kind, OTHER_KIND) if isinstance(kind, str) else UNKNOWN


# --- checking ----------------------------------------------------------------------


def check_sources(
    sources: Sequence[tuple[str, str]], *, builtin_templates: Collection[str] = BUILTIN_TEMPLATE_NAMES
) -> list[DocumentFinding]:
    """Every finding for `(filename, text)` sources checked together."""
    documents: list[Document] = []
    syntax: list[DocumentFinding] = []
    for filename, text in sources:
        loaded, errors = load_documents(text, filename)
        documents.extend(loaded)
        syntax.extend(errors)
        if not errors and not any(classify(document.data) not in (OTHER_KIND, EMPTY) for document in loaded):
            syntax.append(
                DocumentFinding(
                    filename,
                    None,
                    "",
                    "no meshshift document found (expected a Deployment, AnalysisTemplate, "
                    "ClusterAnalysisTemplate, StandaloneRollout or Rollout)",
                    "warning",
                )
            )
    findings = check_documents(documents, builtin_templates=builtin_templates) + syntax
    order = {filename: position for position, (filename, _) in enumerate(sources)}
    return sorted(findings, key=lambda f: (order.get(f.file, 0), -1 if f.document is None else f.document))


def check_documents(
    documents: Sequence[Document], *, builtin_templates: Collection[str] = BUILTIN_TEMPLATE_NAMES
) -> list[DocumentFinding]:
    """Check templates first (from all documents), then everything that references them."""
    results: dict[int, Findings] = {}
    templates, cluster_templates = _collect_templates(documents, results)
    templates, cluster_templates = _compose_templates(documents, templates, cluster_templates, results)
    catalog = TemplateCatalog(templates, builtin_templates, cluster_templates)
    for position, document in enumerate(documents):
        kind = classify(document.data)
        if kind == TEMPLATE or kind not in _CHECKERS:
            continue
        findings = results.setdefault(position, Findings())
        _CHECKERS[kind](document.data, findings, catalog)
    located: list[DocumentFinding] = []
    for position, document in enumerate(documents):
        kind = classify(document.data)
        if kind in (OTHER_KIND, EMPTY):
            continue
        found = results.get(position, Findings())
        duplicates = [SpecIssue(path, reason) for path, reason in document.yaml.duplicates]
        root = STEPS_ROOT if kind == STEPS else ""
        if root:
            duplicates = [SpecIssue(root + issue.path, issue.reason) for issue in duplicates]
        located.extend(_locate(document, issue, root) for issue in [*duplicates, *found])
    return located


def _collect_templates(
    documents: Sequence[Document], results: dict[int, Findings]
) -> tuple[dict[str, AnalysisTemplate], dict[str, AnalysisTemplate]]:
    """Templates by name, and the ClusterAnalysisTemplates a namespaced one of the same name
    hides there. When names repeat the first one is kept; a namespaced template wins over a
    cluster one of the same name (a reference picks it by clusterScope)."""
    templates: dict[str, AnalysisTemplate] = {}
    cluster_templates: dict[str, AnalysisTemplate] = {}
    where: dict[str, str] = {}
    for position, document in enumerate(documents):
        if classify(document.data) != TEMPLATE:
            continue
        findings = results.setdefault(position, Findings())
        template = read_template(document.data, findings)
        if template is None:
            continue
        here = f"{document.filename}:{document.index}"
        if template.cluster_scope:
            cluster_templates.setdefault(template.name, template)
        existing = templates.get(template.name)
        if existing is None or (existing.cluster_scope and not template.cluster_scope):
            templates[template.name] = template
            where[template.name] = here
        elif existing.cluster_scope == template.cluster_scope and existing.namespace == template.namespace:
            findings.warning(
                "metadata.name",
                f'template "{template.name}" is also defined at {where[template.name]}; this one is ignored',
            )
    return templates, cluster_templates


def _compose_templates(
    documents: Sequence[Document],
    templates: dict[str, AnalysisTemplate],
    cluster_templates: dict[str, AnalysisTemplate],
    results: dict[int, Findings],
) -> tuple[dict[str, AnalysisTemplate], dict[str, AnalysisTemplate]]:
    """The templates with their `spec.templates` merged in; what cannot be merged is reported
    on the including template's document (which then stays as written)."""

    def lookup(name: str, cluster_scope: bool) -> AnalysisTemplate | None:
        found = cluster_templates.get(name) if cluster_scope else templates.get(name)
        return found if found is not None and found.cluster_scope == cluster_scope else None

    composed: dict[int, AnalysisTemplate] = {}  # id(template as read) -> merged
    for position, document in enumerate(documents):
        if classify(document.data) != TEMPLATE:
            continue
        for template in {id(t): t for t in (*templates.values(), *cluster_templates.values())}.values():
            if not template.includes or id(template) in composed or not _defined_by(template, document):
                continue
            try:
                composed[id(template)] = compose_template(template, lookup)
            except SpecError as error:
                results.setdefault(position, Findings()).extend(error)
    return (
        {name: composed.get(id(t), t) for name, t in templates.items()},
        {name: composed.get(id(t), t) for name, t in cluster_templates.items()},
    )


def _defined_by(template: AnalysisTemplate, document: Document) -> bool:
    data = document.data
    metadata = data.get("metadata") if isinstance(data, Mapping) else None
    return (
        isinstance(metadata, Mapping)
        and metadata.get("name") == template.name
        and (data.get("kind") == "ClusterAnalysisTemplate") == template.cluster_scope
    )


def _check_deployment(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    read_deployment(data, findings, catalog)


def _check_standalone(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    read_standalone(data, findings, templates=catalog.templates, builtin_templates=catalog.builtin)


def _check_argo_rollout(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    read_argo_rollout(data, findings, catalog)


def _check_strategy(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    read_strategy_fragment(data, findings, catalog)


def _check_metrics(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    assert isinstance(data, Mapping)  # classify() made sure
    check_keys(data, ("metrics",), "", findings)
    read_metrics(data["metrics"], "metrics", findings)


def _check_steps(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    steps = read_steps(data, STEPS_ROOT, findings)
    build_rollout(steps, None, RolloutPolicy(), RolloutPaths(steps=STEPS_ROOT), findings, catalog)


def _check_unknown(data: object, findings: Findings, catalog: TemplateCatalog) -> None:
    if isinstance(data, Mapping):
        findings.error(
            "kind" if "kind" in data else "",
            "cannot tell what this document is: it has no kind and is not a steps list, "
            "a `strategy:` fragment or a `metrics:` list",
        )
    else:
        findings.error("", f"expected a mapping or a list, got {type_name(data)}")


_CHECKERS: Mapping[str, Callable[[object, Findings, TemplateCatalog], None]] = {
    DEPLOYMENT: _check_deployment,
    STANDALONE: _check_standalone,
    ARGO_ROLLOUT: _check_argo_rollout,
    STRATEGY: _check_strategy,
    METRICS: _check_metrics,
    STEPS: _check_steps,
    UNKNOWN: _check_unknown,
}


def _locate(document: Document, issue: SpecIssue, root: str) -> DocumentFinding:
    return DocumentFinding(
        document.filename,
        document.index,
        issue.path,
        issue.reason,
        issue.severity,
        document.yaml.line_of(issue.path, root),
    )
