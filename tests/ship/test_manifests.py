"""manifests/: it renders with kustomize, every object validates, and it matches what the daemon does."""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp
import kubernetes_validate
import pytest

from meshshift.cli.main import build_parser
from meshshift.observe.server import serve
from meshshift.processes import free_port
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings, split_host_port
from tests.ship.support import (
    DAEMON_NAMESPACE,
    ISTIO_SAMPLES,
    KUBERNETES_VERSION,
    MANIFESTS,
    SLACK_SECRET_EXAMPLE,
    Document,
    find,
    group_of,
    installed,
    installed_with_servicemonitor,
    invalid_documents,
    load_documents,
    sample_files,
    scrape_job,
    validation_errors,
    with_value,
)

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def daemon_pod(docs: list[Document]) -> Document:
    pod: Document = find(docs, "Deployment", "meshshift")["spec"]["template"]
    return pod


def daemon_container(docs: list[Document]) -> Document:
    (container,) = daemon_pod(docs)["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_kustomize_renders_the_install() -> None:
    docs = installed()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ClusterRole", "meshshift"),
        ("ClusterRoleBinding", "meshshift"),
        ("ConfigMap", "meshshift-grafana-dashboard"),  # no hash suffix: the sidecar replaces it
        ("CustomResourceDefinition", "analysistemplates.meshshift.io"),
        ("CustomResourceDefinition", "clusteranalysistemplates.meshshift.io"),
        ("Deployment", "meshshift"),
        ("Namespace", DAEMON_NAMESPACE),
        ("Role", "meshshift-leader-election"),
        ("RoleBinding", "meshshift-leader-election"),
        ("Service", "meshshift-metrics"),
        ("ServiceAccount", "meshshift"),
    ]
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        assert namespace == (None if doc["kind"] in CLUSTER_SCOPED else DAEMON_NAMESPACE), doc["kind"]


def test_the_default_install_needs_no_other_crd_and_validates() -> None:
    """What `kubectl apply -k manifests/` sends applies on a bare cluster: every object is of a
    Kubernetes 1.30 kind (validated against its schema, strict) or of a CRD sent with it;
    nothing of the Prometheus Operator's."""
    docs = installed()
    assert invalid_documents(docs) == {}
    defined = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"])
        for crd in docs
        if crd["kind"] == "CustomResourceDefinition"
    }
    for doc in docs:
        group = group_of(doc)
        if (group, doc["kind"]) in defined:
            continue
        # A built-in kind: kubernetes-validate holds its 1.30 schema (a CRD's kind would have none).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert group not in {"monitoring.coreos.com", "networking.istio.io"}, doc["kind"]


