"""The dashboard in headless Chromium, during a live rollout."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from meshshift.runtime.registry import RolloutRegistry
from meshshift.spec.model import Pause, RolloutSpec, SetWeight
from tests.observe.conftest import ARTIFACTS, TOKEN
from tests.support.inmemory import (
    STEP_ANALYSIS,
    Harness,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)

CHROMIUM = "/usr/bin/chromium"
expect.set_options(timeout=20_000)  # a hang guard on a loaded machine, not a timing assertion
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SPEC = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, Pause(), SetWeight(50), Pause()))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium (make test does)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def paused(registry: RolloutRegistry) -> AsyncIterator[Harness]:
    values = iter([0.991, 0.987, 0.996])
    harness = make_controller(
        registry,
        SPEC,
        templates=[success_rate_template(interval="50ms", count=3)],
        answer=lambda metric: [next(values)],
    )
    async with running(harness):
        await release_until_paused(harness, 2)
        yield harness


async def open_page(browser: Browser, base_url: str, requests: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 1100})
    page.on("request", lambda request: requests.append(request.url))
    page.set_default_timeout(20_000)  # a hang guard
    return page


async def test_the_dashboard_shows_and_promotes_a_rollout(
    browser: Browser, daemon: str, paused: Harness
) -> None:
    requests: list[str] = []
    page = await open_page(browser, daemon, requests)
    await page.goto(daemon + "/")

    row = page.get_by_test_id("rollout-row")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("myapp")
    await expect(row).to_contain_text("Paused")
    await expect(row).to_contain_text("3/5")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-list.png")
    await row.get_by_role("link", name="myapp").click()

    # The steps with the current one marked, the weights, the analysis with its plot.
    await expect(page.get_by_test_id("step")).to_have_text("3/5")
    current = page.get_by_test_id("current-step")
    await expect(current).to_have_count(1)
    await expect(current).to_contain_text("pause: {} (until promoted)")
    await expect(page.locator("li.step-completed")).to_have_count(2)
    await expect(page.get_by_test_id("weight-canary")).to_have_text("canary 20%")
    await expect(page.get_by_test_id("weight-stable")).to_have_text("stable 80%")
    await expect(page.get_by_test_id("applied-envoy")).to_have_text("envoy: 20% applied")
    metric = page.locator("tr[data-metric='success-rate']")
    await expect(metric.get_by_test_id("last-value")).to_have_text("0.996")
    await expect(metric.locator("svg.plot circle")).to_have_count(3)
    await expect(page.get_by_test_id("phase").first).to_have_text("Paused")
    await page.screenshot(path=ARTIFACTS / "dashboard-paused.png", full_page=True)

    # A wrong token is refused and changes nothing.
    await page.fill("#token-input", "not-the-token")
    await page.click("#token-save")
    await page.click("button[data-action='promote']")
    await expect(page.get_by_test_id("control-result")).to_contain_text("refused: wrong token")
    assert paused.state_is(step_index=2, phase="Paused")

    # The right one promotes: the rollout moves to its next pause, at 50%.
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await page.click("button[data-action='promote']")
    await expect(page.get_by_test_id("step")).to_have_text("5/5")
    await expect(page.get_by_test_id("weight-canary")).to_have_text("canary 50%")
    await expect(page.get_by_test_id("current-step")).to_contain_text("pause")
    await expect(page.get_by_test_id("control-result")).to_contain_text("resumed after the pause at step 3/5")
    assert paused.state_is(step_index=4, phase="Paused")
    assert paused.router.weight == 50
    await page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # Everything came from the daemon itself: no CDN, nothing else.
    assert requests and all(url.startswith(daemon + "/") for url in requests), requests


async def test_the_dashboard_loads_offline(browser: Browser, daemon: str, paused: Harness) -> None:
    """With every other host unreachable the page still renders in full."""
    page = await browser.new_page()
    page.set_default_timeout(20_000)
    blocked: list[str] = []

    async def only_the_daemon(route: object) -> None:
        request = route.request  # type: ignore[attr-defined]
        if request.url.startswith(daemon + "/"):
            await route.continue_()  # type: ignore[attr-defined]
        else:
            blocked.append(request.url)
            await route.abort()  # type: ignore[attr-defined]

    await page.route("**/*", only_the_daemon)
    await page.goto(f"{daemon}/#/rollouts/default/myapp")
    await expect(page.get_by_test_id("current-step")).to_contain_text("pause")
    assert blocked == []
    styles = await page.evaluate("getComputedStyle(document.querySelector('.top')).backgroundColor")
    assert styles == "rgb(17, 24, 39)"  # the stylesheet loaded


def test_artifacts_folder_is_gitignored() -> None:
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()
    assert "test-artifacts/" in ignored
