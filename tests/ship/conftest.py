"""The shipped files: Dockerfile, manifests/, istio-samples/ and manifests/samples/."""

from __future__ import annotations

import pytest

# Helpers that assert: show their comparisons like a test module's.
pytest.register_assert_rewrite("tests.kube.scenarios", "tests.kube.harness", "tests.ship.support")
