"""A meshshift daemon in its own process, for tests that kill it: `python -m tests.kube.daemon_process`.

Arguments: KUBECONFIG NAMESPACE IDENTITY [SETTING=VALUE...]. It runs `run_operator` (signals
included) with the short lease of the test suite; `shards=6` or `lease_duration=4` change those
settings (numbers as numbers).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from meshshift.kube.operator import run_operator
from meshshift.logs import configure_logging
from tests.kube.harness import KubeEnv, daemon_settings, fast_options


def setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            continue
    return key, value


def main(argv: list[str]) -> None:
    kubeconfig, namespace, identity, *extra = argv
    env = KubeEnv(url="", kubeconfig=Path(kubeconfig), namespace=namespace)
    configure_logging("console", "INFO")
    settings = daemon_settings(env, identity, **dict(setting(text) for text in extra))
    asyncio.run(run_operator(settings, fast_options()))


if __name__ == "__main__":
    main(sys.argv[1:])
