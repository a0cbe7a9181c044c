"""The daemon's RBAC rules grant exactly what it uses.

Every Kubernetes scenario of tests/kube (SCENARIOS: rollouts on both routers, failures,
restarts, commands, scope, leader election with in-process and separate daemons, and
`template_sources`, the one that reads templates and Secrets from every place they can
come from; ROUTER_SCENARIOS: the Traefik and Gateway API rollouts; BLUE_GREEN_SCENARIOS: a
blue-green rollout with its preview Service on Istio and on NGINX) runs again against a
fresh kmock, whose request log records every API request. Each request of the daemons
(by User-Agent) is turned into what RBAC checks (API group, resource/subresource, verb,
namespace, name) and must be allowed by the rules `kubectl kustomize manifests/` renders
for the daemon's ServiceAccount; every rule (each verb of each resource, each
resourceName) must have allowed some request.

The Role for leader election lives in the daemon's own namespace (deployed, the pod's;
test_manifests.py checks that the Deployment puts the Lease there). In the scenarios a
daemon's own namespace is the one it is told to watch (tests/kube/harness.py gives it as
both `namespace` and `lease_namespace`), so a Role rule allows a daemon's request when
it goes to a namespace whose Deployments that daemon lists.

The sharding scenario (tests/kube/sharding_scenarios.py: two replicas, `--shards 6`) runs as
well; its calls are checked against the install with the sharding component
(manifests/components/sharding), whose Role grants the shard Leases and the membership Lease
instead of the leader's: each of those rules must be used too, and nothing beyond them.

The fault-injection scenario (KMOCK_ONLY) is left out: its retries repeat the calls the
others make, and it would add a quarter to this test's time.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from meshshift.kube.access import API_ACCESS
from tests.kube.blue_green_scenarios import BLUE_GREEN_SCENARIOS
from tests.kube.conftest import NAMESPACE
from tests.kube.harness import KubeEnv
from tests.kube.router_scenarios import ROUTER_SCENARIOS
from tests.kube.scenarios import SCENARIOS, requests_of
from tests.kube.sharding_scenarios import SHARDING_SCENARIOS
from tests.kube.test_api_access import rbac
from tests.ship.support import (
    DAEMON_NAMESPACE,
    Document,
    emulated_cluster,
    find,
    installed,
    installed_with_sharding,
    invalid_documents,
)


@dataclass(frozen=True, order=True)
class Call:
    """One API request, as RBAC sees it."""

    group: str
    resource: str  # "plural" or "plural/subresource"; a path for a non-resource URL
    verb: str
    namespace: str | None
    name: str | None
    daemon: str  # the identity in its User-Agent

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        what = f"{self.verb} {self.resource}.{self.group or 'core'}"
        return f"{self.daemon}: {what}{where} {self.name or ''}".rstrip()


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource (optionally one name), cluster-wide (namespace None) or in one namespace."""

    group: str
    resource: str
    verb: str
    name: str | None
    namespace: str | None

    def allows(self, call: Call, own_namespaces: frozenset[str]) -> bool:
        if (self.group, self.resource, self.verb) != (call.group, call.resource, call.verb):
            return False
        if self.name is not None and self.name != call.name:
            return False
        # A Role in the daemon's namespace stands for the namespaces the daemon was given.
        return self.namespace is None or call.namespace in own_namespaces

    def __str__(self) -> str:
        scope = f"Role in {self.namespace}" if self.namespace else "ClusterRole"
        name = f" {self.name}" if self.name else ""
        return f"{scope}: {self.verb} {self.resource}.{self.group or 'core'}{name}"


def call_of(request: Any) -> Call:
    agent = str(request.headers.get("User-Agent", ""))
    daemon = agent.partition("(")[2].rstrip(")")
    attributes = rbac(request)
    if attributes is None:  # a non-resource URL: no rule here grants one
        return Call(
            "", f"nonResourceURL {request.url.path}", request.method.value.lower(), None, None, daemon
        )
    group, resource, verb = attributes
    return Call(group, resource, verb, request.namespace, request.name, daemon)


