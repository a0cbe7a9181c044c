"""The samples: `meshshift lint` accepts them, and the daemon runs them (kmock) as their READMEs say.

Each sample's files are applied in their numbered order to a fresh emulated API server;
the real daemon (in process, through the real client) then takes the Deployment over
and, once its image changes, runs the first steps. The samples' analyses query a
Prometheus that is not here, so each run stops at the first timed pause, before them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.cli.main import main
from meshshift.kube.resources import (
    DEPLOYMENTS,
    INGRESSES,
    SERVICES,
    KubeApi,
    ResourceType,
    analysis_templates,
    virtual_services,
)
from meshshift.kube.templates import SECRETS
from tests.kube.harness import Observer, World, running_daemon, world
from tests.ship.relabel import pod_port_targets, target_labels
from tests.ship.support import (
    ISTIO_SAMPLES,
    NGINX_SAMPLE,
    REPO,
    SLACK_SECRET_EXAMPLE,
    Document,
    emulated_cluster,
    find,
    group_of,
    invalid_documents,
    kubectl_reads,
    load_documents,
    sample_files,
)

NO_MESHSHIFT_DOCUMENT = "no meshshift document found"
NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
CANARY_INGRESS = "storefront-storefront-canary"  # <deployment>-<ingress>-canary
RESOURCES: dict[str, ResourceType] = {
    "Secret": SECRETS,
    "Service": SERVICES,
    "Deployment": DEPLOYMENTS,
    "Ingress": INGRESSES,
    "AnalysisTemplate": analysis_templates("meshshift.io"),
    "VirtualService": virtual_services("v1beta1"),
    "Gateway": ResourceType("networking.istio.io", "v1beta1", "gateways", "Gateway"),
    "DestinationRule": ResourceType("networking.istio.io", "v1beta1", "destinationrules", "DestinationRule"),
}


def lint(capsys: pytest.CaptureFixture[str], files: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    status = main(["lint", "-o", "json", *map(str, files)])
    findings: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return status, findings


def test_lint_accepts_every_sample(capsys: pytest.CaptureFixture[str]) -> None:
    files = sample_files()
    assert {f.parent for f in files} == {ISTIO_SAMPLES, NGINX_SAMPLE}
    status, findings = lint(capsys, files)
    assert [f for f in findings if not f["reason"].startswith(NO_MESHSHIFT_DOCUMENT)] == []
    assert status == 0
    # The files without findings are the ones lint checked: both Deployments and the template.
    checked = sorted({f.name for f in files} - {Path(f["file"]).name for f in findings})
    assert checked == ["10-analysistemplate.yaml", "30-deployment.yaml", "40-deployment.yaml"]


def test_kubectl_apply_f_leaves_the_slack_placeholder_out() -> None:
    """`kubectl apply -f istio-samples/` sends every .yaml file's objects and not the
    placeholder Slack Secret, which is applied only when named."""
    applied = kubectl_reads(ISTIO_SAMPLES)
    expected = [
        f"{d['kind'].lower()}{'.' + d['apiVersion'].split('/')[0] if '/' in d['apiVersion'] else ''}/"
        f"{d['metadata']['name']}"
        for d in sample_documents(ISTIO_SAMPLES)
    ]
    assert applied == expected
    assert len(applied) == 8 and "deployment.apps/ecommerce-app" in applied
    assert not [name for name in applied if name.startswith("secret/")]
    assert kubectl_reads(SLACK_SECRET_EXAMPLE) == ["secret/meshshift-notifications"]
    (secret,) = load_documents(SLACK_SECRET_EXAMPLE)
    assert "XXXXXXXX" in secret["stringData"]["MESHSHIFT_SLACK_WEBHOOK_URL"]  # a placeholder
    assert invalid_documents([secret]) == {}


def addon_pod_job() -> dict[str, Any]:
    """The `kubernetes-pods` scrape job of Istio's addon Prometheus (tests/data/istio-addon)."""
    docs = load_documents(REPO / "tests" / "data" / "istio-addon" / "prometheus.yaml")
    config = yaml.safe_load(find(docs, "ConfigMap", "prometheus")["data"]["prometheus.yml"])
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "kubernetes-pods"]
    return dict(job)


