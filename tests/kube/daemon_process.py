"""A meshshift daemon in its own process, for tests that kill it: `python -m tests.kube.daemon_process`.

Arguments: KUBECONFIG NAMESPACE IDENTITY. It runs `run_operator` (signals included) with
the short lease of the test suite.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from meshshift.kube.operator import run_operator
from meshshift.logs import configure_logging
from tests.kube.harness import KubeEnv, daemon_settings, fast_options


def main(argv: list[str]) -> None:
    kubeconfig, namespace, identity = argv
    env = KubeEnv(url="", kubeconfig=Path(kubeconfig), namespace=namespace)
    configure_logging("console", "INFO")
    asyncio.run(run_operator(daemon_settings(env, identity), fast_options()))


if __name__ == "__main__":
    main(sys.argv[1:])
