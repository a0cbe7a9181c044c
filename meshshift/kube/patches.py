"""JSON merge patches (RFC 7386) computed from two versions of an object.

Every write meshshift makes to an object someone else may also edit is a
read-modify-write: read the object, compute the desired version, send only the
difference as a merge patch with the resourceVersion that was read. A concurrent edit
then fails with 409 instead of being overwritten, and fields meshshift does not manage
are never part of the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `old` into `new` (empty when they are equal).

    Lists are replaced whole, as RFC 7386 requires; a key missing from `new` becomes null.
    """
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        before = old[key]
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            nested = merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif before != value or type(before) is not type(value):
            patch[key] = value
    return patch


def with_resource_version(patch: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
    """`patch` with a `metadata.resourceVersion` precondition (the API server answers 409 when stale)."""
    result = dict(patch)
    if resource_version:
        result["metadata"] = {**dict(result.get("metadata") or {}), "resourceVersion": resource_version}
    return result
