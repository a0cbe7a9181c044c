"""kmock as the Kubernetes API for the suite.

The emulator is `K8sEmulator` (tests/kube/kmock_ext.py): kmock 0.8 plus resourceVersion,
conflict checks, subresources, selectors and `watch=True`. Every test gets a fresh one.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import kmock
import pytest

# The scenarios and the harness assert too: show their comparisons like a test module's.
pytest.register_assert_rewrite("tests.kube.scenarios", "tests.kube.harness", "tests.ship.support")

from tests.kube.crd_schemas import crd_versions, schema_errors  # noqa: E402
from tests.kube.harness import KubeEnv, write_kubeconfig  # noqa: E402 - after the rewrite hook
from tests.kube.kmock_ext import K8sEmulator  # noqa: E402

NAMESPACE = "shop"


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    kmock_options["cls"] = K8sEmulator
    return kmock_options


def register_resources(emulator: Any) -> None:
    """Discovery info: built-ins (with their subresources) and the custom resources meshshift reads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # importlib.resources.read_binary
        emulator.resources.load_bundled()
    emulator.resources["networking.istio.io/v1beta1/virtualservices"] = kmock.ResourceInfo(
        kind="VirtualService", singular="virtualservice", namespaced=True
    )
    for group in ("meshshift.io", "argoproj.io"):
        emulator.resources[f"{group}/v1alpha1/analysistemplates"] = kmock.ResourceInfo(
            kind="AnalysisTemplate", singular="analysistemplate", namespaced=True
        )
        emulator.resources[f"{group}/v1alpha1/clusteranalysistemplates"] = kmock.ResourceInfo(
            kind="ClusterAnalysisTemplate", singular="clusteranalysistemplate", namespaced=False
        )
    register_crds(emulator)


def register_crds(emulator: Any) -> None:
    """Traefik's and Gateway API's kinds, each write validated against its CRD's schema."""
    for crd in crd_versions():
        emulator.resources[crd.resource] = kmock.ResourceInfo(
            kind=crd.kind, singular=crd.singular, namespaced=crd.namespaced, subresources=crd.subresources
        )
        if isinstance(emulator, K8sEmulator):
            validate = functools.partial(schema_errors, crd.schema)
            emulator.validators[crd.group, crd.version, crd.plural] = validate


@pytest.fixture
def kube_env(kmock: Any, tmp_path: Path) -> KubeEnv:
    register_resources(kmock)
    url = str(kmock.url).rstrip("/")
    return KubeEnv(
        url=url,
        kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", url, NAMESPACE),
        namespace=NAMESPACE,
        kmock=kmock,
    )
