"""Every Kubernetes API call the daemon makes, for its RBAC role: (API group, resource, verbs).

Kept next to the code that makes the calls; tests/kube/test_api_access.py checks it
against the requests the daemon sends while running the test scenarios, and
tests/ship/test_rbac.py checks that manifests/rbac.yaml grants exactly these.
"""

from __future__ import annotations

API_ACCESS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "deployments", ("get", "list", "watch", "create", "patch")),  # watched; the -primary
    ("apps", "deployments/scale", ("patch",)),  # scaling the user's Deployment (the canary)
    ("", "services", ("get", "create", "patch")),  # <svc>, <svc>-primary, <svc>-canary
    ("", "configmaps", ("get", "create", "patch")),  # <deployment>-meshshift-state
    ("", "events", ("create",)),
    ("", "secrets", ("get",)),  # secretKeyRef args; Datadog / New Relic credentials
    # Leader election, in the daemon's own namespace only: manifests/rbac.yaml grants it
    # with a Role there (get and patch of the one Lease by name), not the ClusterRole.
    ("coordination.k8s.io", "leases", ("get", "create", "patch")),
    ("networking.istio.io", "virtualservices", ("get", "create", "patch")),
    # The stable one read, each rollout's canary written; `delete` only for the shared canary
    # Ingress an earlier version wrote, once no rollout's path is left in it.
    ("networking.k8s.io", "ingresses", ("get", "create", "patch", "delete")),
    ("traefik.io", "traefikservices", ("get", "create", "patch")),  # the weighted one; mirroring ones
    ("traefik.io", "ingressroutes", ("get", "list", "patch")),  # those routing to it get shadow routes
    ("gateway.networking.k8s.io", "httproutes", ("get", "patch")),  # the user's, patched in place
    ("meshshift.io", "analysistemplates", ("get",)),
    ("meshshift.io", "clusteranalysistemplates", ("get",)),
    ("argoproj.io", "analysistemplates", ("get",)),
    ("argoproj.io", "clusteranalysistemplates", ("get",)),
)


def allowed() -> frozenset[tuple[str, str, str]]:
    return frozenset((group, resource, verb) for group, resource, verbs in API_ACCESS for verb in verbs)
