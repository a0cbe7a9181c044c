"""Argo Rollouts' own documents (tests/conformance/argo/), and what meshshift makes of each.

A case is one Rollout, AnalysisTemplate or ClusterAnalysisTemplate document of a copied
file (or a copied file that is not YAML at all). Its outcome in meshshift is what a user
who pastes it sees:

- lint: `meshshift lint` on the case's file together with the templates it references
  (found in the same file first, then in the same folder, then anywhere in the corpus, as
  they would be applied to one cluster); the case's errors are its own and those of every
  template it references;
- run (only when lint found no error): a Rollout's canary is driven through the engine to
  the end, promoting its indefinite pauses, and every analysis the engine starts is
  created by the real AnalysisExecutor (templates looked up, args resolved from values,
  Secrets of the same file and the Rollout's metadata, metrics instantiated). A template
  is instantiated the way a Rollout would, with a value for each arg that has none.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshshift.analysis.providers import InlineTemplates, default_providers
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.engine.machine import CommandKind
from meshshift.engine.state import RolloutPhase
from meshshift.runtime.analysis import AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.argo import read_argo_rollout
from meshshift.spec.documents import Document, DocumentFinding, check_documents, classify, load_documents
from meshshift.spec.errors import Findings
from meshshift.spec.model import AnalysisPhase, AnalysisRef, AnalysisTemplate, Arg, RolloutSpec, TemplateRef
from meshshift.spec.rollout import BUILTIN_TEMPLATE_NAMES, TemplateCatalog
from meshshift.spec.templates import read_template
from tests.engine_world import World

HERE = Path(__file__).parent
CORPUS = HERE / "argo"
CASE_KINDS = ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")


@dataclass(frozen=True)
class Case:
    key: str  # "path/in/corpus.yaml#document", or "path" for a file that is not YAML
    file: str
    document: int | None
    kind: str | None
    data: Any


@dataclass
class Outcome:
    errors: list[str] = field(default_factory=list)  # "path: reason", own and referenced templates'
    warnings: list[DocumentFinding] = field(default_factory=list)
    run_error: str | None = None
    ran: bool = False

    @property
    def accepted(self) -> bool:
        return not self.errors and self.run_error is None


@dataclass
class Corpus:
    documents: dict[str, list[Document]]  # by file
    syntax_errors: dict[str, str]

    @classmethod
    def load(cls, root: Path = CORPUS) -> Corpus:
        documents: dict[str, list[Document]] = {}
        syntax: dict[str, str] = {}
        for path in sorted(root.rglob("*.yaml")):
            name = str(path.relative_to(root))
            loaded, errors = load_documents(path.read_text(), name)
            documents[name] = loaded
            if errors:
                syntax[name] = errors[0].reason
        return cls(documents, syntax)

    def cases(self) -> Iterator[Case]:
        for name, documents in self.documents.items():
            if name in self.syntax_errors:  # what follows the error is not read
                yield Case(name, name, None, None, None)
            for document in documents:
                kind = _kind(document.data)
                if kind in CASE_KINDS:
                    yield Case(f"{name}#{document.index}", name, document.index, kind, document.data)

    # --- the templates a case can see ---------------------------------------------------

    def catalog_documents(self, file: str) -> list[Document]:
        """Templates of other files, nearest first, one per name and scope, none named in `file`."""
        own = {_template_key(d.data) for d in self.documents[file] if classify(d.data) == "template"}
        folder = str(Path(file).parent)
        near = [f for f in self.documents if f != file and str(Path(f).parent) == folder]
        far = [f for f in self.documents if f != file and f not in near]
        chosen: list[Document] = []
        seen = set(own)
        for other in [*near, *far]:
            for document in self.documents[other]:
                if classify(document.data) != "template":
                    continue
                key = _template_key(document.data)
                if key in seen:
                    continue
                seen.add(key)
                chosen.append(document)
        return chosen

    # --- the outcome ------------------------------------------------------------------

    def outcome(self, case: Case) -> Outcome:
        outcome = Outcome()
        if case.document is None:
            outcome.errors.append(self.syntax_errors[case.file])
            return outcome
        own = self.documents[case.file]
        catalog_docs = self.catalog_documents(case.file)
        findings = check_documents([*own, *catalog_docs])
        referenced = _referenced_templates(case.data, [*own, *catalog_docs])
        for finding in findings:
            mine = finding.file == case.file and finding.document == case.document
            theirs = (finding.file, finding.document) in referenced
            if not (mine or theirs):
                continue
            if finding.severity == "error":
                where = "" if mine else f"(template {finding.file}#{finding.document}) "
                outcome.errors.append(f"{where}{finding.path}: {finding.reason}")
            elif mine:
                outcome.warnings.append(finding)
        if outcome.errors:
            return outcome
        templates = _templates([*own, *catalog_docs])
        try:
            if case.kind == "Rollout":
                _run_rollout(case, templates, self.secrets(case.file))
            else:
                _run_template(case, templates, self.secrets(case.file))
        except AssertionError as error:
            outcome.run_error = str(error) or "run failed"
        outcome.ran = True
        return outcome

    def secrets(self, file: str) -> dict[str, dict[str, str]]:
        """The Secrets of `file` (data decoded, stringData as is), as a cluster would hold them."""
        found: dict[str, dict[str, str]] = {}
        for document in self.documents[file]:
            data = document.data
            if _kind(data) != "Secret":
                continue
            values = {k: base64.b64decode(str(v)).decode() for k, v in (data.get("data") or {}).items()}
            values.update({k: str(v) for k, v in (data.get("stringData") or {}).items()})
            found[str(data["metadata"]["name"])] = values
        return found


def _kind(data: object) -> str | None:
    kind = data.get("kind") if isinstance(data, Mapping) else None
    return kind if isinstance(kind, str) else None


def _template_key(data: Any) -> tuple[str, bool]:
    metadata = data.get("metadata") if isinstance(data, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return (str(name), data.get("kind") == "ClusterAnalysisTemplate")


def _template_refs(data: object) -> Iterator[tuple[str, bool]]:
    """Every `{templateName, clusterScope}` reference inside `data`."""
    if isinstance(data, Mapping):
        if isinstance(data.get("templateName"), str):
            yield (data["templateName"], data.get("clusterScope") is True)
        for value in data.values():
            yield from _template_refs(value)
    elif isinstance(data, list):
        for value in data:
            yield from _template_refs(value)


def _referenced_templates(data: object, documents: Sequence[Document]) -> set[tuple[str, int]]:
    """(file, document) of every template `data` references, transitively."""
    by_key: dict[tuple[str, bool], Document] = {}
    for document in documents:
        if classify(document.data) == "template":
            by_key.setdefault(_template_key(document.data), document)
    found: set[tuple[str, int]] = set()
    pending = list(_template_refs(data.get("spec") if isinstance(data, Mapping) else None))
    while pending:
        ref = pending.pop()
        referenced = by_key.get(ref)
        if referenced is None or (referenced.filename, referenced.index) in found:
            continue
        found.add((referenced.filename, referenced.index))
        pending.extend(_template_refs(referenced.data.get("spec")))
    return found


def _templates(documents: Sequence[Document]) -> dict[tuple[str, bool], AnalysisTemplate]:
    templates: dict[tuple[str, bool], AnalysisTemplate] = {}
    for document in documents:
        if classify(document.data) != "template":
            continue
        template = read_template(document.data, Findings())
        if template is not None:
            templates.setdefault((template.name, template.cluster_scope), template)
    return templates


# --- running ----------------------------------------------------------------------------


Templates = Mapping[tuple[str, bool], AnalysisTemplate]  # by (name, cluster scope)
Secrets = Mapping[str, Mapping[str, str]]


def _run_rollout(case: Case, templates: Templates, secrets: Secrets) -> None:
    # By name, a namespaced template winning over a cluster one (as lint resolves them).
    by_name = {name: t for (name, cluster), t in templates.items() if cluster}
    by_name |= {name: t for (name, cluster), t in templates.items() if not cluster}
    cluster = {name: t for (name, is_cluster), t in templates.items() if is_cluster}
    catalog = TemplateCatalog(by_name, BUILTIN_TEMPLATE_NAMES, cluster)
    findings = Findings()
    spec = read_argo_rollout(case.data, findings, catalog)
    assert spec is not None and not findings.has_errors, "lint was clean but the Rollout did not parse"
    world = _drive(spec)
    assert world.phase() == RolloutPhase.HEALTHY and world.promotions == ["v2"], (
        f"the engine did not promote the canary: phase {world.phase()}, promotions {world.promotions}"
    )
    for start in world.started:
        run = asyncio.run(_create_run(start, templates, secrets))
        assert run.phase != AnalysisPhase.ERROR, f"analysis {start.run_name}: {run.message}"


def _drive(spec: RolloutSpec) -> World:
    """Roll v2 out over a ready v1: every analysis Successful, every indefinite pause promoted."""
    world = World(spec)
    world.tick()
    world.revision = "v2"
    for _ in range(len(spec.steps) + 5):
        world.settle()
        if world.phase() != RolloutPhase.PAUSED:
            break
        world.command(CommandKind.PROMOTE)
    return world


async def _create_run(
    start: StartAnalysis,
    templates: Mapping[tuple[str, bool], AnalysisTemplate],
    secrets: Mapping[str, Mapping[str, str]],
) -> AnalysisRun:
    """The run the daemon would create for `start` (its measurements are not taken)."""
    created: list[AnalysisRun] = []

    async def read_secret(name: str, namespace: str | None) -> Mapping[str, str] | None:
        # A Secret of the case's file, else one holding every key: the user's cluster has it.
        return secrets.get(name) or AnyKey()

    executor = AnalysisExecutor(
        templates=InlineTemplates(*templates.values()),
        providers=default_providers(environ={}),
        clock=lambda: 0.0,
        on_change=created.append,
        arg_context=lambda _: ArgContext(
            builtin_args(canary="v2hash", stable="v1hash", namespace="default"),
            namespace="default",
            secret_reader=read_secret,
        ),
    )
    await executor.start(start)
    await executor.close()  # before the first measurement: only the run's creation is checked
    assert created, f"analysis {start.run_name} was not created"
    return created[-1]


class AnyKey(dict[str, str]):
    """A Secret's data with a value for every key."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"value-of-{key}"


