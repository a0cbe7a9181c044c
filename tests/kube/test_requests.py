"""controller_clientset_k8s_request_total's labels (Argo's, from argoproj/pkg's own cases), and the
counter behind it: every call of a real KubeApi through the real client, against the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from kubernetes_asyncio import client, config

from meshshift.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    EVENTS,
    KubeApi,
    KubeApiError,
    KubeRequests,
    request_labels,
    requests_owned_by,
)
from tests.kube.harness import KubeEnv

CASES = yaml.safe_load(
    (Path(__file__).parents[1] / "data" / "argo-metrics" / "kubeclientmetrics-requests.yaml").read_text()
)
LABELS = ("kind", "namespace", "name", "verb", "status_code")


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_request_labels_are_argos(case: dict[str, Any]) -> None:
    url = urlsplit(case["path"])
    body = {"metadata": {"name": case["body_name"]}} if "body_name" in case else None
    labels = request_labels(case["method"], url.path, parse_qsl(url.query), body, case["status"])
    assert dict(zip(LABELS, labels, strict=True)) == case["labels"]


def test_a_subresource_counts_for_its_object() -> None:
    labels = request_labels("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", [], None, 200)
    assert labels == ("deployments", "shop", "web", "Patch", "200")


def test_totals_group_by_any_labels_and_forget_drops_only_a_rollouts_own() -> None:
    requests = KubeRequests()
    requests.record(("deployments", "shop", "", "Watch", "200"))  # the informer's
    with requests_owned_by("shop", "web"):
        requests.record(("virtualservices", "shop", "web", "Patch", "200"))
        requests.record(("virtualservices", "shop", "web", "Patch", "200"))
        requests.record(("events", "shop", "N/A", "Create", "201"))  # shared by the namespace
        requests.record(("analysistemplates", "shop", "success-rate", "Get", "200"))
    with requests_owned_by("shop", "cart"):
        requests.record(("analysistemplates", "shop", "success-rate", "Get", "200"))
        requests.record(("virtualservices", "shop", "cart", "Patch", "409"))
    assert requests.totals()[("Patch", "virtualservices")] == 3
    assert requests.totals(("status_code",)) == {("200",): 5, ("201",): 1, ("409",): 1}
    assert requests.total() == 7
    requests.forget("shop", "web")
    assert requests.counts() == {
        ("deployments", "shop", "", "Watch", "200"): 1,
        ("events", "shop", "N/A", "Create", "201"): 1,
        ("analysistemplates", "shop", "success-rate", "Get", "200"): 2,  # cart still reads it
        ("virtualservices", "shop", "cart", "Patch", "409"): 1,
    }
    requests.forget("shop", "cart")
    assert set(requests.counts()) == {
        ("deployments", "shop", "", "Watch", "200"),
        ("events", "shop", "N/A", "Create", "201"),
    }


async def test_every_call_of_a_kube_api_is_counted_as_the_emulator_saw_it(kube_env: KubeEnv) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kube_env.kubeconfig), client_configuration=configuration, persist_config=False
    )
    requests = KubeRequests()
    async with client.ApiClient(configuration) as api_client:
        api = KubeApi(api_client, requests=requests, retries=0)
        body = {"metadata": {"name": "web-meshshift-state"}, "data": {"a": "1"}}
        await api.create(CONFIG_MAPS, body, "shop")
        assert await api.get(CONFIG_MAPS, "web-meshshift-state", "shop") is not None
        assert await api.get(CONFIG_MAPS, "nothing", "shop") is None  # a 404 is counted too
        await api.merge_patch(CONFIG_MAPS, "web-meshshift-state", {"data": {"a": "2"}}, "shop")
        with pytest.raises(KubeApiError):
            await api.create(CONFIG_MAPS, body, "shop")  # 409: it exists
        await api.list_objects(DEPLOYMENTS, "shop")
        await api.create(EVENTS, {"metadata": {"name": "web.1"}, "reason": "X"}, "shop")
        watch = await api.open_watch(DEPLOYMENTS, "shop", resource_version=None, timeout_seconds=1)
        watch.close()
        await asyncio.sleep(0)
    assert requests.counts() == {
        ("configmaps", "shop", "web-meshshift-state", "Create", "201"): 1,
        ("configmaps", "shop", "web-meshshift-state", "Get", "200"): 1,
        ("configmaps", "shop", "nothing", "Get", "404"): 1,
        ("configmaps", "shop", "web-meshshift-state", "Patch", "200"): 1,
        ("configmaps", "shop", "web-meshshift-state", "Create", "409"): 1,
        ("deployments", "shop", "N/A", "List", "200"): 1,
        ("events", "shop", "N/A", "Create", "201"): 1,
        ("deployments", "shop", "", "Watch", "200"): 1,
    }
    # The emulator's own log agrees, request for request.
    assert kube_env.kmock is not None
    assert len(list(kube_env.kmock)) == requests.total()
