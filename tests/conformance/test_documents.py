"""Argo Rollouts' own documents, pasted into meshshift: each does what expectations.yaml says.

See corpus.py for what "lint" and "run" mean here, expectations.yaml for the outcome of
each case (written from Argo's code, tests and docs), and the README's "Argo Rollouts
conformance" section for the documented list of unsupported features and the differences.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.corpus import EXPECTATION, Case, Corpus, Outcome, documented_features, named_features

HERE = Path(__file__).parent
README = HERE.parent.parent / "README.md"
# What a pasted Rollout's canary acts on; every other field must get a warning naming it.
ACTED_ON_CANARY = {"steps", "analysis", "abortScaleDownDelaySeconds", "canaryMetadata", "stableMetadata"}
# The Rollout's own fields meshshift acts on, and those describing the workload, which
# meshshift takes from the Deployment (README: "Argo Rollouts conformance").
ACTED_ON_SPEC = {
    "strategy",
    "progressDeadlineSeconds",
    "progressDeadlineAbort",
    "replicas",
    "selector",
    "template",
    "workloadRef",
    "minReadySeconds",
    "revisionHistoryLimit",
}


@cache
def corpus() -> Corpus:
    return Corpus.load()


@cache
def expectations() -> dict[str, str]:
    loaded = yaml.safe_load((HERE / "expectations.yaml").read_text())
    assert isinstance(loaded, dict)
    return {str(key): str(value) for key, value in loaded.items()}


@cache
def features() -> dict[str, str]:
    return documented_features(README.read_text())


@cache
def outcomes() -> dict[str, tuple[Case, Outcome]]:
    return {case.key: (case, corpus().outcome(case)) for case in corpus().cases()}


def verdict(expected: str, outcome: Outcome) -> str | None:
    """None when `outcome` is what `expected` says; else what differs."""
    match = EXPECTATION.match(expected)
    assert match, f"not an expectation: {expected!r}"
    kind, detail = match.group(1), match.group(2) or ""
    shown = "; ".join(outcome.errors) or outcome.run_error or "accepted"
    if kind == "accepted":
        return None if outcome.accepted else f"expected accepted, got: {shown}"
    if outcome.accepted:
        return f"expected {expected!r}, but it is accepted now (update expectations.yaml and the README)"
    if kind == "refused":
        assert detail in features(), f"{detail!r} is not in the README's list of unsupported features"
        named = named_features(outcome, features())
        return None if detail in named else f"expected an error naming {detail!r}, got: {shown}"
    if kind == "differs":
        named = named_features(outcome, features())
        return None if not named else f"expected {expected!r}; it is refused as {sorted(named)}: {shown}"
    return None  # invalid: any error


def test_every_case_has_an_expectation() -> None:
    keys = {case.key for case in corpus().cases()}
    assert sorted(keys - expectations().keys()) == []
    assert sorted(expectations().keys() - keys) == []


def test_the_corpus_covers_argo_s_examples_docs_and_e2e_tests() -> None:
    kinds = Counter(case.kind for case in corpus().cases())
    folders = Counter(case.file.split("/")[0] for case in corpus().cases())
    assert kinds["Rollout"] >= 140 and kinds["AnalysisTemplate"] >= 50, kinds
    assert kinds["ClusterAnalysisTemplate"] >= 3, kinds
    assert set(folders) == {"docs", "examples", "test"}, folders


@pytest.mark.parametrize("key", sorted(expectations()))
def test_case(key: str) -> None:
    _, outcome = outcomes()[key]
    assert verdict(expectations()[key], outcome) is None, verdict(expectations()[key], outcome)


def test_counts_are_printed_and_in_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    counts: Counter[str] = Counter()
    differing: list[str] = []
    for key, expected in expectations().items():
        if verdict(expected, outcomes()[key][1]) is not None:
            counts["differing (undocumented)"] += 1
            differing.append(key)
        else:
            counts[_bucket(expected)] += 1
    line = ", ".join(f"{counts[bucket]} {bucket}" for bucket in BUCKETS)
    with capsys.disabled():
        print(f"\nArgo Rollouts conformance ({sum(counts.values())} documents): {line}")
    assert differing == []
    readme = README.read_text()
    assert f"<!-- conformance-counts -->{sum(counts.values())} documents: {line}" in readme, line


BUCKETS = (
    "accepted",
    "refused as documented",
    "invalid in Argo too",
    "differing (documented)",
    "differing (undocumented)",
)


def _bucket(expected: str) -> str:
    kind = expected.split()[0].rstrip(":")
    return {
        "accepted": "accepted",
        "refused": "refused as documented",
        "invalid": "invalid in Argo too",
        "differs": "differing (documented)",
    }[kind]


def test_every_documented_difference_is_in_the_readme() -> None:
    readme = README.read_text()
    for key, expected in expectations().items():
        if expected.startswith("differs"):
            gap = expected.split("gap:", 1)[-1].strip()
            for part in gap.split(";"):
                assert part.strip() in readme, f"{key}: {part.strip()!r} is not in the README"


def test_every_documented_feature_is_refused_by_some_case() -> None:
    refused = {expected.removeprefix("refused ") for expected in expectations().values()}
    assert sorted(set(features()) - refused - UNUSED_IN_CORPUS) == []


# Features of the README's list that no copied document uses (each has its own test:
# tests/analysis/test_provider_options.py::test_sigv4_is_a_lint_error_never_an_error_at_run_time).
UNUSED_IN_CORPUS = {"sigv4 authentication (prometheus, web)"}


ROLLOUTS = {case.key for case in corpus().cases() if case.kind == "Rollout"}
ACCEPTED_ROLLOUTS = sorted(
    key for key, value in expectations().items() if value == "accepted" and key in ROLLOUTS
)


@pytest.mark.parametrize("key", ACCEPTED_ROLLOUTS)
def test_no_field_of_an_accepted_rollout_is_ignored_without_a_warning(key: str) -> None:
    case, outcome = outcomes()[key]
    warned = {finding.path for finding in outcome.warnings}
    spec = case.data.get("spec") or {}
    silent = [f"spec.{f}" for f in spec if f not in ACTED_ON_SPEC and f"spec.{f}" not in warned]
    canary_path = "spec.strategy.canary"
    canary: Mapping[str, Any] = (spec.get("strategy") or {}).get("canary") or {}
    for field, value in canary.items():
        path = f"{canary_path}.{field}"
        if field == "trafficRouting" and isinstance(value, Mapping):
            silent += [f"{path}.{k}" for k in value if f"{path}.{k}" not in warned | ACTED_ON_ROUTING]
        elif field not in ACTED_ON_CANARY and path not in warned:
            silent.append(path)
    blue_green: Mapping[str, Any] = (spec.get("strategy") or {}).get("blueGreen") or {}
    for field in blue_green:
        path = f"spec.strategy.blueGreen.{field}"
        if field not in ACTED_ON_BLUE_GREEN and path not in warned:
            silent.append(path)
    assert silent == [], f"accepted without a word: {silent}"


# What a pasted Rollout's blueGreen acts on (README: "Argo Rollouts conformance").
ACTED_ON_BLUE_GREEN = {
    "activeService",
    "previewService",
    "previewReplicaCount",
    "autoPromotionEnabled",
    "autoPromotionSeconds",
    "prePromotionAnalysis",
    "postPromotionAnalysis",
    "scaleDownDelaySeconds",
    "abortScaleDownDelaySeconds",
    "activeMetadata",
    "previewMetadata",
}


# Paths under trafficRouting meshshift acts on.
ACTED_ON_ROUTING = {"spec.strategy.canary.trafficRouting.maxTrafficWeight"}


def test_a_refusal_names_the_feature_in_the_message() -> None:
    # The documented texts are what users see: each appears in some refusal's message.
    seen = {name for _, outcome in outcomes().values() for name in named_features(outcome, features())}
    assert sorted(set(features()) - seen - UNUSED_IN_CORPUS) == []


def test_readme_lists_each_copied_file_with_its_source() -> None:
    readme = (HERE / "README.md").read_text()
    copied = {str(path.relative_to(HERE / "argo")) for path in (HERE / "argo").rglob("*.yaml")}
    listed = set(re.findall(r"`argo/([^`]+\.yaml)`", readme))
    assert sorted(copied - listed) == []
