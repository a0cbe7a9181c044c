"""Sharding rollouts over Kubernetes Leases: which shard a rollout is in, which Leases guard them.

With `--shards K`, a rollout (namespace, name) belongs to shard `sha256("namespace/name") mod K`,
and shard k is guarded by the Lease `meshshift-shard-<k>` in the daemon's namespace; only the
holder of that Lease drives the rollout (and every write of it is fenced by that Lease, see
KubeApi.write_guard). Without sharding there is one shard, guarded by the leader's Lease.
"""

from __future__ import annotations

import hashlib

SHARD_LEASE_PREFIX = "meshshift-shard-"


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of a rollout: stable across processes, versions and machines."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_leases(shards: int, leader_lease: str) -> list[str]:
    """The Lease of each shard, in shard order."""
    if shards <= 1:
        return [leader_lease]
    return [f"{SHARD_LEASE_PREFIX}{k}" for k in range(shards)]