def _run_template(case: Case, templates: Templates, secrets: Secrets) -> None:
    template = templates.get(_template_key(case.data))
    assert template is not None, "lint was clean but the template did not parse"
    args = tuple(Arg(a.name, value="1") for a in template.args if a.value is None and a.value_from is None)
    refs = (TemplateRef(template.name, cluster_scope=template.cluster_scope),)
    ref = AnalysisRef(templates=refs, args=args)
    start = StartAnalysis(f"{template.name}-run", AnalysisKind.STEP, ref, revision="v2", stable_revision="v1")
    run = asyncio.run(_create_run(start, templates, secrets))
    assert run.phase != AnalysisPhase.ERROR, f"template {template.name}: {run.message}"


# --- expectations ---------------------------------------------------------------------

EXPECTATION = re.compile(r"^(accepted|refused|invalid|differs):?(?:\s+(.*))?$")


def documented_features(readme: str) -> dict[str, str]:
    """The README's table of unsupported Argo features: feature -> the text its lint error contains."""
    section = readme.split("<!-- unsupported-features -->")[1]
    features: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[1].startswith("`") or cells[0].startswith("-"):
            continue
        features[cells[0]] = cells[1].split("`")[1]
    return features


def named_features(outcome: Outcome, features: Mapping[str, str]) -> set[str]:
    return {name for name, text in features.items() if any(text in error for error in outcome.errors)}