SELECTOR = re.compile(r"(\w+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def test_the_app_pods_are_scraped_with_the_labels_its_analysis_selects() -> None:
    """Istio's addon Prometheus, relabelling a pod of the sample's Deployment, scrapes the
    app's port and path, and labels the series with what conversion-rate's query selects."""
    deployment = find(load_documents(ISTIO_SAMPLES / "40-deployment.yaml"), "Deployment")
    pod = {
        "metadata": {
            **deployment["spec"]["template"]["metadata"],
            "name": "ecommerce-app-7d9c5b-x2x4q",
            "namespace": deployment["metadata"]["namespace"],
        },
        "spec": deployment["spec"]["template"]["spec"],
    }
    job = addon_pod_job()
    (target,) = pod_port_targets(pod, "10.1.2.3")
    labels = target_labels(target, job)
    assert labels is not None, "the addon's kubernetes-pods job drops the app's pods"
    assert labels["instance"] == "10.1.2.3:8080"
    # The analysis' own queries, with the args the rollout gives them.
    template = find(load_documents(ISTIO_SAMPLES / "10-analysistemplate.yaml"), "AnalysisTemplate")
    (metric,) = [m for m in template["spec"]["metrics"] if m["name"] == "conversion-rate"]
    query = metric["provider"]["prometheus"]["query"]
    args = {"namespace": "shop", "service-name": "ecommerce-app"}  # the step's and meshshift's args
    for name, value in args.items():
        query = query.replace(f"{{{{args.{name}}}}}", value)
    selectors = {name: dict(MATCHER.findall(body)) for name, body in SELECTOR.findall(query)}
    assert set(selectors) == {"conversions_total", "page_views_total"}
    for name, matchers in selectors.items():
        assert matchers and matchers.items() <= labels.items(), (name, matchers, labels)
    # The annotations are what gets them scraped.
    del pod["metadata"]["annotations"]
    (unannotated,) = pod_port_targets(pod, "10.1.2.3")
    assert target_labels(unannotated, job) is None


def test_lint_checks_the_exercise_against_its_template(capsys: pytest.CaptureFixture[str]) -> None:
    """Alone, the Deployment names a template lint cannot find: the steps were really read."""
    status, findings = lint(capsys, [ISTIO_SAMPLES / "40-deployment.yaml"])
    assert status == 1
    assert {f["reason"] for f in findings} == {'unknown template "ecommerce-health"'}
    assert len(findings) == 4  # the analysis after 10%, 25%, 50% and 100%


def sample_documents(folder: Path) -> list[Document]:
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in load_documents(path)]


async def apply(w: World, docs: list[Document]) -> None:
    """`kubectl apply -f FOLDER/`: each document created, in file order."""
    api = KubeApi(w.cluster.api)
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue  # kmock serves every namespace (and cannot create one)
        rt = RESOURCES[doc["kind"]]
        assert group_of(doc) == rt.group, doc["kind"]
        await api.create(rt, doc, doc["metadata"].get("namespace"))


def route(vs: Document, name: str) -> Document:
    found: Document = next(r for r in vs["spec"]["http"] if r.get("name") == name)
    return found


def weights(vs: Document, name: str = "primary") -> dict[str, int]:
    return {d["destination"]["host"]: d.get("weight", 0) for d in route(vs, name)["route"]}


def virtual_service_at(weight: int) -> Callable[[Observer], Document | None]:
    def check(observer: Observer) -> Document | None:
        vs = observer.get("VirtualService", "ecommerce-app")
        return vs if vs is not None and weights(vs)["ecommerce-app-canary"] == weight else None

    return check


def canary_ingress_at(weight: int) -> Callable[[Observer], Document | None]:
    def check(observer: Observer) -> Document | None:
        ingress = observer.get("Ingress", CANARY_INGRESS)
        annotations = (ingress or {}).get("metadata", {}).get("annotations") or {}
        return ingress if annotations.get(NGINX_PREFIX + "canary-weight") == str(weight) else None

    return check