def own_namespaces(calls: set[Call]) -> dict[str, frozenset[str]]:
    """Each daemon's own namespaces: those whose Deployments it lists."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for call in calls:
        if (call.resource, call.verb) == ("deployments", "list") and call.namespace:
            found[call.daemon].add(call.namespace)
    return {daemon: frozenset(namespaces) for daemon, namespaces in found.items()}


def allowed(call: Call, granted: list[Grant], owns: dict[str, frozenset[str]]) -> bool:
    return any(grant.allows(call, owns.get(call.daemon, frozenset())) for grant in granted)


def grants(docs: list[Document]) -> list[Grant]:
    """Every (verb, resource, name) the rendered install grants the daemon's ServiceAccount."""
    pod = find(docs, "Deployment", "meshshift")
    account = {
        "kind": "ServiceAccount",
        "name": pod["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": pod["metadata"]["namespace"],
    }
    found = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or account not in binding["subjects"]:
            continue
        role = find(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        namespace = binding["metadata"].get("namespace")  # None: a ClusterRoleBinding
        assert role["metadata"].get("namespace") == namespace
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            found.append(Grant(group, resource, verb, name, namespace))
    return found


@dataclass
class Replay:
    calls: dict[str, set[Call]]  # scenario -> the calls its daemons made
    created: dict[str, list[Document]]  # scenario -> the bodies its daemons created
    seconds: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """Every scenario against a fresh emulated API server, its daemons' requests recorded."""
    started = time.monotonic()
    calls: dict[str, set[Call]] = {}
    created: dict[str, list[Document]] = {}
    every: dict[str, Callable[[KubeEnv], Awaitable[object]]] = {
        **SCENARIOS,
        **ROUTER_SCENARIOS,
        **BLUE_GREEN_SCENARIOS,
        **SHARDING_SCENARIOS,
    }
    for name, scenario in every.items():
        directory: Path = tmp_path_factory.mktemp(name)
        async with emulated_cluster(directory, NAMESPACE) as env:
            await scenario(env)
            requests = requests_of(env.kmock)
        calls[name] = {call_of(r) for r in requests}
        created[name] = [r.data for r in requests if r.method.value == "POST" and isinstance(r.data, dict)]
    return Replay(calls, created, time.monotonic() - started)


def test_the_replay_covers_every_scenario(replay: Replay) -> None:
    assert "template_sources" in replay.calls
    assert all(replay.calls.values()), [name for name, calls in replay.calls.items() if not calls]
    print(f"\n{len(replay.calls)} scenarios replayed in {replay.seconds:.1f}s")


def install_of(scenario: str) -> list[Grant]:
    """What the daemons of a scenario run with: the install, or the install with sharding."""
    return grants(installed_with_sharding() if scenario in SHARDING_SCENARIOS else installed())


def test_every_call_the_daemon_makes_is_allowed(replay: Replay) -> None:
    denied = []
    for scenario, calls in replay.calls.items():
        granted = install_of(scenario)
        owns = own_namespaces(calls)
        denied += [f"{scenario}: {call}" for call in sorted(calls) if not allowed(call, granted, owns)]
    assert denied == []


def unused(granted: list[Grant], replay: Replay, scenarios: set[str]) -> list[str]:
    used: set[Grant] = set()
    for scenario, calls in replay.calls.items():
        if scenario in scenarios:
            owns = own_namespaces(calls)
            used.update(g for g in granted for c in calls if g.allows(c, owns.get(c.daemon, frozenset())))
    return [str(g) for g in granted if g not in used]


def test_every_rule_of_the_sharding_component_was_used(replay: Replay) -> None:
    """Its Lease rules by the sharded daemons; the rest, shared with the install, by any."""
    assert unused(grants(installed_with_sharding()), replay, set(replay.calls)) == []
    leases = [g for g in grants(installed_with_sharding()) if g.resource == "leases" and g.name]
    assert unused(leases, replay, set(SHARDING_SCENARIOS)) == []


def test_every_rule_was_used(replay: Replay) -> None:
    granted = grants(installed())
    assert unused(granted, replay, set(replay.calls) - set(SHARDING_SCENARIOS)) == []
    # The evidence: what was observed, against what is granted.
    observed = collections.Counter(
        (c.group or "core", c.resource, c.verb) for calls in replay.calls.values() for c in calls
    )
    print("\nobserved (distinct requests by daemon, namespace and name, summed over the scenarios):")
    for (group, resource, verb), count in sorted(observed.items()):
        print(f"  {verb:7} {resource}.{group}  x{count}")
    print("granted:")
    for grant in sorted(granted, key=lambda g: (g.namespace or "", g.group, g.resource, g.verb)):
        print(f"  {grant}")


def test_the_check_denies_what_is_not_granted() -> None:
    """The checker itself: names, namespaces and verbs outside the rules are refused."""
    granted = grants(installed())
    owns = {"daemon-a": frozenset({"shop"})}

    def call(group: str, resource: str, verb: str, namespace: str | None, name: str | None) -> Call:
        return Call(group, resource, verb, namespace, name, "daemon-a")

    assert allowed(call("coordination.k8s.io", "leases", "patch", "shop", "meshshift-leader"), granted, owns)
    assert not allowed(call("coordination.k8s.io", "leases", "patch", "shop", "other-lease"), granted, owns)
    assert not allowed(
        call("coordination.k8s.io", "leases", "get", "kube-system", "meshshift-leader"), granted, owns
    )
    assert allowed(call("apps", "deployments", "patch", "anywhere", "web-primary"), granted, owns)
    assert not allowed(call("apps", "deployments", "delete", "shop", "web"), granted, owns)
    assert not allowed(call("", "secrets", "list", "shop", None), granted, owns)
    assert not allowed(call("apps", "deployments/status", "patch", "shop", "web"), granted, owns)


def test_no_rule_uses_a_wildcard_and_leases_stay_in_the_daemons_namespace() -> None:
    granted = grants(installed())
    assert not [g for g in granted if "*" in (g.group, g.resource, g.verb) or g.name == "*"]
    leases = [g for g in granted if g.resource == "leases"]
    assert leases and all(g.namespace == DAEMON_NAMESPACE for g in leases)
    assert {(g.verb, g.name) for g in leases} == {
        ("create", None),
        ("get", "meshshift-leader"),
        ("patch", "meshshift-leader"),
    }
    sharded = [g for g in grants(installed_with_sharding()) if g.resource == "leases"]
    assert sharded and all(g.namespace == DAEMON_NAMESPACE for g in sharded)
    shards = [f"meshshift-shard-{k}" for k in range(6)]
    assert {(g.verb, g.name) for g in sharded} == {
        ("create", None),
        *(("get", name) for name in shards),
        *(("patch", name) for name in shards),
        ("patch", "meshshift-members"),
    }


def test_the_rules_are_what_access_py_lists() -> None:
    """meshshift/kube/access.py (beside the code that makes the calls) and the manifest agree."""
    listed = {(group, resource, verb) for group, resource, verbs in API_ACCESS for verb in verbs}
    assert {(g.group, g.resource, g.verb) for g in grants(installed())} == listed


def test_what_the_daemon_creates_is_valid(replay: Replay) -> None:
    """Every object the daemon created in the scenarios validates against its kind's schema."""
    bodies = [body for bodies in replay.created.values() for body in bodies]
    kinds = collections.Counter(str(body.get("kind")) for body in bodies)
    assert set(kinds) >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Event",
        "Lease",
        "Ingress",
        "VirtualService",
        "TraefikService",
    }
    invalid = {}
    for body in bodies:
        invalid.update(invalid_documents([body]))
    assert invalid == {}
    print("\ncreated and validated: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items())))
