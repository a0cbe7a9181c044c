"""The meshshift provider's options for the sequential builtins, as lint checks them."""

from __future__ import annotations

from typing import Any

import pytest

from meshshift.analysis.providers import BuiltinTarget
from meshshift.analysis.providers.builtin import MESHES, builtin_document
from meshshift.spec.errors import Findings
from meshshift.spec.templates import SEQUENTIAL_METRICS, read_provider


def findings_of(options: dict[str, Any]) -> list[str]:
    findings = Findings()
    read_provider({"meshshift": options}, "provider", findings)
    return [f"{issue.path}: {issue.reason}" for issue in findings if issue.severity == "error"]


def test_every_builtin_document_of_every_mesh_lints_clean() -> None:
    for mesh in MESHES:
        for name in SEQUENTIAL_METRICS:
            document = builtin_document(name, mesh, BuiltinTarget(namespace="shop", target="api"))
            assert findings_of(document["spec"]["metrics"][0]["provider"]["meshshift"]) == [], (mesh, name)
    for name in SEQUENTIAL_METRICS:
        document = builtin_document(name, "envoy", source="envoy-admin")
        assert findings_of(document["spec"]["metrics"][0]["provider"]["meshshift"]) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"builtin": "sequential-error-rate", "alpha": 1.5},
            "provider.meshshift.alpha: must be between 0 and 1",
        ),
        (
            {"builtin": "sequential-error-rate", "relativeTolerance": -1},
            "relativeTolerance: must be 0 or more",
        ),
        ({"builtin": "sequential-error-rate", "maxDuration": "soon"}, "provider.meshshift.maxDuration"),
        ({"builtin": "sequential-error-rate", "requireEvidence": "maybe"}, "must be true or false"),
        ({"builtin": "sequential-error-rate", "quantile": 0.9}, "quantile: only applies to builtin"),
        ({"builtin": "sequential-latency", "window": "1m"}, "window: does not apply to a sequential builtin"),
        (
            {"builtin": "request-success-rate", "alpha": 0.01},
            "alpha: only applies to the sequential builtins",
        ),
        (
            {"builtin": "sequential-error-rate", "source": "prometheus"},
            "canary: is required with source prometheus",
        ),
        ({"builtin": "request-duration", "source": "prometheus"}, "use a prometheus provider"),
    ],
)
def test_wrong_options_are_named(options: dict[str, Any], expected: str) -> None:
    assert any(expected in line for line in findings_of(options)), findings_of(options)


def test_placeholders_wait_for_their_args() -> None:
    options = {"builtin": "sequential-latency", "alpha": "{{args.alpha}}", "quantile": "{{args.q}}"}
    assert findings_of(options) == []
