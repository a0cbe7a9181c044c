"""The meshshift.io CRDs: structural, in step with the template parser, and right about real templates."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from meshshift.analysis.providers.builtin import MESHES, builtin_document
from meshshift.spec.errors import Findings
from meshshift.spec.templates import (
    BUILTIN_METRICS,
    METRIC_FIELDS,
    PROVIDERS,
    TEMPLATE_SPEC_FIELDS,
    read_template,
)
from tests.ship.support import (
    CRD_FILE,
    REPO,
    SEED,
    TEMPLATE_KINDS,
    Document,
    crd_schema,
    load_documents,
    sample_files,
    schema_errors,
    strict,
    walk,
    with_value,
)

JUNCTORS = ("anyOf", "allOf", "oneOf", "not")
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
# Keys the API server refuses inside anyOf/allOf/oneOf/not of a structural schema.
NOT_IN_JUNCTORS = ("type", "additionalProperties", "default", "nullable", "description")


def structural_problems(schema: Mapping[str, Any]) -> list[str]:
    """What makes an openAPIV3Schema non-structural, by the API server's rules (kubernetes-validate
    checks the CRD's own fields, not these): every field has a type unless it is int-or-string or
    keeps unknown fields; properties and additionalProperties exclude each other; junctors hold
    no types (int-or-string's anyOf excepted); metadata restricts nothing but name/generateName."""
    problems = []
    for path, node in walk(schema):
        where = path or "<root>"
        if not (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{where}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: both properties and additionalProperties")
        for junctor in JUNCTORS:
            if junctor not in node:
                continue
            if (
                junctor == "anyOf"
                and node.get("x-kubernetes-int-or-string")
                and node[junctor] == INT_OR_STRING
            ):
                continue
            branches = node[junctor] if isinstance(node[junctor], list) else [node[junctor]]
            for branch in branches:
                for _inner_path, inner in walk(branch):
                    bad = [key for key in NOT_IN_JUNCTORS if key in inner]
                    if bad:
                        problems.append(f"{where}.{junctor}: {', '.join(bad)} not allowed")
    if schema.get("type") != "object":
        problems.append("<root>: not an object")
    metadata = (schema.get("properties") or {}).get("metadata") or {}
    if set(metadata.get("properties") or {}) - {"name", "generateName"}:
        problems.append(".metadata: restricts fields other than name and generateName")
    return problems


def as_meshshift_template(doc: Mapping[str, Any]) -> Document:
    return {**copy.deepcopy(dict(doc)), "apiVersion": "meshshift.io/v1alpha1"}


def seed_templates() -> list[tuple[str, Document]]:
    """The tutorial's AnalysisTemplates, and its bare `metrics:` snippets as templates."""
    found = []
    for path in sorted(SEED.glob("*.yaml")):
        for index, doc in enumerate(load_documents(path)):
            where = f"{path.name}:{index}"
            if isinstance(doc, dict) and doc.get("kind") in TEMPLATE_KINDS:
                found.append((where, as_meshshift_template(doc)))
            elif isinstance(doc, dict) and set(doc) == {"metrics"}:
                template = {"kind": "AnalysisTemplate", "metadata": {"name": "snippet"}, "spec": doc}
                found.append((where, as_meshshift_template(template)))
    return found


def sample_templates() -> list[tuple[str, Document]]:
    paths = [*sample_files(), *sorted((REPO / "tests" / "data" / "exercise").glob("*.yaml"))]
    found = []
    for path in paths:
        for doc in load_documents(path):
            if doc.get("kind") in TEMPLATE_KINDS:
                found.append((path.name, as_meshshift_template(doc)))
            for inline in (doc.get("spec") or {}).get("templates") or []:  # a standalone file's
                found.append((f"{path.name}:{inline['metadata']['name']}", as_meshshift_template(inline)))
    return found


def builtin_templates() -> list[tuple[str, Document]]:
    documents = [
        (f"{mesh}/{name}", builtin_document(name, mesh)) for mesh in MESHES for name in BUILTIN_METRICS
    ]
    documents += [
        (f"envoy-admin/{n}", builtin_document(n, "envoy", source="envoy-admin")) for n in BUILTIN_METRICS
    ]
    return documents


def test_both_crds_are_structural_and_alike() -> None:
    crds = load_documents(CRD_FILE)
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == sorted(TEMPLATE_KINDS)
    assert {c["spec"]["scope"] for c in crds} == {"Namespaced", "Cluster"}
    for kind in TEMPLATE_KINDS:
        assert structural_problems(crd_schema(kind)) == [], kind
    assert crd_schema("AnalysisTemplate") == crd_schema("ClusterAnalysisTemplate")


def test_the_schema_has_what_the_parser_reads() -> None:
    """The CRD and meshshift/spec/templates.py name the same fields, providers and options."""
    spec = crd_schema("AnalysisTemplate")["properties"]["spec"]
    assert set(spec["properties"]) == set(TEMPLATE_SPEC_FIELDS)
    metric = spec["properties"]["metrics"]["items"]
    assert set(metric["properties"]) == set(METRIC_FIELDS)
    providers = metric["properties"]["provider"]["properties"]
    assert set(providers) == set(PROVIDERS)
    for kind, schema in PROVIDERS.items():
        assert set(providers[kind]["properties"]) == set(schema.options), kind
        assert set(providers[kind].get("required", [])) == set(schema.required), kind


REAL_TEMPLATES = seed_templates() + sample_templates() + builtin_templates()


@pytest.mark.parametrize(("where", "doc"), REAL_TEMPLATES, ids=[where for where, _ in REAL_TEMPLATES])
def test_the_schema_accepts_real_templates(where: str, doc: Document) -> None:
    for kind in TEMPLATE_KINDS:
        assert schema_errors(strict(crd_schema(kind)), {**doc, "kind": kind}) == [], where


def test_every_source_of_templates_was_found() -> None:
    assert len(seed_templates()) == 7  # 4 templates and 3 metric snippets in the tutorial
    assert {where for where, _ in sample_templates()} >= {"10-analysistemplate.yaml", "ecommerce-health.yaml"}


VALID: Document = {
    "apiVersion": "meshshift.io/v1alpha1",
    "kind": "AnalysisTemplate",
    "metadata": {"name": "checks"},
    "spec": {
        "args": [
            {"name": "service"},
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "metrics": [
            {
                "name": "success",
                "interval": "1m",
                "count": 3,
                "successCondition": "result[0] >= 0.99",
                "provider": {"prometheus": {"query": 'sum(up{job="{{args.service}}"})'}},
            }
        ],
    },
}


def changed(path: tuple[Any, ...], value: Any) -> Document:
    return with_value(VALID, path, value)


METRIC = ("spec", "metrics", 0)
MALFORMED = [
    ("no metrics", changed(("spec", "metrics"), None), "is not valid under any of the given schemas"),
    ("empty metrics", changed(("spec", "metrics"), []), "should be non-empty"),
    (
        "misspelt field",
        changed((*METRIC, "successCondtion"), "result > 0"),
        "'successCondtion' was unexpected",
    ),
    ("count not a number", changed((*METRIC, "count"), True), "is not valid under any of the given schemas"),
    (
        "two providers",
        changed((*METRIC, "provider", "web"), {"url": "http://x"}),
        "has too many properties",
    ),
    ("query missing", changed((*METRIC, "provider", "prometheus"), {"address": "http://p"}), "'query'"),
    (
        "two arg sources",
        changed(("spec", "args", 1, "valueFrom", "fieldRef"), {"fieldPath": "metadata.name"}),
        "has too many properties",
    ),
    ("unknown provider", changed((*METRIC, "provider"), {"job": {"spec": {}}}), "'job' was unexpected"),
]


@pytest.mark.parametrize(("case", "doc", "reason"), MALFORMED, ids=[case for case, _, _ in MALFORMED])
def test_the_schema_rejects_a_malformed_template(case: str, doc: Document, reason: str) -> None:
    assert schema_errors(strict(crd_schema("AnalysisTemplate")), VALID) == []
    errors = schema_errors(strict(crd_schema("AnalysisTemplate")), doc)
    assert any(reason in error for error in errors), errors
    findings = Findings()
    read_template(doc, findings)
    assert findings.has_errors, f"meshshift lint accepts what the CRD rejects: {case}"


def test_unknown_fields_are_pruned_not_rejected_without_strict_validation() -> None:
    """Why the tests validate strictly: without it, the API server drops a misspelt field silently."""
    doc = changed((*METRIC, "successCondtion"), "result > 0")
    assert schema_errors(crd_schema("AnalysisTemplate"), doc) == []


def test_the_crd_file_is_plain_yaml() -> None:
    """No YAML anchors or aliases: every reader (and every person) sees each field where it is."""
    text = Path(CRD_FILE).read_text(encoding="utf-8")
    assert "&id" not in text and "*id" not in text
