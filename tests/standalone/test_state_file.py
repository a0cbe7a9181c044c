"""The standalone state file: round trips, atomic replacement, and refusing what it cannot read."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from meshshift.analysis.run import Measurement, record_measurement, start_run
from meshshift.engine.actions import AnalysisKind
from meshshift.engine.state import AnalysisRunRecord, HeaderRoute, RolloutPhase, RolloutState, Stage
from meshshift.files import write_atomically
from meshshift.ports import StoredRollout
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    HeaderMatch,
    Metric,
    ProviderSpec,
    StringMatch,
    TemplateRef,
)
from meshshift.standalone.state_file import (
    StateFile,
    StateFileError,
    StateFileStore,
    record_stable,
    recorded_stable,
)


def stored_rollout() -> StoredRollout:
    metric = Metric(
        name="success-rate",
        provider=ProviderSpec("prometheus", {"query": "sum(rate(x[1m]))"}),
        interval=1.0,
        count=3,
        success_condition="result[0] >= 0.95",
    )
    run = start_run("ep-1-1-step2", [metric], args={"service-name": "shop"}, now=100.0)
    run = record_measurement(
        run, "success-rate", Measurement(AnalysisPhase.SUCCESSFUL, 100.0, 100.5, value=[0.99], query="q")
    )
    state = RolloutState(
        stable_revision="ep-stable",
        phase=RolloutPhase.PAUSED,
        stage=Stage.STEPPING,
        canary_revision="ep-1",
        attempt=1,
        step_index=2,
        desired_weight=25,
        header_routes=(HeaderRoute("qa", (HeaderMatch("X-Canary", StringMatch("exact", "true")),)),),
        analysis_runs=(
            AnalysisRunRecord(
                "ep-1-1-step2", AnalysisKind.STEP, 2, AnalysisRef((TemplateRef("success-rate"),))
            ),
        ),
    )
    return StoredRollout(state, {run.name: run})


async def test_a_saved_rollout_loads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "app.state.json"
    stored = stored_rollout()
    await StateFileStore(StateFile(path)).save(stored)
    loaded = await StateFileStore(StateFile(path)).load()  # a new daemon reads the file
    assert loaded == stored
    assert json.loads(path.read_text())["schemaVersion"] == 1  # a test may read a file
    assert [p.name for p in tmp_path.iterdir()] == ["app.state.json"]  # noqa: ASYNC240 - no temp file left


async def test_no_file_means_no_rollout_yet(tmp_path: Path) -> None:
    assert await StateFileStore(StateFile(tmp_path / "none.json")).load() is None
    assert recorded_stable(StateFile(tmp_path / "none.json")) is None


async def test_the_stable_of_a_promotion_is_kept_next_to_the_rollout(tmp_path: Path) -> None:
    path = tmp_path / "app.state.json"
    state_file = StateFile(path)
    await StateFileStore(state_file).save(stored_rollout())
    await record_stable(state_file, ["127.0.0.1:8082", "127.0.0.1:8083"])
    reopened = StateFile(path)
    assert recorded_stable(reopened) == ("127.0.0.1:8082", "127.0.0.1:8083")
    assert await StateFileStore(reopened).load() == stored_rollout()


async def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.state.json"
    path.write_text('{"rollout": {"stableRevision": ')
    with pytest.raises(StateFileError, match=r"app\.state\.json is not valid JSON"):
        await StateFileStore(StateFile(path)).load()
    assert path.read_text() == '{"rollout": {"stableRevision": '


async def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.state.json"
    path.write_text(json.dumps({"schemaVersion": 99}))
    with pytest.raises(StateFileError, match="schemaVersion 99"):
        StateFile(path).read()


async def test_an_unreadable_rollout_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.state.json"
    path.write_text(json.dumps({"schemaVersion": 1, "rollout": {"phase": "Nonsense"}}))
    refusal = r"app\.state\.json is not a meshshift state: rollout: .*Nonsense"
    with pytest.raises(StateFileError, match=refusal):
        await StateFileStore(StateFile(path)).load()


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """Replacing by rename: a reader racing a writer always parses a whole document."""
    path = tmp_path / "state.json"
    write_atomically(path, json.dumps({"n": -1, "pad": ""}))
    stop = threading.Event()
    torn: list[str] = []
    seen: set[int] = set()

    def read() -> None:
        while not stop.is_set():
            text = path.read_text()
            try:
                seen.add(json.loads(text)["n"])
            except ValueError:
                torn.append(text[:40])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(300):
            write_atomically(path, json.dumps({"n": n, "pad": "x" * (20_000 + n)}))
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert len(seen) > 1  # the reader did see the file change under it