def image_patch(container: str, image: str) -> Document:
    return {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}


def created_objects(w: World) -> list[Document]:
    """What meshshift wrote beside the user's objects (they carry its managed-by label)."""
    found = []
    for objects in w.observer.current.values():
        for obj in objects.values():
            if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "meshshift":
                found.append(obj)
    assert {obj["kind"] for obj in found} >= {"Deployment", "Service", "ConfigMap"}
    return found


async def test_the_istio_exercise_runs_on_the_daemon(tmp_path: Path) -> None:
    docs = sample_documents(ISTIO_SAMPLES)
    original_vs = next(d for d in docs if d["kind"] == "VirtualService")
    async with emulated_cluster(tmp_path, "shop") as env, world(env) as w:
        await apply(w, docs)
        async with running_daemon(env):
            # Taken over: the stable runs as ecommerce-app-primary, the user's Deployment is scaled to 0.
            await w.observer.wait_for(
                lambda o: (o.get("Deployment", "ecommerce-app") or {}).get("spec", {}).get("replicas") == 0,
                what="the annotated Deployment scaled to zero",
            )
            primary = w.observer.get("Deployment", "ecommerce-app-primary")
            assert primary is not None and primary["spec"]["replicas"] == 10
            services = w.observer.current["Service"]
            assert services["ecommerce-app"]["spec"]["selector"] == {"app": "ecommerce-app-primary"}
            assert services["ecommerce-app-canary"]["spec"]["selector"] == {"app": "ecommerce-app"}
            assert services["ecommerce-app-canary"]["spec"]["ports"][0]["targetPort"] == 8080
            # A release: the QA header route first, then 10% on the canary; then a 2-minute pause.
            await w.cluster.patch_deployment(
                "ecommerce-app", image_patch("app", "ghcr.io/example/ecommerce-app:2.1.0")
            )
            vs = await w.observer.wait_for(virtual_service_at(10), what="10% on the canary")
    assert [r["name"] for r in vs["spec"]["http"]] == ["admin", "qa", "primary"]  # qa shadows primary
    qa = route(vs, "qa")
    assert qa["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    assert qa["route"] == [{"destination": {"host": "ecommerce-app-canary"}, "weight": 100}]
    assert (qa["retries"], qa["timeout"]) == (route(original_vs, "primary")["retries"], "10s")
    assert weights(vs) == {"ecommerce-app-primary": 90, "ecommerce-app-canary": 10}
    assert route(vs, "admin") == route(original_vs, "admin")  # not a managed route
    for key in ("hosts", "gateways"):
        assert vs["spec"][key] == original_vs["spec"][key]
    # What the daemon wrote is valid, the VirtualService included (the Istio schema).
    assert invalid_documents([vs, *created_objects(w)]) == {}


async def test_the_nginx_sample_runs_on_the_daemon(tmp_path: Path) -> None:
    prefix = NGINX_PREFIX
    async with emulated_cluster(tmp_path, "demo") as env, world(env) as w:
        await apply(w, sample_documents(NGINX_SAMPLE))
        async with running_daemon(env):
            canary = await w.observer.wait_for(
                lambda o: o.get("Ingress", CANARY_INGRESS), what="the canary Ingress"
            )
            assert canary["metadata"]["annotations"][prefix + "canary-weight"] == "0"
            await w.cluster.patch_deployment(
                "storefront", image_patch("app", "nginxinc/nginx-unprivileged:1.28-alpine")
            )
            canary = await w.observer.wait_for(canary_ingress_at(20), what="20% on the canary")
    annotations = canary["metadata"]["annotations"]
    assert annotations[prefix + "canary"] == "true"
    assert (annotations[prefix + "canary-by-header"], annotations[prefix + "canary-by-header-value"]) == (
        "X-Canary",
        "true",
    )
    (rule,) = canary["spec"]["rules"]
    assert rule["host"] == "storefront.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "storefront-canary",
        "port": {"number": 80},
    }
    assert invalid_documents([canary, *created_objects(w)]) == {}
