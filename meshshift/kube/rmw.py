"""Read-modify-write of one object with optimistic concurrency.

Read the object, let the caller compute the desired version, send the difference as a
JSON merge patch carrying the resourceVersion that was read (or create the object when
it is missing). A 409 (someone wrote in between, or the object appeared) starts over
from a fresh read, a bounded number of times.

With `known` (KnownObjects), the first attempt starts from the object as this daemon last
read or wrote it instead of reading it: one request per write, and none when nothing
changes. The resourceVersion it carries makes that safe: if anyone wrote since, the write
meets 409 and the object is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from meshshift.kube.patches import merge_diff, with_resource_version
from meshshift.kube.resources import (
    JsonObject,
    KubeApi,
    KubeApiError,
    ResourceType,
    answer_copy,
    resource_version,
)

log = structlog.get_logger(__name__)

DEFAULT_ATTEMPTS = 5

# current object (None: missing) -> desired object (None: leave it as it is)
Build = Callable[[JsonObject | None], JsonObject | None]
ObjectId = tuple[str, str | None, str]  # (resource, namespace, name)


class KnownObjects:
    """Objects as this daemon last read or wrote them (the server's answer, resourceVersion included)."""

    def __init__(self) -> None:
        self._objects: dict[ObjectId, JsonObject] = {}

    def get(self, rt: ResourceType, name: str, namespace: str | None) -> JsonObject | None:
        return self._objects.get((str(rt), namespace, name))

    def put(self, rt: ResourceType, name: str, namespace: str | None, obj: JsonObject | None) -> None:
        if obj is None:
            self._objects.pop((str(rt), namespace, name), None)
        else:
            self._objects[str(rt), namespace, name] = obj

    def clear(self) -> None:
        self._objects.clear()


def _without_status(obj: Mapping[str, Any]) -> JsonObject:
    """`obj` without its status (which writes to the main resource cannot change), sharing its
    values: only to be read."""
    view = {key: value for key, value in obj.items() if key != "status"}
    view.setdefault("metadata", {})
    return view


def comparable(obj: Mapping[str, Any]) -> JsonObject:
    """`obj` (as the API server sent it) without its status, as a copy of its own to edit."""
    return answer_copy(_without_status(obj))


async def read_modify_write(
    api: KubeApi,
    rt: ResourceType,
    name: str,
    namespace: str | None,
    build: Build,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    known: KnownObjects | None = None,
) -> tuple[JsonObject | None, bool]:
    """Bring the object where `build` says; returns (object as stored, whether it was written)."""
    current = known.get(rt, name, namespace) if known is not None else None
    for _attempt in range(attempts):
        if current is None:
            current = await api.get(rt, name, namespace)
        desired = build(None if current is None else comparable(current))
        try:
            if desired is None:
                return current, False
            if current is None:
                current = await api.create(rt, desired, namespace)
                return current, True
            patch = merge_diff(_without_status(current), desired)  # read only: no copy
            if not patch:
                return current, False
            written = await api.merge_patch(
                rt, name, with_resource_version(patch, resource_version(current)), namespace
            )
            current = written
            return written, True
        except KubeApiError as error:
            current = None  # whatever was known is stale: read again
            if not error.conflict and not error.not_found:
                raise
            log.info("write conflicted; reading again", resource=str(rt), name=name, error=error.message)
        finally:
            if known is not None:
                known.put(rt, name, namespace, current)
    raise KubeApiError(
        409, "Conflict", f"still conflicting after {attempts} attempts", what=f"write {rt} {name}"
    )
