"""The Kubernetes scenarios against a real cluster: set MESHSHIFT_E2E_KUBECONFIG to run them.

The cluster needs the VirtualService CRD (Istio's `networking.istio.io/v1beta1`) and
meshshift's AnalysisTemplate CRD (`meshshift.io/v1alpha1`); no mesh or ingress controller
has to run, since the scenarios check the objects meshshift writes. Pods use
MESHSHIFT_E2E_IMAGE (default registry.k8s.io/pause:3.9), which becomes ready without
serving anything. Each scenario gets its own namespace, deleted afterwards. The
fault-injection scenario needs kmock and is not part of this lane.

This is the one test module allowed to skip: without a cluster there is nothing to run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.kube.harness import KubeEnv
from tests.kube.scenarios import SCENARIOS

KUBECONFIG = os.environ.get("MESHSHIFT_E2E_KUBECONFIG")

pytestmark = pytest.mark.skipif(
    not KUBECONFIG,
    reason="real-cluster lane: set MESHSHIFT_E2E_KUBECONFIG to a kubeconfig (kind/k3s with Istio's, "
    "meshshift's and Argo Rollouts' template CRDs) to run the Kubernetes scenarios against it",
)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_on_a_real_cluster(name: str) -> None:
    assert KUBECONFIG is not None
    env = KubeEnv(
        url="",
        kubeconfig=Path(KUBECONFIG),
        namespace=f"meshshift-e2e-{uuid.uuid4().hex[:6]}",
        kmock=None,
        simulate=False,
    )
    scenario: Callable[[KubeEnv], Awaitable[None]] = SCENARIOS[name]
    await scenario(env)
