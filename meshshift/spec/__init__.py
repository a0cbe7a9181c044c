"""Parse and validate what users write: annotations, standalone files, templates, steps.

Every reader collects findings (path + reason) instead of stopping at the first mistake;
the `parse_*` functions raise SpecError carrying all of them.
"""

from meshshift.spec.annotations import ANNOTATION_KEYS, parse_deployment, read_deployment
from meshshift.spec.argo import parse_argo_rollout, parse_strategy, read_argo_rollout, read_strategy_fragment
from meshshift.spec.documents import Document, DocumentFinding, check_documents, check_sources, load_documents
from meshshift.spec.durations import format_duration, parse_duration
from meshshift.spec.errors import Findings, SpecError, SpecIssue
from meshshift.spec.rollout import (
    BUILTIN_ARGS,
    BUILTIN_TEMPLATE_NAMES,
    RolloutPaths,
    RolloutPolicy,
    TemplateCatalog,
    build_rollout,
    validate_rollout,
)
from meshshift.spec.standalone import parse_standalone, read_standalone
from meshshift.spec.steps import read_background_analysis, read_steps
from meshshift.spec.templates import (
    instantiate_template,
    parse_metrics,
    parse_template,
    read_template,
    resolve_args,
    substitute_args,
)

__all__ = [
    "ANNOTATION_KEYS",
    "BUILTIN_ARGS",
    "BUILTIN_TEMPLATE_NAMES",
    "Document",
    "DocumentFinding",
    "Findings",
    "RolloutPaths",
    "RolloutPolicy",
    "SpecError",
    "SpecIssue",
    "TemplateCatalog",
    "build_rollout",
    "check_documents",
    "check_sources",
    "format_duration",
    "instantiate_template",
    "load_documents",
    "parse_argo_rollout",
    "parse_deployment",
    "parse_duration",
    "parse_metrics",
    "parse_standalone",
    "parse_strategy",
    "parse_template",
    "read_argo_rollout",
    "read_background_analysis",
    "read_deployment",
    "read_standalone",
    "read_steps",
    "read_strategy_fragment",
    "read_template",
    "resolve_args",
    "substitute_args",
    "validate_rollout",
]
