"""The StateStore port in Kubernetes: a ConfigMap `<deployment>-meshshift-state`.

The ConfigMap is meshshift's own object (owned by the Deployment, so it goes with it);
the user's Deployment spec is never used for state. `data["state.json"]` holds the
engine's state and its analysis runs; `data["commands.json"]` records what the daemon
did with each `meshshift.io/command` (see commands.py). Every write carries the
resourceVersion last read: a 409 means someone wrote in between, so the store reads
again and, unless the object already holds what it wanted to write, writes again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog

from meshshift import codec
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.state import RolloutState
from meshshift.kube import wire
from meshshift.kube.patches import with_resource_version
from meshshift.kube.resources import (
    CONFIG_MAPS,
    JsonObject,
    KubeApi,
    KubeApiError,
    owner_reference,
    resource_version,
)
from meshshift.kube.workloads import MANAGED_BY, MANAGED_BY_LABEL
from meshshift.ports import StoredRollout

log = structlog.get_logger(__name__)

STATE_KEY = "state.json"
COMMANDS_KEY = "commands.json"
ROLLOUT_LABEL = "meshshift.io/rollout"
COMMANDS_KEPT = 20
_WRITE_ATTEMPTS = 6


class StateCorruptError(RuntimeError):
    """The stored state cannot be read; it is left untouched for a human to look at."""


def state_config_map_name(deployment: str) -> str:
    return f"{deployment}-meshshift-state"


def encode_stored(stored: StoredRollout) -> str:
    data = {
        "rollout": stored.rollout.to_dict(),
        "analysisRuns": {name: codec.encode(run) for name, run in sorted(stored.analysis_runs.items())},
    }
    return wire.dumps_sorted(data)


def decode_stored(text: str) -> StoredRollout:
    data = wire.loads(text)
    runs = {name: codec.decode(AnalysisRun, run) for name, run in (data.get("analysisRuns") or {}).items()}
    return StoredRollout(RolloutState.from_dict(data["rollout"]), runs)


class ConfigMapStateStore:
    def __init__(self, api: KubeApi, *, namespace: str, deployment: str, owner: Mapping[str, Any]) -> None:
        self.api = api
        self.namespace = namespace
        self.deployment = deployment
        self.owner = owner
        self.name = state_config_map_name(deployment)
        self._resource_version: str | None = None
        self.log = log.bind(rollout=f"{namespace}/{deployment}")

    # --- the port -----------------------------------------------------------------------

    async def load(self) -> StoredRollout | None:
        current = await self._read()
        text = None if current is None else (current.get("data") or {}).get(STATE_KEY)
        if not text:
            return None
        try:
            return decode_stored(text)
        except (ValueError, KeyError, TypeError) as error:
            raise StateCorruptError(
                f"ConfigMap {self.namespace}/{self.name} key {STATE_KEY} cannot be read ({error}); "
                "meshshift leaves it untouched: fix or delete it"
            ) from error

    async def save(self, stored: StoredRollout) -> None:
        await self._write(STATE_KEY, encode_stored(stored))

    # --- command records ----------------------------------------------------------------

    async def read_commands(self) -> list[dict[str, Any]]:
        current = await self._read()
        text = None if current is None else (current.get("data") or {}).get(COMMANDS_KEY)
        if not text:
            return []
        try:
            records = json.loads(text)
        except ValueError:
            return []
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    async def record_command(self, record: Mapping[str, Any]) -> None:
        records = [r for r in await self.read_commands() if r.get("id") != record.get("id")]
        records = [*records, dict(record)][-COMMANDS_KEPT:]
        await self._write(COMMANDS_KEY, json.dumps(records, sort_keys=True, separators=(",", ":")))

    # --- plumbing -----------------------------------------------------------------------

    async def _read(self) -> JsonObject | None:
        current = await self.api.get(CONFIG_MAPS, self.name, self.namespace)
        self._resource_version = resource_version(current)
        return current

    async def _write(self, key: str, text: str) -> None:
        for _attempt in range(_WRITE_ATTEMPTS):
            try:
                if self._resource_version is None:
                    created = await self.api.create(CONFIG_MAPS, self._new_body(key, text), self.namespace)
                    self._resource_version = resource_version(created)
                    return
                patch = with_resource_version({"data": {key: text}}, self._resource_version)
                written = await self.api.merge_patch(CONFIG_MAPS, self.name, patch, self.namespace)
                self._resource_version = resource_version(written)
                return
            except KubeApiError as error:
                if not (error.conflict or error.not_found):
                    raise
                # Written by someone else in between (or our own write whose answer was
                # lost): read again; done if it already holds exactly this.
                current = await self._read()
                if current is not None and (current.get("data") or {}).get(key) == text:
                    return
                self.log.info("state write conflicted; retrying", key=key, status=error.status)
        raise KubeApiError(409, "Conflict", f"ConfigMap {self.name} kept changing", what="save state")

    def _new_body(self, key: str, text: str) -> JsonObject:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: self.deployment},
                "ownerReferences": [owner_reference(self.owner)],
            },
            "data": {key: text},
        }
