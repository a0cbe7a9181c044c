"""The CustomResourceDefinitions of Traefik and Gateway API, as the emulator serves them.

The CRD files in tests/data/crds are copied from the projects' repositories (see the
README there). Each gives the emulator a resource (kind, scope, subresources) and the
openAPIV3Schema the API server validates writes against, made strict the way `kubectl
apply` is by default (server-side field validation rejects unknown fields).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
CRD_FILES = (
    "traefik.io_crds.yaml",
    "gateway.networking.k8s.io_httproutes.yaml",
    "gateway.networking.k8s.io_gateways.yaml",
    "gateway.networking.k8s.io_gatewayclasses.yaml",
    # Not written by meshshift: the kinds Traefik's Gateway API provider watches besides.
    "gateway.networking.k8s.io_grpcroutes.yaml",
    "gateway.networking.k8s.io_referencegrants.yaml",
    "gateway.networking.k8s.io_backendtlspolicies.yaml",
    "gateway.networking.k8s.io_tlsroutes.yaml",
)


@dataclass(frozen=True, slots=True)
class CrdVersion:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...]
    schema: Mapping[str, Any]

    @property
    def resource(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"


def strict(schema: Any) -> Any:
    """The schema rejecting unknown fields, as the API server does under strict field validation."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@functools.cache
def crd_versions() -> tuple[CrdVersion, ...]:
    found = []
    for filename in CRD_FILES:
        for crd in yaml.safe_load_all((CRDS / filename).read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                found.append(
                    CrdVersion(
                        group=spec["group"],
                        version=version["name"],
                        plural=names["plural"],
                        singular=names.get("singular") or names["kind"].lower(),
                        kind=names["kind"],
                        namespaced=spec["scope"] == "Namespaced",
                        subresources=tuple((version.get("subresources") or {}).keys()),
                        schema=strict(version["schema"]["openAPIV3Schema"]),
                    )
                )
    return tuple(found)


def crd_for(api_version: str, kind: str) -> CrdVersion | None:
    group, _, version = api_version.rpartition("/")
    for crd in crd_versions():
        if (crd.group, crd.version, crd.kind) == (group, version, kind):
            return crd
    return None


def schema_errors(schema: Mapping[str, Any], doc: Any) -> list[str]:
    """Every violation, as `path: message` (OpenAPI v3.0 schemas are close to JSON Schema draft 4)."""
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def crd_errors(doc: Mapping[str, Any]) -> list[str]:
    """Why `doc` is not a valid object of its CRD (empty: valid); a kind without a CRD here is an error."""
    crd = crd_for(str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    if crd is None:
        return [f"no CRD for {doc.get('apiVersion')} {doc.get('kind')} in {CRDS}"]
    return schema_errors(crd.schema, dict(doc))
