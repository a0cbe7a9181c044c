"""What a blue-green rollout looks like from outside: /metrics, the API view, `meshshift get`,
notifications and the dashboard (headless Chromium), on a real controller over in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from meshshift.cli.rollouts import render_text
from meshshift.engine.machine import CommandKind
from meshshift.engine.state import Stage
from meshshift.observe.api import rollout_view
from meshshift.observe.metrics import RolloutMetrics
from meshshift.observe.notifications import WebhookReceiver
from meshshift.observe.server import serve
from meshshift.processes import free_port
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings
from meshshift.spec.model import AnalysisRef, Arg, BlueGreen, RolloutSpec, TemplateRef
from tests.observe.conftest import ARTIFACTS, TOKEN
from tests.observe.test_dashboard import browser, open_page  # noqa: F401 - the browser fixture
from tests.observe.test_metrics import by_name, parse
from tests.observe.test_notifications import eventually, notifier_on
from tests.support.inmemory import Harness, make_controller, running, success_rate_template
from tests.support.receivers import receiver

ANALYSIS = AnalysisRef(templates=(TemplateRef("success-rate"),), args=(Arg("service-name", "myapp"),))
SPEC = RolloutSpec(
    steps=(),
    blue_green=BlueGreen(
        preview_service="myapp-preview",
        auto_promotion_enabled=False,
        pre_promotion_analysis=ANALYSIS,
        post_promotion_analysis=ANALYSIS,
        scale_down_delay=0.3,
    ),
)


def harness_for(registry: RolloutRegistry, answer: float = 0.99, spec: RolloutSpec = SPEC) -> Harness:
    return make_controller(
        registry, spec, templates=[success_rate_template(interval="30ms", count=2)], answer=lambda _: [answer]
    )


async def previewing(harness: Harness) -> None:
    """v2 is up on the preview, analysed, and paused for promotion."""
    await harness.wait_for(lambda: harness.state_is(stable_revision="v1"), what="first sight")
    harness.workloads.release("v2")
    await harness.wait_for(lambda: harness.state_is(phase="Paused", stage="Preview"), what="the pause")


@pytest.fixture
async def served(registry: RolloutRegistry) -> AsyncIterator[str]:
    settings = DaemonSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN)
    metrics = RolloutMetrics(registry)
    try:
        async with serve(registry, settings, rollout_metrics=metrics) as url:
            yield url
    finally:
        metrics.close()


async def test_metrics_label_the_strategy_blue_green(registry: RolloutRegistry, served: str) -> None:
    harness = harness_for(registry)
    async with running(harness), aiohttp.ClientSession() as http:
        await previewing(harness)
        async with http.get(served + "/metrics") as response:
            samples = by_name(parse(await response.text()))
    (info,) = samples["rollout_info"]
    assert info[0]["strategy"] == "blueGreen" and info[0]["phase"] == "Paused"
    assert {labels["strategy"] for labels, _ in samples["argo_rollouts_info"]} == {"blueGreen"}
    assert {labels["strategy"] for labels, _ in samples["rollout_phase"]} == {"blueGreen"}


async def test_the_view_and_get_show_active_and_preview_as_argo_s_plugin_does(
    registry: RolloutRegistry,
) -> None:
    harness = harness_for(registry)
    # The switched phase lasts a scale-down delay: catch it as it is published, not by a poll.
    published: list[RolloutSnapshot] = []
    registry.listeners.append(lambda _key, snapshot: published.append(snapshot) if snapshot else None)

    def first_switched() -> RolloutSnapshot | None:
        return next((s for s in published if s.state and s.state.stage == Stage.POST_PROMOTION), None)

    async with running(harness):
        await previewing(harness)
        paused = rollout_view(harness.controller.snapshot())
        await registry.command(harness.key, CommandKind.PROMOTE)
        await harness.wait_for(lambda: first_switched() is not None, what="the switch")
        switched_snapshot = first_switched()
        assert switched_snapshot is not None
        switched = rollout_view(switched_snapshot)
        await harness.wait_for(
            lambda: harness.state_is(phase="Healthy", stable_revision="v2"), what="promotion"
        )
        done = rollout_view(harness.controller.snapshot())

    blue_green = paused["blueGreen"]
    assert paused["strategy"] == "blueGreen"
    assert (blue_green["activeRevision"], blue_green["previewRevision"]) == ("v1", "v2")
    assert blue_green["roles"] == {"v1": ["stable", "active"], "v2": ["preview"]}
    assert [(p["name"], p["status"]) for p in blue_green["phases"]] == [
        ("preview", "completed"),
        ("prePromotionAnalysis", "completed"),
        ("pause", "current"),
        ("switch", "pending"),
        ("postPromotionAnalysis", "pending"),
        ("promotion", "pending"),
    ]
    text = render_text(paused, width=100, now=2e9)
    assert "Strategy:        BlueGreen" in text
    assert "  Active:        v1 (stable, active)" in text and "  Preview:       v2 (preview)" in text
    assert "example/app:v1 (stable, active)" in text and "example/app:v2 (preview)" in text
    assert "SetWeight" not in text and "Step:" not in text
    revision_rows = [line for line in text.splitlines() if "Revision" in line]
    rows = {line.split("⧉ ", 1)[1].split()[0]: line.split()[-1] for line in revision_rows}
    assert rows == {"v2": "preview", "v1": "stable,active"}
    assert "BlueGreenPause" in text

    assert switched["blueGreen"]["activeRevision"] == "v2"
    assert switched["blueGreen"]["roles"] == {"v1": ["stable"], "v2": ["active"]}
    assert switched["blueGreen"]["switchedAt"] is not None
    assert switched["blueGreen"]["phases"][3] == {
        "name": "switch",
        "description": "switch user traffic to the new revision",
        "status": "completed",
        "run": None,
    }
    assert "  Active:        v2 (active)" in render_text(switched, width=100, now=2e9)

    assert done["blueGreen"]["activeRevision"] == "v2" == done["blueGreen"]["previewRevision"]
    assert {p["status"] for p in done["blueGreen"]["phases"]} == {"completed"}


async def test_notifications_for_the_preview_the_switch_and_the_switch_back(
    registry: RolloutRegistry,
) -> None:
    harness = harness_for(registry)
    async with receiver() as hook, notifier_on(registry, WebhookReceiver(hook.url)):
        async with running(harness):
            await previewing(harness)
            harness.provider.answer = lambda _: [0.5]  # the post-promotion analysis fails
            await registry.command(harness.key, CommandKind.PROMOTE)
            await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        await eventually(lambda: "aborted" in hook.events(), "the aborted notification")
    assert hook.events() == [
        "rollout-started",
        "preview-ready",
        "paused",
        "switched",
        "analysis-failed",
        "switched-back",
        "aborted",
    ]
    by_event = {payload["event"]: payload for payload in hook.received}
    assert by_event["preview-ready"]["title"].startswith(
        "Rollout default/myapp: revision v2 is up on the preview"
    )
    assert by_event["switched"]["details"] == {"revision": "v2", "fromRevision": "v1"}
    assert by_event["switched-back"]["details"] == {"revision": "v1", "fromRevision": "v2"}
    assert by_event["switched-back"]["severity"] == "warning"
    assert by_event["paused"]["details"]["pauseReason"] == "BlueGreenPause"
    assert harness.router.weights_written[-2:] == [100, 0]


async def test_the_dashboard_shows_the_preview_the_analysis_phases_and_the_switch(
    browser: Browser,  # noqa: F811 - the fixture
    registry: RolloutRegistry,
    daemon: str,
) -> None:
    harness = harness_for(registry)
    async with running(harness):
        await previewing(harness)
        page = await open_page(browser, daemon, [])
        await page.goto(f"{daemon}/#/rollouts/default/myapp")
        section = page.get_by_test_id("blue-green")
        await expect(section).to_be_visible()
        await expect(page.get_by_test_id("bg-active")).to_have_text("v1 (stable, active)")
        await expect(page.get_by_test_id("bg-preview")).to_have_text("v2 (preview)")
        await expect(page.get_by_test_id("current-phase")).to_contain_text("pause until promoted")
        await expect(section.locator("li[data-phase='prePromotionAnalysis']")).to_have_attribute(
            "data-status", "completed"
        )
        await expect(page.get_by_test_id("analysis-run")).to_contain_text("pre-promotion")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "dashboard-blue-green-preview.png", full_page=True)

        await page.fill("#token-input", TOKEN)
        await page.click("#token-save")
        await page.click("button[data-action='promote']")
        await expect(page.get_by_test_id("control-result")).to_contain_text("switching user traffic")
        await expect(section.locator("li[data-phase='switch']")).to_have_attribute("data-status", "completed")
        await expect(page.get_by_test_id("bg-active-role")).to_have_text("users → v2")
        await expect(section.locator("li[data-phase='postPromotionAnalysis']")).to_have_attribute(
            "data-status", "completed"
        )
        await expect(section.locator("li[data-phase='promotion']")).to_have_attribute(
            "data-status", "completed"
        )
        await expect(page.get_by_test_id("analysis-run")).to_have_count(2)
        await expect(page.get_by_test_id("analysis-run").nth(1)).to_contain_text("post-promotion")
        await page.screenshot(path=ARTIFACTS / "dashboard-blue-green-promoted.png", full_page=True)