def test_the_servicemonitor_is_a_component_added_on_request() -> None:
    """Not in `kubectl kustomize manifests/` (it needs the Prometheus Operator's CRDs); a
    kustomization naming the component gets it, and the Service label its jobLabel reads."""
    plain, monitored = installed(), installed_with_servicemonitor()
    assert [d for d in plain if d["kind"] == "ServiceMonitor"] == []
    added = [d for d in monitored if d not in plain]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in added) == [
        ("Service", "meshshift-metrics"),  # with its job label
        ("ServiceMonitor", "meshshift"),
    ]
    monitor = find(monitored, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == DAEMON_NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # its serviceMonitorSelector
    # The Prometheus Operator names the job after that label: Argo's dashboard selects this job.
    assert scrape_job(monitored) == "argo-rollouts-metrics"
    assert scrape_job([*plain, monitor]) == "meshshift-metrics"  # without the label: the Service's name
    service = find(monitored, "Service")
    assert {k: v for k, v in service.items() if k != "metadata"} == {
        k: v for k, v in find(plain, "Service").items() if k != "metadata"
    }


def test_the_grafana_dashboard_is_a_configmap_for_the_sidecar() -> None:
    config_map = find(installed(), "ConfigMap", "meshshift-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    # It says which namespace Grafana's sidecar must watch: its own, as rendered.
    annotations = config_map["metadata"]["annotations"]
    assert annotations["meshshift.io/grafana-sidecar-namespace"] == config_map["metadata"]["namespace"]
    assert "searchNamespace" in annotations["meshshift.io/grafana-sidecar"]
    assert DAEMON_NAMESPACE in annotations["meshshift.io/grafana-sidecar"]
    readme = (MANIFESTS.parent / "README.md").read_text(encoding="utf-8")
    assert "grafana.sidecar.dashboards.searchNamespace" in readme
    assert "meshshift.io/grafana-sidecar-namespace" in readme
    (text,) = config_map["data"].values()
    shipped = json.loads((MANIFESTS / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    assert json.loads(text) == shipped


def test_every_manifest_and_sample_validates() -> None:
    docs = installed_with_servicemonitor() + [doc for path in sample_files() for doc in load_documents(path)]
    assert len(docs) > 20
    assert invalid_documents(docs) == {}


@pytest.mark.parametrize(
    ("kind", "path", "value", "reason"),
    [
        ("Deployment", ("spec", "replicaz"), 2, "'replicaz' was unexpected"),
        ("ClusterRole", ("rules", 0, "verb"), ["get"], "'verb' was unexpected"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "intervall"), "15s", "'intervall' was unexpected"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15 seconds", "does not match"),
        ("ServiceMonitor", ("spec", "joblabel"), "x", "'joblabel' was unexpected"),
    ],
)
def test_validation_catches_a_typo(kind: str, path: tuple[Any, ...], value: Any, reason: str) -> None:
    errors = validation_errors(with_value(find(installed_with_servicemonitor(), kind), path, value))
    assert any(reason in error for error in errors), errors


@pytest.mark.parametrize(
    ("file", "kind", "path", "value", "reason"),
    [
        (
            "32-virtualservice.yaml",
            "VirtualService",
            ("spec", "http", 1, "rout"),
            [],
            "'rout' was unexpected",
        ),
        ("32-virtualservice.yaml", "VirtualService", ("spec", "http", 1, "timeout"), "10", "does not match"),
        (
            "32-virtualservice.yaml",
            "VirtualService",
            ("spec", "http", 0, "match", 0, "headers"),
            {"X-Canary": {"exact": "true"}},
            "does not match",  # Istio wants header names in lowercase
        ),
        ("30-gateway.yaml", "Gateway", ("spec", "servers", 0, "port", "protocol"), "HTTP1", "is not one of"),
        (
            "31-destinationrules.yaml",
            "DestinationRule",
            ("spec", "hostname"),
            "x",
            "'hostname' was unexpected",
        ),
        (
            "10-analysistemplate.yaml",
            "AnalysisTemplate",
            ("spec", "metrics", 0, "count"),
            True,
            "is not valid",
        ),
    ],
)
def test_sample_schemas_catch_a_typo(
    file: str, kind: str, path: tuple[Any, ...], value: Any, reason: str
) -> None:
    doc = next(d for d in load_documents(ISTIO_SAMPLES / file) if d["kind"] == kind)
    assert validation_errors(doc) == []
    errors = validation_errors(with_value(doc, path, value))
    assert any(reason in error for error in errors), errors


# --- the Deployment matches the daemon ---------------------------------------------------------


def test_the_deployment_runs_two_replicas_with_leader_election() -> None:
    docs = installed()
    deployment = find(docs, "Deployment", "meshshift")
    assert deployment["spec"]["replicas"] == 2
    container = daemon_container(docs)
    args = build_parser().parse_args(["run", *container.get("args", [])])  # the image's entrypoint
    assert args.command == "run" and args.leader_elect is not False and args.config is None


def deployment_environment(docs: list[Document]) -> dict[str, str]:
    """The daemon container's environment as the kubelet fills it in (Secrets: the samples' values)."""
    container = daemon_container(docs)
    downward = {"metadata.namespace": DAEMON_NAMESPACE, "metadata.name": "meshshift-7d9c-x2x4q"}
    secrets = {
        ("meshshift-api-token", "token"): "api-token",
        **{
            ("meshshift-notifications", key): value
            for key, value in find(load_documents(SLACK_SECRET_EXAMPLE), "Secret")["stringData"].items()
        },
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        env.update({key: value for (secret, key), value in secrets.items() if secret == name})
    for entry in container["env"]:
        value_from = entry.get("valueFrom", {})
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in value_from:
            env[entry["name"]] = downward[value_from["fieldRef"]["fieldPath"]]
        else:
            ref = value_from["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"], ref["key"]]
    return env


def test_every_variable_the_deployment_sets_is_read_by_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt name would be ignored: each variable alone must change the daemon's settings."""
    environment = deployment_environment(installed())
    assert "MESHSHIFT_SLACK_WEBHOOK_URL" in environment  # the istio sample's Secret, through envFrom
    for name in [n for n in os.environ if n.startswith("MESHSHIFT_")]:
        monkeypatch.delenv(name)
    baseline = DaemonSettings.from_env()
    for name, value in environment.items():
        with monkeypatch.context() as scoped:
            scoped.setenv(name, value)
            assert DaemonSettings.from_env() != baseline, f"{name} changes nothing"


def test_the_deployment_gives_the_daemon_its_lease_and_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = installed()
    for name, value in deployment_environment(docs).items():
        monkeypatch.setenv(name, value)
    settings = DaemonSettings.from_env(leader_elect=True)
    assert settings.lease_namespace == DAEMON_NAMESPACE  # where the Role lets it hold the Lease
    assert settings.identity == "meshshift-7d9c-x2x4q"  # one candidate per pod
    assert settings.token == "api-token"
    assert settings.notifications.slack_webhook_url is not None
    assert settings.prometheus_address  # the builtin templates need one
    role = find(docs, "Role")
    assert role["metadata"]["namespace"] == find(docs, "Deployment")["metadata"]["namespace"]
    assert settings.lease_name in {name for rule in role["rules"] for name in rule.get("resourceNames", [])}


async def test_the_probes_and_the_scrape_path_are_served_on_the_container_port() -> None:
    docs = installed_with_servicemonitor()
    container = daemon_container(docs)
    (port,) = container["ports"]
    assert port["containerPort"] == split_host_port(DaemonSettings().listen)[1]  # the daemon's default
    paths = {
        container["livenessProbe"]["httpGet"]["path"]: "liveness",
        container["readinessProbe"]["httpGet"]["path"]: "readiness",
        find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["path"]: "scrape",
    }
    settings = DaemonSettings(listen=f"127.0.0.1:{free_port()}", leader_elect=True)
    statuses = {}
    async with serve(RolloutRegistry(), settings) as url, aiohttp.ClientSession() as session:
        for path in paths:
            async with session.get(url + path) as response:
                statuses[paths[path]] = response.status
    # /readyz answers 503 until the first listing is in; it exists.
    assert statuses == {"liveness": 200, "readiness": 503, "scrape": 200}


def test_resources_and_probes_are_set() -> None:
    container = daemon_container(installed())
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["port"] == container["ports"][0]["name"]
    assert container["readinessProbe"]["httpGet"]["port"] == container["ports"][0]["name"]


def test_the_pod_meets_pod_security_restricted() -> None:
    """The namespace enforces the `restricted` profile: each of its rules, on the effective values."""
    docs = installed()
    namespace = find(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = daemon_pod(docs)["spec"]
    container = daemon_container(docs)
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert context["runAsNonRoot"] is True
    assert context.get("runAsUser") != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add")
    assert context["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not context.get("privileged")
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v]


def test_service_servicemonitor_and_bindings_point_at_the_daemon() -> None:
    docs = installed_with_servicemonitor()
    pod = daemon_pod(docs)
    labels = pod["metadata"]["labels"]
    service = find(docs, "Service", "meshshift-metrics")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in daemon_container(docs)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    account = find(docs, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": "meshshift", "namespace": DAEMON_NAMESPACE}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = find(docs, kind)
        assert binding["subjects"] == [subject]
        assert find(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
