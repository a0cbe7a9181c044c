"""Sharding over Kubernetes Leases (the issue's acceptance): three replicas with --shards 6 share 60
rollouts; one is killed with SIGKILL mid-rollout; its shards move; every rollout completes, no step
applied twice, no write by a replica that does not hold the shard (see sharding_scenarios.py)."""

from __future__ import annotations

from pathlib import Path

from meshshift.kube.leader import LeaseTimings
from meshshift.kube.shards import shard_leases, shard_of
from tests.kube.harness import KubeEnv
from tests.kube.sharding_scenarios import sharded_rollouts

LEASE_DURATION = 4.0


def test_rollouts_hash_onto_shards_stably_and_evenly_enough() -> None:
    assert shard_of("shop", "web", 6) == shard_of("shop", "web", 6)
    assert shard_of("shop", "web", 1) == 0
    counts = [0] * 6
    for index in range(600):
        counts[shard_of("shop", f"app-{index}", 6)] += 1
    assert min(counts) > 60  # each shard gets a fair part of 600 (100 on average)
    assert shard_leases(3, "meshshift-leader") == [
        "meshshift-shard-0",
        "meshshift-shard-1",
        "meshshift-shard-2",
    ]
    assert shard_leases(1, "meshshift-leader") == ["meshshift-leader"]


async def test_three_replicas_share_sixty_rollouts_and_survive_a_kill(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    report = await sharded_rollouts(
        kube_env, rollouts=60, replicas=3, shards=6, lease_duration=LEASE_DURATION, kill=True, logs=tmp_path
    )
    retry = LeaseTimings.for_duration(LEASE_DURATION).retry_period
    print(f"shards before the kill: {report.holders}")
    print("takeover after the killed replica's last renewal: "
          + ", ".join(f"{lease} {seconds:.2f}s" for lease, seconds in sorted(report.takeovers.items()))
          + f" (lease duration {LEASE_DURATION}s, retry period {retry:.2f}s); "
          f"{report.writes} writes audited")  # fmt: skip
    assert all(len(leases) == 2 for leases in report.holders.values())
    assert len(report.takeovers) == 2
    # Taken over once the Lease expired (never before: that is the other replicas' safety), and
    # within one lease duration of the moment they could see its last renewal (a retry period).
    assert all(
        LEASE_DURATION - retry <= seconds <= LEASE_DURATION + retry for seconds in report.takeovers.values()
    )
