"""The standalone daemon's state: one JSON file, replaced atomically on every change.

    {"schemaVersion": 1,
     "rollout": {...RolloutState...}, "analysisRuns": {"<name>": {...AnalysisRun...}},
     "workloads": {"stableEndpoints": ["127.0.0.1:8081"]}}

Each write goes to a temp file in the same directory, is fsynced, and replaces the old
file with os.replace (then the directory is fsynced): a reader, or a daemon restarted
after `kill -9` at any moment, sees either the old state or the new one, never a mix.
The engine saves its state before the actions it announces, so a restart resumes exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshshift import codec
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.state import RolloutState
from meshshift.ports import StoredRollout

SCHEMA_VERSION = 1


class StateFileError(RuntimeError):
    """The state file exists but cannot be read; it is left untouched."""


class StateFile:
    """The document on disk, shared by the StateStore and the Workloads adapters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._document: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    def read(self) -> dict[str, Any]:
        """The document ({} when there is no file yet); cached after the first read."""
        if self._document is None:
            self._document = self._load()
        return self._document

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise StateFileError(f"cannot read the state file {self.path}: {error}") from error
        try:
            document = json.loads(text)
        except ValueError as error:
            raise StateFileError(
                f"the state file {self.path} is not valid JSON ({error}); fix or remove it"
            ) from error
        if not isinstance(document, dict):
            raise StateFileError(f"the state file {self.path} does not hold a JSON object")
        version = document.get("schemaVersion", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise StateFileError(
                f"the state file {self.path} has schemaVersion {version}; "
                f"this meshshift reads {SCHEMA_VERSION}"
            )
        return document

    async def update(self, **parts: Any) -> None:
        """Replace the given top-level parts and write the whole document atomically."""
        async with self._lock:
            document = {**self.read(), **parts, "schemaVersion": SCHEMA_VERSION}
            text = json.dumps(document, sort_keys=True, indent=1)
            await asyncio.to_thread(write_atomically, self.path, text)
            self._document = document


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same directory + fsync + os.replace + fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class StateFileStore:
    """The StateStore port on a state file: the rollout state and its analysis runs."""

    def __init__(self, state_file: StateFile) -> None:
        self.file = state_file

    async def load(self) -> StoredRollout | None:
        document = self.file.read()
        if "rollout" not in document:
            return None
        try:
            rollout = RolloutState.from_dict(document["rollout"])
            runs = {
                name: codec.decode(AnalysisRun, data)
                for name, data in (document.get("analysisRuns") or {}).items()
            }
        except (ValueError, TypeError, KeyError) as error:
            raise StateFileError(
                f"the state file {self.file.path} holds an unreadable rollout: {error}"
            ) from error
        return StoredRollout(rollout=rollout, analysis_runs=runs)

    async def save(self, stored: StoredRollout) -> None:
        await self.file.update(
            rollout=stored.rollout.to_dict(),
            analysisRuns={name: codec.encode(run) for name, run in stored.analysis_runs.items()},
        )


def recorded_stable(state_file: StateFile) -> tuple[str, ...] | None:
    """The stable endpoints recorded by the last promotion, if any."""
    endpoints = (state_file.read().get("workloads") or {}).get("stableEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return None
    return tuple(str(e) for e in endpoints)


async def record_stable(state_file: StateFile, endpoints: Sequence[str]) -> None:
    workloads: Mapping[str, Any] = state_file.read().get("workloads") or {}
    await state_file.update(workloads={**workloads, "stableEndpoints": list(endpoints)})
