"""The standalone daemon's state: one JSON file, replaced atomically on every change.

    {"schemaVersion": 1,
     "rollout": {...RolloutState...}, "analysisRuns": {"<name>": {...AnalysisRun...}},
     "workloads": {"stableEndpoints": ["127.0.0.1:8081"], "stableVersion": "v1",
                   "previousStableEndpoints": [...], "previousStableVersion": "v0",
                   "undo": {"fileCanary": [...], "canary": [...], "canaryVersion": "v0"}}}

`workloads` is written at a promotion (the new stable, and the one it replaced, for `undo`) and
by `undo` (the canary endpoints it put in place of the file's, until the file names others).

Each write goes to a fresh temp file in the same directory, is fsynced, and replaces the
old file with os.replace (then the directory is fsynced): a reader, or a daemon restarted
after `kill -9` at any moment, sees either the old state or the new one, never a mix. A
symlinked state file is written through to its target (meshshift.files).

A document that does not hold a state (wrong types anywhere, say after a hand edit) is
refused as a whole with one StateFileError naming the field, before anything runs.
The engine saves its state before the actions it announces, so a restart resumes exactly.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshshift import codec
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.state import RolloutState
from meshshift.files import write_atomically
from meshshift.ports import StateStoreError, StoredRollout

SCHEMA_VERSION = 1


class StateFileError(RuntimeError):
    """The state file exists but cannot be read; it is left untouched."""


class StateFileWriteError(StateFileError, StateStoreError):
    """The state file cannot be written (a full disk, a directory gone read-only...)."""


class StateFile:
    """The document on disk, shared by the StateStore and the Workloads adapters.

    `field` names where the path comes from (`spec.stateFile`), for the errors people read.
    """

    def __init__(self, path: Path, *, field: str = "spec.stateFile") -> None:
        self.path = path
        self.field = field
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
        except RecursionError:
            raise StateFileError(
                f"the state file {self.path} is nested too deeply; fix or remove it"
            ) from None
        if not isinstance(document, dict):
            raise StateFileError(f"the state file {self.path} does not hold a JSON object")
        version = document.get("schemaVersion", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise StateFileError(
                f"the state file {self.path} has schemaVersion {version}; "
                f"this meshshift reads {SCHEMA_VERSION}"
            )
        problem = document_problem(document)
        if problem is not None:
            raise StateFileError(
                f"the state file {self.path} is not a meshshift state: {problem}; fix or remove it"
            )
        return document

    async def update(self, **parts: Any) -> None:
        """Replace the given top-level parts and write the whole document atomically."""
        async with self._lock:
            document = {**self.read(), **parts, "schemaVersion": SCHEMA_VERSION}
            text = json.dumps(document, sort_keys=True, indent=1)
            try:
                await asyncio.to_thread(write_atomically, self.path, text, durable=True)
            except OSError as error:
                raise StateFileWriteError(
                    f"{self.field}: cannot write the state file {self.path}: "
                    f"{error.strerror or error}{_errno_name(error)}; the rollout holds until it can"
                ) from error
            self._document = document


def _errno_name(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0)
    return f" ({name})" if name else ""


def document_problem(document: Mapping[str, Any]) -> str | None:
    """What makes `document` unusable as a state file ("field: reason"), None if nothing.

    The whole document is checked before any of it is used, so a hand-edited file is
    refused at start with one message instead of failing somewhere later.
    """
    rollout = document.get("rollout")
    if rollout is not None:
        if not isinstance(rollout, Mapping):
            return f"rollout: expected an object, got {_kind(rollout)}"
        try:
            RolloutState.from_dict(rollout)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            return f"rollout: {_reason(error)}"
    elif "rollout" in document:
        return "rollout: expected an object, got null"
    runs = document.get("analysisRuns")
    if runs is not None:
        if not isinstance(runs, Mapping):
            return f"analysisRuns: expected an object, got {_kind(runs)}"
        for name, data in runs.items():
            try:
                codec.decode(AnalysisRun, data)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
                return f"analysisRuns.{name}: {_reason(error)}"
    workloads = document.get("workloads")
    if workloads is not None:
        if not isinstance(workloads, Mapping):
            return f"workloads: expected an object, got {_kind(workloads)}"
        return _workloads_problem(workloads)
    return None


def _workloads_problem(workloads: Mapping[str, Any]) -> str | None:
    undo = workloads.get("undo")
    if undo is not None and not isinstance(undo, Mapping):
        return f"workloads.undo: expected an object, got {_kind(undo)}"
    lists = [(f"workloads.{k}", workloads.get(k)) for k in ("stableEndpoints", "previousStableEndpoints")]
    lists += [(f"workloads.undo.{k}", (undo or {}).get(k)) for k in ("fileCanary", "canary")]
    for where, endpoints in lists:
        if endpoints is not None and not (
            isinstance(endpoints, list) and all(isinstance(e, str) and e for e in endpoints)
        ):
            return f"{where}: expected a list of host:port strings, got {_short(endpoints)}"
    versions = [(f"workloads.{k}", workloads.get(k)) for k in ("stableVersion", "previousStableVersion")]
    versions.append(("workloads.undo.canaryVersion", (undo or {}).get("canaryVersion")))
    for where, version in versions:
        if version is not None and not isinstance(version, str):
            return f"{where}: expected a string, got {_kind(version)}"
    return None


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _reason(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    text = " ".join(str(error).split())
    return (text if len(text) <= 200 else text[:197] + "...") or type(error).__name__


class StateFileStore:
    """The StateStore port on a state file: the rollout state and its analysis runs."""

    def __init__(self, state_file: StateFile) -> None:
        self.file = state_file

    async def load(self) -> StoredRollout | None:
        document = self.file.read()
        if "rollout" not in document:
            return None
        # read() checked the whole document: these decode.
        rollout = RolloutState.from_dict(document["rollout"])
        runs = {
            name: codec.decode(AnalysisRun, data)
            for name, data in (document.get("analysisRuns") or {}).items()
        }
        return StoredRollout(rollout=rollout, analysis_runs=runs)

    async def save(self, stored: StoredRollout) -> None:
        await self.file.update(
            rollout=stored.rollout.to_dict(),
            analysisRuns={name: codec.encode(run) for name, run in stored.analysis_runs.items()},
        )


def recorded_stable(state_file: StateFile) -> tuple[str, ...] | None:
    """The stable endpoints recorded by the last promotion, if any."""
    return _endpoints((state_file.read().get("workloads") or {}).get("stableEndpoints"))


def _endpoints(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        return None
    return tuple(str(e) for e in value)


@dataclass(frozen=True, slots=True)
class EndpointSet:
    endpoints: tuple[str, ...]
    version: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedWorkloads:
    """What promotions and `undo` recorded beyond the rollout file."""

    stable: EndpointSet | None = None
    previous_stable: EndpointSet | None = None
    undo_file_canary: tuple[str, ...] | None = None  # the file's canary when undo replaced it
    undo_canary: EndpointSet | None = None


def recorded_workloads(state_file: StateFile) -> RecordedWorkloads:
    workloads = state_file.read().get("workloads") or {}
    undo = workloads.get("undo") or {}

    def endpoint_set(endpoints: object, version: object) -> EndpointSet | None:
        found = _endpoints(endpoints)
        return None if found is None else EndpointSet(found, version if isinstance(version, str) else None)

    return RecordedWorkloads(
        stable=endpoint_set(workloads.get("stableEndpoints"), workloads.get("stableVersion")),
        previous_stable=endpoint_set(
            workloads.get("previousStableEndpoints"), workloads.get("previousStableVersion")
        ),
        undo_file_canary=_endpoints(undo.get("fileCanary")),
        undo_canary=endpoint_set(undo.get("canary"), undo.get("canaryVersion")),
    )


async def record_workloads(state_file: StateFile, recorded: RecordedWorkloads) -> None:
    """Write the recorded workloads (only the parts there are)."""
    document: dict[str, Any] = {}

    def put(endpoint_set: EndpointSet | None, into: dict[str, Any], endpoints: str, version: str) -> None:
        if endpoint_set is not None:
            into[endpoints] = list(endpoint_set.endpoints)
            if endpoint_set.version is not None:
                into[version] = endpoint_set.version

    put(recorded.stable, document, "stableEndpoints", "stableVersion")
    put(recorded.previous_stable, document, "previousStableEndpoints", "previousStableVersion")
    if recorded.undo_canary is not None and recorded.undo_file_canary is not None:
        undo: dict[str, Any] = {"fileCanary": list(recorded.undo_file_canary)}
        put(recorded.undo_canary, undo, "canary", "canaryVersion")
        document["undo"] = undo
    await state_file.update(workloads=document)


async def record_stable(state_file: StateFile, endpoints: Sequence[str]) -> None:
    workloads: Mapping[str, Any] = state_file.read().get("workloads") or {}
    await state_file.update(workloads={**workloads, "stableEndpoints": list(endpoints)})
