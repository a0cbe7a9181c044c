"""Every Kubernetes API call the daemon makes, for its RBAC role: (API group, resource, verbs).

Kept next to the code that makes the calls; tests/kube/test_api_access.py checks it
against the requests the daemon sends while running the test scenarios.
"""

from __future__ import annotations

API_ACCESS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "deployments", ("get", "list", "watch", "create", "patch")),  # watched; the -primary
    ("apps", "deployments/scale", ("patch",)),  # scaling the user's Deployment (the canary)
    # Not a call: objects meshshift creates name the Deployment as owner with
    # blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission
    # plugin (OpenShift, hardened clusters) allows only with this permission.
    ("apps", "deployments/finalizers", ("update",)),
    ("", "services", ("get", "create", "patch")),  # <svc>, <svc>-primary, <svc>-canary
    ("", "configmaps", ("get", "create", "patch")),  # <deployment>-meshshift-state
    ("", "events", ("create",)),
    ("", "secrets", ("get",)),  # Datadog / New Relic credentials named by templates
    ("coordination.k8s.io", "leases", ("get", "create", "patch")),  # leader election
    ("networking.istio.io", "virtualservices", ("get", "create", "patch")),
    ("networking.k8s.io", "ingresses", ("get", "create", "patch")),  # the stable one read, the canary written
    ("meshshift.io", "analysistemplates", ("get",)),
    ("meshshift.io", "clusteranalysistemplates", ("get",)),
    ("argoproj.io", "analysistemplates", ("get",)),
    ("argoproj.io", "clusteranalysistemplates", ("get",)),
)


def allowed() -> frozenset[tuple[str, str, str]]:
    return frozenset((group, resource, verb) for group, resource, verbs in API_ACCESS for verb in verbs)
