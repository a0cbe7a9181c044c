"""`meshshift get|promote|abort|undo` against a cluster (kmock) where a real meshshift daemon runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from meshshift.kube.workloads import template_revision
from tests.kube.conftest import NAMESPACE, register_resources
from tests.kube.harness import KubeEnv, running_daemon, world, write_kubeconfig
from tests.kube.kmock_ext import K8sEmulator
from tests.kube.scenarios import (
    APP,
    IMAGE,
    PAUSED_AT,
    STEPS,
    deployment,
    new_version,
    template_env,
    virtual_service,
    wait_initialized,
    wait_state,
)
from tests.observe.test_cli import columns, meshshift


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    kmock_options["cls"] = K8sEmulator
    return kmock_options


@pytest.fixture
def kube_env(kmock: Any, tmp_path: Path) -> KubeEnv:
    register_resources(kmock)
    url = str(kmock.url).rstrip("/")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, NAMESPACE)
    return KubeEnv(url=url, kubeconfig=kubeconfig, namespace=NAMESPACE, kmock=kmock)


async def test_get_and_control_in_a_cluster(kube_env: KubeEnv) -> None:
    kubeconfig = str(kube_env.kubeconfig)
    async with world(kube_env) as w:
        await w.cluster.create_template(w.metrics.template())
        await w.cluster.create_virtual_service(virtual_service())
        annotated = {
            "meshshift.io/enabled": "true",
            "meshshift.io/router": "istio",
            "meshshift.io/steps": STEPS,
        }
        await w.cluster.create_deployment(deployment(annotations=annotated))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            await w.cluster.patch_deployment(APP, new_version("v2"))
            paused = await wait_state(w, "the pause", phase="Paused", stepIndex=PAUSED_AT)

            # get: the namespace comes from the kubeconfig's context.
            code, out, err = await meshshift("get", "rollout", APP, "--kubeconfig", kubeconfig)
            assert code == 0, err
            lines = out.splitlines()
            assert "Namespace:       shop" in lines
            assert "Status:          ॥ Paused" in lines
            assert "  Step:          6/8" in lines
            assert "  SetWeight:     50" in lines
            assert "  ActualWeight:  50" in lines
            assert "HeaderRoutes:    canary-by-header (X-Canary exact 'true')" in lines
            header = next(line for line in lines if line.startswith("NAME "))
            run = columns(header, next(line for line in lines if "AnalysisRun" in line))
            assert run[1:3] == ["AnalysisRun", "✔ Successful"] and run[4] == "✔ 2,✖ 0"
            assert f"# revision:{paused['canaryRevision']}" in out
            assert all(cell_len(line) <= 80 for line in lines)

            code, out, _ = await meshshift("get", "rollouts", "-n", NAMESPACE, "--kubeconfig", kubeconfig)
            assert code == 0
            listing = out.splitlines()
            assert columns(listing[0], listing[1]) == [APP, NAMESPACE, "॥ Paused", "6/8", "50", "50"]

            code, out, _ = await meshshift("get", "rollout", APP, "--kubeconfig", kubeconfig, "-o", "json")
            view = json.loads(out)
            assert view["revisions"] == {
                "stable": paused["stableRevision"],
                "canary": paused["canaryRevision"],
            }
            assert view["images"]["canary"] == view["images"]["stable"]  # same image, other env

            # promote: through the annotation; the CLI reports what the daemon did.
            code, out, err = await meshshift("promote", APP, "--kubeconfig", kubeconfig)
            assert code == 0, err
            assert out.strip() == f"rollout '{APP}' promoted: resumed after the pause at step 6/8"
            command = (await w.cluster.deployment(APP) or {})["metadata"]["annotations"][
                "meshshift.io/command"
            ]
            assert re.fullmatch(r"promote/\d{4}-\d\d-\d\dT[\d:.]+Z", command)
            await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)

            # A refused command: the engine's reason, exit code 1.
            code, _, err = await meshshift("abort", APP, "--kubeconfig", kubeconfig, "-n", NAMESPACE)
            assert code == 1 and "not aborted: nothing to abort: the rollout is Healthy" in err

            # undo: a new revision is rolling out; undo puts the stable's pod template back.
            await w.cluster.patch_deployment(APP, new_version("v3"))
            paused = await wait_state(w, "the next pause", phase="Paused", stepIndex=PAUSED_AT)
            code, out, err = await meshshift("undo", APP, "--kubeconfig", kubeconfig)
            assert code == 0, err
            assert "back to the stable revision" in out
            current = await w.cluster.deployment(APP)
            assert current is not None and template_env(current) == "v2"
            assert template_revision(current["spec"]["template"]) == paused["stableRevision"]
            state = await wait_state(w, "the cancelled rollout", phase="Healthy", canaryRevision=None)
            assert state["history"][-1]["outcome"] == "Undone"

            code, _, err = await meshshift("undo", APP, "--kubeconfig", kubeconfig)
            assert code == 1 and "already runs the stable revision" in err

    code, _, err = await meshshift("get", "rollout", "nope", "-n", NAMESPACE, "--kubeconfig", kubeconfig)
    assert code == 1 and "rollout shop/nope not found" in err


async def test_set_image_list_and_status_in_a_cluster(kube_env: KubeEnv) -> None:
    """`set image` starts a rollout of the new image; `list rollouts` and `get` show it (Images:
    as Argo's plugin); `status --watch` follows it to Healthy (0), and says the status now."""
    kubeconfig = str(kube_env.kubeconfig)
    async with world(kube_env) as w:
        await w.cluster.create_template(w.metrics.template())
        await w.cluster.create_virtual_service(virtual_service())
        annotated = {
            "meshshift.io/enabled": "true",
            "meshshift.io/router": "istio",
            "meshshift.io/steps": STEPS,
        }
        await w.cluster.create_deployment(deployment(annotations=annotated))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            code, out, err = await meshshift("status", APP, "--kubeconfig", kubeconfig)
            assert (code, out) == (0, "Healthy\n"), err

            code, out, err = await meshshift(
                "set", "image", APP, "app=example/app:v9", "--kubeconfig", kubeconfig
            )
            assert code == 0, err
            assert out.strip() == f"rollout '{APP}' image updated: app=example/app:v9"
            current = await w.cluster.deployment(APP)
            assert current is not None
            assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "example/app:v9"
            assert template_env(current) == "v1"  # the rest of the container is as it was
            # Right after: never the old revision's Healthy (Argo's "waiting for rollout spec update").
            code, out, err = await meshshift("status", APP, "--no-watch", "--kubeconfig", kubeconfig)
            assert code == 0 and out.split(" - ")[0] in ("Progressing", "Paused"), (out, err)
            await wait_state(w, "the pause", phase="Paused", stepIndex=PAUSED_AT)

            code, out, err = await meshshift("get", "rollout", APP, "--kubeconfig", kubeconfig)
            assert code == 0, err
            lines = out.splitlines()
            images = next(i for i, line in enumerate(lines) if line.startswith("Images:"))
            shown = [lines[images].removeprefix("Images:").strip(), lines[images + 1].strip()]
            assert shown == sorted([f"{IMAGE} (stable)", "example/app:v9 (canary)"])  # sorted, as Argo's

            code, out, err = await meshshift("list", "rollouts", "--kubeconfig", kubeconfig)
            assert code == 0, err
            header, line = out.splitlines()
            assert columns(header, line)[:5] == [APP, "Canary", "Paused", f"{PAUSED_AT + 1}/8", "50"]

            code, _, err = await meshshift("set", "image", APP, "sidecar=x:1", "--kubeconfig", kubeconfig)
            assert code == 1 and "no container sidecar in shop/app (containers: app)" in err.replace(
                APP, "app"
            )
            code, out, _ = await meshshift(
                "set", "image", APP, "*=example/app:v9", "--kubeconfig", kubeconfig
            )
            assert code == 0 and "nothing changed" in out

            code, out, err = await meshshift("status", APP, "--no-watch", "--kubeconfig", kubeconfig)
            assert code == 0 and out.startswith("Paused - CanaryPauseStep"), err
            code, _, err = await meshshift("promote", APP, "--full", "--kubeconfig", kubeconfig)
            assert code == 0, err
            code, out, err = await meshshift("status", APP, "--timeout", "2m", "--kubeconfig", kubeconfig)
            assert code == 0, err
            assert out.splitlines()[-1] == "Healthy"
            code, out, _ = await meshshift("get", "rollout", APP, "--kubeconfig", kubeconfig)
            assert "Images:          example/app:v9 (stable)\n" in out  # one revision: one image
