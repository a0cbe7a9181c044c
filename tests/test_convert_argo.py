"""`meshshift convert` on Argo Rollouts: every Rollout of Argo's examples/ (tests/conformance/argo, the
copies the conformance suite uses) converts, lints clean, gives the same weights in the same order
through meshshift's engine, and names every field it does not carry over."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.spec.annotations import parse_deployment
from meshshift.spec.convert import Conversion, convert_sources
from meshshift.spec.documents import load_documents
from meshshift.spec.fields import at
from tests.engine_world import weights_until_promotion

ARGO = Path(__file__).parent / "conformance" / "argo"
EXAMPLES = ARGO / "examples"
TEMPLATE_FILES = (EXAMPLES / "analysis-templates.yaml", EXAMPLES / "cluster-analysis-templates.yaml")


def rollout_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.yaml")):
        documents, _ = load_documents(path.read_text(), str(path))
        if any(isinstance(d.data, Mapping) and d.data.get("kind") == "Rollout" for d in documents):
            files.append(path)
    return files


def convert(*paths: Path, router: str = "istio") -> Conversion:
    sources = [(str(p), p.read_text()) for p in paths]
    return convert_sources(sources, router=router)


def rollouts(path: Path) -> list[tuple[int, Mapping[str, Any]]]:
    documents, _ = load_documents(path.read_text(), str(path))
    return [
        (d.index, d.data)
        for d in documents
        if isinstance(d.data, Mapping) and d.data.get("kind") == "Rollout"
    ]


EXAMPLE_FILES = [p for p in rollout_files(EXAMPLES) if "helm-" not in str(p)]  # a Helm chart is not YAML


def test_the_examples_hold_the_rollouts_we_expect() -> None:
    assert len(EXAMPLE_FILES) == 21  # every Rollout file of Argo's examples/ but the Helm chart
    strategies = [next(iter(r["spec"]["strategy"])) for f in EXAMPLE_FILES for _, r in rollouts(f)]
    assert strategies.count("canary") == 20 and strategies.count("blueGreen") == 1


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_rollout_converts_and_lints_clean(path: Path) -> None:
    conversion = convert(path, *TEMPLATE_FILES)
    assert conversion.converted == len(rollouts(path))
    assert conversion.lint_errors == [], [str(f) for f in conversion.lint_errors]
    deployments = [d.data for d in conversion.documents if d.data.get("kind") == "Deployment"]
    names = {r["metadata"]["name"] for _, r in rollouts(path)}
    converted = [
        d for d in deployments if d["metadata"].get("annotations", {}).get("meshshift.io/enabled") == "true"
    ]
    assert len(converted) == len(names)
    assert not any(d.data.get("kind") == "Rollout" for d in conversion.documents)
    # AnalysisTemplates stay as they are.
    for template in TEMPLATE_FILES:
        documents, _ = load_documents(template.read_text(), str(template))
        for document in documents:
            assert any(out.data == document.data for out in conversion.documents)


def carried(rollout: Mapping[str, Any]) -> Iterator[str]:
    """The paths of a Rollout's fields a conversion carries over as they are (the rest needs a note)."""
    yield from ("metadata.name", "metadata.namespace", "metadata.labels", "apiVersion", "kind", "status")
    yield from (
        f"spec.{f}" for f in ("replicas", "selector", "template", "minReadySeconds", "revisionHistoryLimit")
    )
    yield from ("spec.workloadRef.apiVersion", "spec.workloadRef.name", "spec.progressDeadlineSeconds")
    if (rollout.get("spec") or {}).get("workloadRef", {}).get("kind") == "Deployment":
        yield "spec.workloadRef.kind"
    yield from ("spec.strategy.canary.steps", "spec.strategy.canary.analysis", "spec.strategy.blueGreen")
    yield from ("spec.strategy.canary.canaryMetadata", "spec.strategy.canary.stableMetadata")
    routing = "spec.strategy.canary.trafficRouting"
    yield from (f"{routing}.maxTrafficWeight", f"{routing}.istio.virtualService.name")
    yield from (f"{routing}.istio.virtualService.routes", f"{routing}.nginx.stableIngress")
    yield from (f"{routing}.traefik.weightedTraefikServiceName", f"{routing}.plugins")
    annotations = rollout.get("metadata", {}).get("annotations") or {}
    yield from (
        f'metadata.annotations["{k}"]' for k in annotations if not k.startswith(("rollout.", "notif"))
    )


