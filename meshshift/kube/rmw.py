"""Read-modify-write of one object with optimistic concurrency.

Read the object, let the caller compute the desired version, send the difference as a
JSON merge patch carrying the resourceVersion that was read (or create the object when
it is missing). A 409 (someone wrote in between, or the object appeared) starts over
from a fresh read, a bounded number of times.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from meshshift.kube.patches import merge_diff, with_resource_version
from meshshift.kube.resources import JsonObject, KubeApi, KubeApiError, ResourceType, resource_version

log = structlog.get_logger(__name__)

DEFAULT_ATTEMPTS = 5

# current object (None: missing) -> desired object (None: leave it as it is)
Build = Callable[[JsonObject | None], JsonObject | None]


def comparable(obj: Mapping[str, Any]) -> JsonObject:
    """An object without its status, which writes to the main resource cannot change."""
    result = copy.deepcopy(dict(obj))
    result.pop("status", None)
    result.setdefault("metadata", {})
    return result


async def read_modify_write(
    api: KubeApi,
    rt: ResourceType,
    name: str,
    namespace: str | None,
    build: Build,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> tuple[JsonObject | None, bool]:
    """Bring the object where `build` says; returns (object as stored, whether it was written)."""
    for _attempt in range(attempts):
        current = await api.get(rt, name, namespace)
        desired = build(None if current is None else comparable(current))
        if desired is None:
            return current, False
        try:
            if current is None:
                return await api.create(rt, desired, namespace), True
            patch = merge_diff(comparable(current), desired)
            if not patch:
                return current, False
            written = await api.merge_patch(
                rt, name, with_resource_version(patch, resource_version(current)), namespace
            )
            return written, True
        except KubeApiError as error:
            if not error.conflict:
                raise
            log.info("write conflicted; reading again", resource=str(rt), name=name, error=error.message)
    raise KubeApiError(
        409, "Conflict", f"still conflicting after {attempts} attempts", what=f"write {rt} {name}"
    )
