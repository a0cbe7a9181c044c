"""`meshshift convert`: Argo Rollouts and Flagger Canaries as meshshift's annotated Deployments.

`convert_sources([(filename, text), ...])` reads every document of every file and returns them
converted, in order: an Argo `Rollout` becomes a Deployment (argo.py); a Flagger `Canary`
annotates the Deployment it targets, and its `MetricTemplate`s become AnalysisTemplates
(flagger.py); every other document (AnalysisTemplates, Services, VirtualServices...) is kept,
rewritten only where a conversion points it at the Services meshshift manages. The notes list,
with each field's path, what could not be converted and what behaves differently
(common.ConversionNote). The converted documents are then checked as `meshshift lint` checks
them; its findings come with the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshshift.spec.convert.argo import convert_rollout
from meshshift.spec.convert.common import (
    ConversionNote,
    OutputDocument,
    SourceDocument,
    Workspace,
    documents_yaml,
)
from meshshift.spec.convert.flagger import convert_flagger
from meshshift.spec.documents import DocumentFinding, check_sources, load_documents

__all__ = ["Conversion", "ConversionNote", "convert_sources"]

DEFAULT_ROUTER = "istio"
ARGO_GROUP = "argoproj.io"
FLAGGER_GROUP = "flagger.app"


@dataclass
class Conversion:
    documents: list[OutputDocument]
    notes: list[ConversionNote]
    problems: list[DocumentFinding] = field(default_factory=list)  # unreadable input
    converted: int = 0  # Rollouts and Canaries converted
    lint: list[DocumentFinding] = field(default_factory=list)  # of the output, as `meshshift lint` sees it

    @property
    def yaml(self) -> str:
        return documents_yaml(self.documents)

    @property
    def lint_errors(self) -> list[DocumentFinding]:
        """Lint errors of the documents the conversion wrote (not of those it kept as they were)."""
        return [
            finding
            for finding in self.lint
            if finding.severity == "error"
            and (finding.document is None or self.documents[finding.document].converted)
        ]

    @property
    def kept_lint_errors(self) -> list[DocumentFinding]:
        """Lint errors of documents kept as they were (an AnalysisTemplate using a provider meshshift
        lacks, say): not the conversion's doing, but the output does not run as it is either."""
        return [f for f in self.lint if f.severity == "error" and f not in self.lint_errors]


def convert_sources(
    sources: Sequence[tuple[str, str]], *, router: str = DEFAULT_ROUTER, mesh_provider: str = "istio"
) -> Conversion:
    """Convert every Rollout and Canary of `sources` (see the module docstring). `router` is for
    rollouts whose routing meshshift has no router for; `mesh_provider` is Flagger's -mesh-provider
    flag, the provider of a Canary that names none."""
    documents: list[SourceDocument] = []
    problems: list[DocumentFinding] = []
    for filename, text in sources:
        loaded, errors = load_documents(text, filename)
        documents.extend(SourceDocument(filename, d.index, d.data) for d in loaded)
        problems.extend(errors)
    workspace = Workspace(documents)
    converted = 0
    for position, source in enumerate(documents):
        if source.kind == "Rollout" and source.api_group in (ARGO_GROUP, ""):  # "": a pasted fragment
            convert_rollout(position, workspace, default_router=router)
            converted += 1
    converted += convert_flagger(workspace, default_router=router, mesh_provider=mesh_provider)
    conversion = Conversion(workspace.output(), workspace.notes, problems, converted)
    conversion.lint = check_sources([("converted", conversion.yaml)])
    return conversion