def leaves(value: Any, path: str = "") -> Iterator[str]:
    """Every leaf field's path, as notes write paths (`metadata.annotations["a/b"]`)."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from leaves(item, at(path, str(key)))
    else:
        yield path


@pytest.mark.parametrize("path", rollout_files(ARGO), ids=lambda p: str(p.relative_to(ARGO)))
def test_no_field_is_dropped_silently(path: Path) -> None:
    # Every Rollout of the corpus (examples, docs, e2e): each field is carried over or has a note.
    conversion = convert(path)
    noted = [note.path for note in conversion.notes if note.file == str(path)]
    for index, rollout in rollouts(path):
        kept = list(carried(rollout))
        here = [n for n in noted]
        for leaf in leaves(rollout):
            if any(leaf == k or leaf.startswith(k + ".") or leaf.startswith(k + "[") for k in kept):
                continue
            covered = any(
                leaf == n or leaf.startswith((n + ".", n + "[")) or n.startswith(leaf) for n in here
            )
            assert covered, f"{path}#{index}: {leaf} is neither carried over nor noted"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_the_converted_schedule_sets_argos_weights_in_argos_order(path: Path) -> None:
    conversion = convert(path, *TEMPLATE_FILES)
    by_name = {
        d.data["metadata"]["name"]: d.data for d in conversion.documents if d.data.get("kind") == "Deployment"
    }
    for _, rollout in rollouts(path):
        canary = rollout["spec"]["strategy"].get("canary")
        if canary is None:
            continue
        unit = canary.get("trafficRouting", {}).get("maxTrafficWeight", 100)
        expected = [s["setWeight"] * 100 // unit for s in canary.get("steps") or [] if "setWeight" in s]
        target = rollout["spec"].get("workloadRef", {}).get("name") or rollout["metadata"]["name"]
        assert weights_until_promotion(by_name[target]) == [w for w in expected if w], path


def notes_of(conversion: Conversion) -> dict[str, tuple[str, str]]:
    return {note.path: (note.kind, note.reason) for note in conversion.notes}


def test_unconvertible_fields_are_reported_with_their_path() -> None:
    conversion = convert(EXAMPLES / "traffic-routing-experiment-step" / "rollout-alb-experiment-step.yaml")
    notes = notes_of(conversion)
    assert notes["spec.strategy.canary.steps[1].experiment"][0] == "not-converted"
    assert "runs no experiments" in notes["spec.strategy.canary.steps[1].experiment"][1]
    assert notes["spec.strategy.canary.trafficRouting.alb"] == (
        "not-converted",
        "meshshift has no alb router (it drives istio, nginx, traefik and gateway-api)",
    )
    kind, reason = notes["spec.strategy.canary.trafficRouting"]
    assert kind == "assumed" and "wrote meshshift.io/router: istio" in reason
    assert all(
        n.file.endswith("rollout-alb-experiment-step.yaml") and n.document == 4 for n in conversion.notes
    )
    nginx = convert(
        EXAMPLES / "traffic-routing-experiment-step" / "rollout-alb-experiment-step.yaml", router="nginx"
    )
    deployment = next(d.data for d in nginx.documents if d.data.get("kind") == "Deployment")
    assert deployment["metadata"]["annotations"]["meshshift.io/router"] == "nginx"


def test_istio_routing_is_pointed_at_the_services_meshshift_manages() -> None:
    conversion = convert(EXAMPLES / "istio" / "istio-subset-split.yaml")
    service = next(d.data for d in conversion.documents if d.data.get("kind") == "VirtualService")
    destinations = [r["destination"] for r in service["spec"]["http"][0]["route"]]
    assert destinations == [{"host": "istio-subset-split-primary"}, {"host": "istio-subset-split-canary"}]
    deployment = next(d.data for d in conversion.documents if d.data.get("kind") == "Deployment")
    annotations = deployment["metadata"]["annotations"]
    assert annotations["meshshift.io/istio-virtual-service"] == "istio-subset-split-vsvc"
    assert annotations["meshshift.io/istio-routes"] == "primary"
    assert yaml.safe_load(annotations["meshshift.io/steps"]) == [{"setWeight": 10}, {"pause": {}}]
    kind, reason = notes_of(conversion)["spec.strategy.canary.trafficRouting.istio.destinationRule"]
    assert kind == "changed" and "splits by host, not by subset" in reason
    # The file's other documents stay, in their order.
    assert [d.data["kind"] for d in conversion.documents] == [
        "Service",
        "VirtualService",
        "DestinationRule",
        "Deployment",
    ]


def test_a_workload_ref_annotates_the_deployment_it_names() -> None:
    conversion = convert(EXAMPLES / "workload-ref" / "workload-ref.yaml")
    (deployment,) = (d.data for d in conversion.documents)
    assert deployment["metadata"]["name"] == "rollout-ref-deployment"
    assert deployment["spec"]["replicas"] == 5  # the Rollout's: Argo ran those, not the Deployment's 0
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "argoproj/rollouts-demo:blue"
    assert yaml.safe_load(deployment["metadata"]["annotations"]["meshshift.io/steps"]) == [
        {"setWeight": 20},
        {"pause": {"duration": "10s"}},
    ]
    alone = convert_sources(
        [("r.yaml", (EXAMPLES / "workload-ref" / "workload-ref.yaml").read_text().split("---")[1])]
    )
    (patch,) = (d.data for d in alone.documents)
    assert set(patch) == {
        "apiVersion",
        "kind",
        "metadata",
    }  # only the annotations, to apply to the Deployment
    assert notes_of(alone)["spec.workloadRef"][0] == "assumed"


def test_blue_green_becomes_the_blue_green_annotation() -> None:
    conversion = convert(EXAMPLES / "rollout-bluegreen.yaml")
    (deployment,) = (d.data for d in conversion.documents if d.data.get("kind") == "Deployment")
    block = yaml.safe_load(deployment["metadata"]["annotations"]["meshshift.io/blue-green"])
    assert block == {
        "activeService": "rollout-bluegreen-active",
        "previewService": "rollout-bluegreen-preview",
        "autoPromotionEnabled": False,
    }
    assert "meshshift.io/steps" not in deployment["metadata"]["annotations"]
    assert conversion.lint_errors == []


def test_canary_and_stable_metadata_become_their_annotations() -> None:
    path = ARGO / "test" / "e2e" / "functional" / "ephemeral-labels.yaml"
    conversion = convert(path)
    (deployment,) = (d.data for d in conversion.documents if d.data.get("kind") == "Deployment")
    annotations = deployment["metadata"]["annotations"]
    assert yaml.safe_load(annotations["meshshift.io/canary-metadata"]) == {"labels": {"role": "canary"}}
    assert yaml.safe_load(annotations["meshshift.io/stable-metadata"]) == {"labels": {"role": "stable"}}
    assert not [n for n in conversion.notes if "Metadata" in n.path]
    assert conversion.lint_errors == []
    parsed = parse_deployment(deployment)
    assert parsed is not None
    assert dict(parsed.rollout.canary_metadata.labels) == {"role": "canary"}
    assert dict(parsed.rollout.stable_metadata.labels) == {"role": "stable"}


def meshshift(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshshift.cli", *map(str, args)], capture_output=True, text=True, input=stdin
    )


def test_the_command_writes_yaml_that_meshshift_lint_accepts(tmp_path: Path) -> None:
    result = meshshift("convert", EXAMPLES / "istio" / "istio-subset-split.yaml")
    assert result.returncode == 0, result.stderr
    assert "1 converted; 0 not converted" in result.stderr
    assert "spec.strategy.canary.trafficRouting.istio.destinationRule: changed:" in result.stderr
    output = tmp_path / "converted.yaml"
    output.write_text(result.stdout)
    lint = meshshift("lint", output)
    assert lint.returncode == 0 and "0 errors" in lint.stderr, lint.stdout + lint.stderr
    piped = meshshift("lint", "-", stdin=result.stdout)
    assert piped.returncode == 0
    lost = meshshift("convert", EXAMPLES / "rollout-experiment-step.yaml", *TEMPLATE_FILES)
    assert lost.returncode == 1  # an experiment step could not be converted
    assert "spec.strategy.canary.steps[1].experiment: not-converted:" in lost.stderr
    as_json = meshshift("convert", "-o", "json", EXAMPLES / "rollout-canary.yaml")
    assert as_json.returncode == 0 and '"kind": "List"' in as_json.stdout
    nothing = meshshift("convert", TEMPLATE_FILES[0])
    assert nothing.returncode == 2 and "no Argo Rollout or Flagger Canary" in nothing.stderr
