"""A rollout whose Prometheus is down, answers NaN or answers nothing is never promoted (12.9).

Standalone rollouts through a real Envoy, measured by a real Prometheus (or by one that has
stopped), with real traffic counted after the verdict: the canary is aborted and all traffic
is back on the stable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from meshshift.demo.load import count_versions
from meshshift.demo.prometheus import PrometheusServer, prometheus_server
from meshshift.processes import free_port
from meshshift.settings import DaemonSettings
from meshshift.spec.model import AnalysisPhase
from meshshift.standalone.daemon import parse_rollout_text, standalone_runtime
from tests.reliability.chaos import Apps, rollout_document, running_apps

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def apps() -> AsyncIterator[Apps]:
    async with running_apps() as started:
        yield started


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrometheusServer]:
    async with prometheus_server([], workdir=tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def template(address: str, query: str, **conditions: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "check"},
        "spec": {
            "metrics": [
                {
                    "name": "check",
                    "interval": "300ms",
                    "count": 3,
                    "consecutiveErrorLimit": 1,
                    "provider": {"prometheus": {"address": address, "query": query}},
                    **conditions,
                }
            ]
        },
    }


CASES = {
    # A failureCondition-only metric on NaN (Argo #1466 promotes here).
    "nan": ("0/0", {"failureCondition": "result < 0.9"}),
    # An empty vector under all() (Argo #4479 promotes here: all() of nothing is true).
    "empty": ("absent_metric_meshshift_never_wrote", {"successCondition": "all(result, {# >= 0.9})"}),
    # Prometheus down: nothing listens at the address.
    "down": ("vector(1)", {"successCondition": "result[0] >= 0.9"}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_no_data_never_promotes(
    case: str, apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    query, conditions = CASES[case]
    address = f"http://127.0.0.1:{free_port()}" if case == "down" else prometheus.url
    listen = f"127.0.0.1:{free_port()}"
    document = rollout_document("envoy", listen, apps)
    document["spec"]["steps"] = [
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "check"}]}},
        {"setWeight": 100},
    ]
    document["spec"]["abortScaleDownDelay"] = "0s"
    text = yaml.safe_dump_all([document, template(address, query, **conditions)], sort_keys=False)
    loaded = parse_rollout_text(text, str(tmp_path / "rollout.yaml"))
    settings = DaemonSettings(listen=f"127.0.0.1:{free_port()}")
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings) as runtime:
        async with asyncio.timeout(60):
            while True:
                state = runtime.controller.state
                if state is not None and state.history:
                    break
                await asyncio.sleep(0.05)
        record = state.history[-1]
        assert record.outcome == "Aborted", record
        run = next(iter(runtime.controller.executor.runs.values()))
        assert run.phase == AnalysisPhase.ERROR, run
        assert await count_versions(f"http://{listen}/", 200) == {"stable": 200}
