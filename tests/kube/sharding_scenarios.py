"""Sharding, against the emulator: replicas in processes of their own share the rollouts' shards.

`sharded_rollouts`: R replicas (`--shards K`) drive N Istio rollouts released at once; with
`kill`, the replica holding the most shards is killed with SIGKILL once every rollout is on
its way. Every rollout must complete, each weight applied once and in order; every write the
daemons send (the emulator audits them, with the Lease holders of that moment) must come from
the holder of the rollout's shard Lease, whose renewal is less than a lease duration old; the
killed replica's shards must move to the others.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshshift.kube.shards import SHARD_LEASE_PREFIX, shard_of
from tests.kube.harness import KubeEnv, Observer, daemon_process, world
from tests.kube.scenarios import deployment, distinct, new_version, opt_in

SHORT_STEPS = "- setWeight: 20\n- pause: {duration: 2s}\n- setWeight: 50\n- pause: {duration: 2s}\n"
WEIGHTS = [0, 20, 50, 0]  # the canary's weight in every distinct VirtualService version
REPEATED = {"RolloutResumed": 2}  # one per pause: the same words twice
WITHIN = 240.0  # seconds: only reached when something is broken
_ROLLOUT_SUFFIXES = ("-meshshift-state", "-primary", "-canary")


@dataclass
class ShardingReport:
    takeovers: dict[str, float] = field(default_factory=dict)  # shard Lease -> seconds after the last renewal
    killed_at_renewal_age: dict[str, float] = field(default_factory=dict)
    holders: dict[str, list[str]] = field(
        default_factory=dict
    )  # replica -> its shard Leases, before the kill
    writes: int = 0


def virtual_service_for(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": f"{name}-primary"}, "weight": 100},
                        {"destination": {"host": f"{name}-canary"}, "weight": 0},
                    ],
                }
            ],
        },
    }


def canary_weight(vs: dict[str, Any], name: str) -> int:
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return int(
        next(d.get("weight", 0) for d in route["route"] if d["destination"]["host"] == f"{name}-canary")
    )


def micro(value: str) -> float:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


def shard_holders(observer: Observer, shards: int) -> dict[str, str | None]:
    leases = observer.current["Lease"]
    return {
        f"{SHARD_LEASE_PREFIX}{k}": ((leases.get(f"{SHARD_LEASE_PREFIX}{k}") or {}).get("spec") or {}).get(
            "holderIdentity"
        )
        for k in range(shards)
    }


def shared(
    holders: dict[str, str | None], identities: Sequence[str], fair: int
) -> dict[str, str | None] | None:
    """The holders, once every replica holds some shard, none holds more than its share, none is free."""
    if set(holders.values()) != set(identities) or max(Counter(holders.values()).values()) > fair:
        return None
    return holders


def rollout_of(name: str) -> str:
    name = name.split(".", 1)[0]  # an Event: <deployment>.<hex>
    for suffix in _ROLLOUT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


async def sharded_rollouts(
    env: KubeEnv,
    *,
    rollouts: int = 6,
    replicas: int = 2,
    shards: int = 6,
    lease_duration: float = 4.0,
    kill: bool = False,
    logs: Path | None = None,
) -> ShardingReport:
    km = env.kmock
    if km is not None:
        km.write_audit = []
    report = ShardingReport()
    names = [f"app-{i:02d}" for i in range(rollouts)]
    identities = [f"replica-{k}" for k in range(replicas)]
    async with world(env) as w:
        for name in names:
            await w.cluster.create_virtual_service(virtual_service_for(name))
            await w.cluster.create_deployment(deployment(name, annotations=opt_in("istio", SHORT_STEPS)))
        async with contextlib.AsyncExitStack() as stack:
            processes = {
                identity: await stack.enter_async_context(
                    daemon_process(
                        env,
                        identity,
                        f"shards={shards}",
                        f"lease_duration={lease_duration}",
                        log=logs / f"{identity}.log" if logs is not None else None,
                    )
                )
                for identity in identities
            }
            # Every rollout set up, and the shards shared: each replica holds some, none is free.
            await w.observer.wait_for(
                lambda o: all((o.state(n) or {}).get("stage") == "Idle" for n in names),
                what="every rollout initialised",
                within=WITHIN,
            )
            holders = await w.observer.wait_for(
                lambda o: shared(shard_holders(o, shards), identities, -(-shards // replicas)),
                what="the shards shared by every replica",
                within=WITHIN,
            )
            report.holders = {i: sorted(lease for lease, h in holders.items() if h == i) for i in identities}
            stables = {name: (w.observer.state(name) or {})["stableRevision"] for name in names}
            for name in names:
                await w.cluster.patch_deployment(name, new_version("v2"))
            await w.observer.wait_for(
                lambda o: all(
                    any(canary_weight(v, n) == 20 for v in o.history["VirtualService"][n]) for n in names
                ),
                what="every rollout at 20%",
                within=WITHIN,
            )
            if kill:
                victim = max(identities, key=lambda i: (len(report.holders[i]), i))
                moved = report.holders[victim]
                last_renewal = {
                    lease: micro(w.observer.current["Lease"][lease]["spec"]["renewTime"]) for lease in moved
                }
                processes[victim].send_signal(signal.SIGKILL)
                await processes[victim].wait()
                killed = datetime.datetime.now(datetime.UTC).timestamp()
                report.killed_at_renewal_age = {lease: killed - at for lease, at in last_renewal.items()}
                await w.observer.wait_for(
                    lambda o: all(shard_holders(o, shards)[lease] not in (None, victim) for lease in moved),
                    what="the killed replica's shards taken over",
                    within=WITHIN,
                )
                for lease in moved:
                    versions = w.observer.history["Lease"][lease]
                    renewed = max(micro(v["spec"]["renewTime"]) for v in versions
                                  if v["spec"].get("holderIdentity") == victim)  # fmt: skip
                    acquired = min(micro(v["spec"]["acquireTime"]) for v in versions
                                   if v["spec"].get("holderIdentity") not in (None, victim)
                                   and micro(v["spec"]["acquireTime"]) > renewed)  # fmt: skip
                    report.takeovers[lease] = acquired - renewed
            # Promoted: the state says so, and then (the state is written first) all traffic is back
            # on the primary, before the replicas stop.
            await w.observer.wait_for(
                lambda o: all(
                    (s := o.state(n) or {}).get("stage") == "Idle"
                    and s.get("stableRevision") != stables[n]
                    and canary_weight(o.current["VirtualService"][n], n) == 0
                    for n in names
                ),
                what="every rollout promoted",
                within=WITHIN,
            )
        check_steps_once(w.observer, names)
        if km is not None:
            report.writes = check_writes_by_holders(km.write_audit, shards, lease_duration)
    return report


def check_steps_once(observer: Observer, names: Sequence[str]) -> None:
    """Each weight applied once, in order; the stored step never goes back; each step Event at most once."""
    for name in names:
        weights = distinct([canary_weight(v, name) for v in observer.history["VirtualService"][name]])
        assert weights == WEIGHTS, (name, weights)
        steps = [s["stepIndex"] for s in observer.states(name) if s.get("stage") == "Stepping"]
        assert steps == sorted(steps), (name, steps)
        events = Counter((e["reason"], e["message"]) for e in observer.events(name))
        twice = [k for k, v in events.items() if v > REPEATED.get(k[0], 1)]
        assert twice == [], (name, twice)


def check_writes_by_holders(audit: Any, shards: int, lease_duration: float) -> int:
    """Every write for a rollout came from the holder of its shard's Lease, renewed less than a lease ago."""
    wrong = []
    for identity, plural, namespace, name, holders, at in audit:
        lease = f"{SHARD_LEASE_PREFIX}{shard_of(namespace, rollout_of(name), shards)}"
        holder, renewed, _ = holders.get(lease, (None, None, None))
        if holder != identity or renewed is None or at - micro(renewed) >= lease_duration:
            wrong.append((identity, plural, name, lease, holder, renewed))
    assert wrong == [], wrong[:10]
    assert list(itertools.islice(audit, 1)), "the audit saw no write"
    return len(audit)


SHARDING_SCENARIOS = {"sharded_rollouts": sharded_rollouts}
