"""Argo's pod metadata: canaryMetadata/stableMetadata and blue-green's previewMetadata/activeMetadata
on the new revision's and the stable's pods (their pod templates), through the emulator; what
meshshift adds to the user's pod template is no new revision."""

from __future__ import annotations

import copy
from typing import Any

from meshshift.kube.workloads import (
    POD_METADATA_ANNOTATION,
    template_revision,
    user_template,
    with_pod_metadata,
)
from meshshift.spec.model import PodMetadata
from tests.kube.harness import KubeEnv, Observer, running_daemon, world
from tests.kube.scenarios import (
    APP,
    STATE,
    deployment,
    new_version,
    promote,
    template_env,
    virtual_service,
    wait_initialized,
    wait_state,
)

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web", "role": "mine"}},
    "spec": {"containers": [{"name": "app", "image": "web:1"}]},
}
CANARY = PodMetadata(labels={"role": "canary", "tier": "new"}, annotations={"team": "qa"})


def test_added_metadata_is_recorded_and_taken_out_again_exactly() -> None:
    labelled = with_pod_metadata(TEMPLATE, CANARY)
    meta = labelled["metadata"]
    assert meta["labels"] == {"app": "web", "role": "canary", "tier": "new"}
    assert meta["annotations"]["team"] == "qa" and POD_METADATA_ANNOTATION in meta["annotations"]
    # The user's own template comes back, byte for byte: the same revision.
    assert user_template(labelled) == TEMPLATE
    assert template_revision(user_template(labelled)) == template_revision(TEMPLATE)
    assert with_pod_metadata(labelled, CANARY) == labelled  # idempotent
    assert with_pod_metadata(labelled, PodMetadata()) == TEMPLATE


def test_a_value_changed_since_by_someone_else_is_theirs() -> None:
    labelled = with_pod_metadata(TEMPLATE, CANARY)
    edited = copy.deepcopy(labelled)
    edited["metadata"]["labels"]["tier"] = "theirs"
    restored = user_template(edited)
    assert restored["metadata"]["labels"] == {"app": "web", "role": "mine", "tier": "theirs"}
    assert "annotations" not in restored["metadata"]


CANARY_STEPS = "- setWeight: 50\n- pause: {}\n"


def labels_of(observer: Observer, name: str) -> dict[str, str]:
    found = observer.get("Deployment", name)
    assert found is not None
    return dict(found["spec"]["template"]["metadata"].get("labels") or {})


def annotations_of(observer: Observer, name: str) -> dict[str, str]:
    found = observer.get("Deployment", name)
    assert found is not None
    return dict(found["spec"]["template"]["metadata"].get("annotations") or {})


async def test_canary_and_stable_metadata_land_on_their_pods(kube_env: KubeEnv) -> None:
    annotations = {
        STATE: "true",
        "meshshift.io/router": "istio",
        "meshshift.io/steps": CANARY_STEPS,
        "meshshift.io/canary-metadata": "{labels: {role: canary}, annotations: {team: qa}}",
        "meshshift.io/stable-metadata": "{labels: {role: stable}}",
    }
    async with world(kube_env) as w:
        await w.cluster.create_virtual_service(virtual_service())
        await w.cluster.create_deployment(deployment(annotations=annotations))
        async with running_daemon(kube_env):
            initialized = await wait_initialized(w)
            primary = f"{APP}-primary"
            assert labels_of(w.observer, primary)["role"] == "stable"
            assert "role" not in labels_of(w.observer, APP)  # no new revision: the user's template as is
            await w.cluster.patch_deployment(APP, new_version("v2"))
            paused = await wait_state(w, "the pause", phase="Paused", stepIndex=1)
            await w.observer.wait_for(
                lambda o: labels_of(o, APP).get("role") == "canary", what="canary labels"
            )
            assert annotations_of(w.observer, APP)["team"] == "qa"
            assert labels_of(w.observer, primary)["role"] == "stable"
            await promote(w, "1")
            done = await wait_state(w, "the promotion", phase="Healthy", stage="Idle", canaryRevision=None)
            await w.observer.wait_for(
                lambda o: (
                    "role" not in labels_of(o, APP) and POD_METADATA_ANNOTATION not in annotations_of(o, APP)
                ),
                what="the user's template back",
            )
        promoted = w.observer.get("Deployment", primary)
        assert promoted is not None and template_env(promoted) == "v2"
        assert labels_of(w.observer, primary)["role"] == "stable"
        assert "team" not in annotations_of(w.observer, primary)  # the canary's annotation stayed with it
        # Labelling the canary was no new revision: one rollout, the revision the user made.
        assert done["stableRevision"] == paused["canaryRevision"] != initialized["stableRevision"]
        assert [r["outcome"] for r in done["history"]] == ["Promoted"]


async def test_preview_and_active_metadata_land_on_their_pods(kube_env: KubeEnv) -> None:
    blue_green = (
        "autoPromotionEnabled: false\n"
        "scaleDownDelaySeconds: 0\n"
        "previewMetadata: {labels: {role: preview}}\n"
        "activeMetadata: {labels: {role: active}}\n"
    )
    annotations = {STATE: "true", "meshshift.io/router": "istio", "meshshift.io/blue-green": blue_green}
    async with world(kube_env) as w:
        await w.cluster.create_virtual_service(virtual_service())
        await w.cluster.create_deployment(deployment(annotations=annotations))
        async with running_daemon(kube_env):
            await wait_initialized(w)
            primary = f"{APP}-primary"
            assert labels_of(w.observer, primary)["role"] == "active"
            await w.cluster.patch_deployment(APP, new_version("v2"))
            previewing = await wait_state(w, "the preview", stage="Preview", pauseReason="BlueGreenPause")
            await w.observer.wait_for(
                lambda o: labels_of(o, APP).get("role") == "preview", what="preview labels"
            )
            await promote(w, "1")
            done = await wait_state(
                w, "the promotion", phase="Healthy", stableRevision=previewing["canaryRevision"]
            )
            await w.observer.wait_for(
                lambda o: "role" not in labels_of(o, APP), what="the user's template back"
            )
        assert labels_of(w.observer, primary)["role"] == "active"
        assert [r["outcome"] for r in done["history"]] == ["Promoted"]
