"""The reliability suite uses the Kubernetes emulator of tests/kube (kube_env) next to its own fixtures."""

from __future__ import annotations

from tests.kube.conftest import kmock_options, kube_env

__all__ = ["kmock_options", "kube_env"]
