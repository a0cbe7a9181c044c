"""The dashboard in headless Chromium, during a live rollout."""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Error, Page, Route, async_playwright, expect

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


async def open_page(
    browser: Browser, base_url: str, requests: list[str], errors: list[str] | None = None
) -> Page:
    """A page recording every request's URL and (into `errors`) every console error and
    uncaught exception: a failed load, a CSP refusal or a script error shows up there."""
    page = await browser.new_page(viewport={"width": 1280, "height": 1100})
    page.on("request", lambda request: requests.append(request.url))
    if errors is not None:

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(f"console: {message.text} ({message.location.get('url')})")

        def on_page_error(error: Error) -> None:
            errors.append(f"uncaught: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
    page.set_default_timeout(20_000)  # a hang guard
    return page


def posts(requests: list[str], action: str) -> list[str]:
    return [url for url in requests if url.endswith(f"/{action}")]


async def test_the_dashboard_shows_and_promotes_a_rollout(
    browser: Browser, daemon: str, paused: Harness
) -> None:
    requests: list[str] = []
    errors: list[str] = []
    page = await open_page(browser, daemon, requests, errors)
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
    # Chromium reports the refused request (403) on the console: the only error there.
    assert len(errors) == 1 and "status of 403" in errors[0], errors
    errors.clear()

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
    assert errors == []

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


async def test_the_dashboard_loads_with_no_console_error(
    browser: Browser, daemon: str, paused: Harness
) -> None:
    """Both pages, with their favicon, load without a console error or an uncaught exception."""
    requests: list[str] = []
    errors: list[str] = []
    page = await open_page(browser, daemon, requests, errors)
    await page.goto(daemon + "/")
    await expect(page.get_by_test_id("rollout-row")).to_have_count(1)
    await expect(page.get_by_test_id("list-legend")).to_contain_text("stable")
    await page.get_by_role("link", name="myapp").click()
    await expect(page.get_by_test_id("current-step")).to_contain_text("pause")
    await expect(page.get_by_test_id("analysis-run")).to_have_count(1)
    icon = await page.evaluate("document.querySelector('link[rel=icon]').href")
    assert icon == daemon + "/static/favicon.svg"
    await page.goto(daemon + "/#/rollouts/default/myapp")  # straight to a rollout, as a bookmark does
    await expect(page.get_by_test_id("weight-canary")).to_have_text("canary 20%")
    assert errors == []
    # The icon is served, at the page's link and at /favicon.ico (which browsers try unasked).
    async with aiohttp.ClientSession() as session:
        for path in ("/static/favicon.svg", "/favicon.ico"):
            async with session.get(daemon + path) as response:
                assert response.status == 200, path
                assert response.content_type == "image/svg+xml", path
                assert (await response.text()).startswith("<svg"), path


async def test_the_traffic_bar_has_a_legend_in_the_bars_colours(
    browser: Browser, daemon: str, paused: Harness
) -> None:
    page = await open_page(browser, daemon, [])
    await page.goto(daemon + "/#/rollouts/default/myapp")
    legend = page.get_by_test_id("traffic-legend")
    await expect(legend.get_by_test_id("legend-stable")).to_have_text("stable v1: 80%")
    await expect(legend.get_by_test_id("legend-canary")).to_have_text("canary v2: 20%")
    for role in ("stable", "canary"):
        swatch = await page.evaluate(
            f"getComputedStyle(document.querySelector('.weights .swatch.{role}')).backgroundColor"
        )
        segment = await page.evaluate(
            f"getComputedStyle(document.querySelector('.weights rect.{role}')).fill"
        )
        assert swatch == segment, role
    stable, canary = [
        await page.evaluate(f"getComputedStyle(document.querySelector('.weights rect.{role}')).fill")
        for role in ("stable", "canary")
    ]
    assert stable != canary
    await page.goto(daemon + "/")
    await expect(page.get_by_test_id("list-legend").get_by_test_id("legend-canary")).to_have_text("canary")


async def test_abort_asks_first_and_sends_nothing_when_dismissed(
    browser: Browser, daemon: str, paused: Harness
) -> None:
    requests: list[str] = []
    errors: list[str] = []
    page = await open_page(browser, daemon, requests, errors)
    await page.goto(daemon + "/#/rollouts/default/myapp")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await expect(page.get_by_test_id("current-step")).to_contain_text("pause")
    asked: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        asked.append(f"{dialog.type}: {dialog.message}")
        await (dialog.accept() if accept else dialog.dismiss())

    # Dismissed: nothing is sent, the rollout stays paused at 20%.
    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await page.click("button[data-action='abort']")
    await expect(page.get_by_test_id("control-result")).to_have_text("Abort cancelled: nothing was sent.")
    assert asked == [
        "confirm: Abort default/myapp? All traffic goes back to the stable (v1) at once, "
        "and the rollout stops until it is retried."
    ]
    assert posts(requests, "abort") == []
    assert paused.state_is(step_index=2, phase="Paused")
    assert paused.router.weight == 20

    # Accepted: one abort is sent, and all traffic goes back to the stable.
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await page.click("button[data-action='abort']")
    await expect(page.get_by_test_id("weight-canary")).to_have_text("canary 0%")
    await expect(page.get_by_test_id("control-result")).to_contain_text("Abort:")
    await paused.wait_for(lambda: paused.router.weight == 0, what="all traffic on the stable")
    assert len(asked) == 2
    assert posts(requests, "abort") == [f"{daemon}/api/v1/rollouts/default/myapp/abort"]
    # The other buttons do not ask.
    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await page.click("button[data-action='retry']")
    await expect(page.get_by_test_id("control-result")).to_contain_text("Retry:")
    assert len(asked) == 2 and len(posts(requests, "retry")) == 1
    assert errors == []


TIMED_PAUSE = 3600.0


@pytest.fixture
async def timed_pause(registry: RolloutRegistry) -> AsyncIterator[Harness]:
    harness = make_controller(
        registry, RolloutSpec(steps=(SetWeight(20), Pause(TIMED_PAUSE), SetWeight(50), Pause()))
    )
    async with running(harness):
        await release_until_paused(harness, 1)
        yield harness


def seconds_in(text: str) -> int:
    """The seconds of a countdown's text: "resumes in 59m 58s", "resumes in 1h 00m 00s"."""
    match = re.fullmatch(r"resumes in (?:(\d+)h )?(?:(\d+)m )?(\d+)s", text)
    assert match is not None, text
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


async def test_a_timed_pause_shows_a_countdown(browser: Browser, daemon: str, timed_pause: Harness) -> None:
    errors: list[str] = []
    page = await open_page(browser, daemon, [], errors)
    before = time.time()
    await page.goto(daemon + "/#/rollouts/default/myapp")
    countdown = page.get_by_test_id("pause-countdown")
    first = await countdown.text_content()
    after = time.time()
    assert first is not None
    state = timed_pause.controller.state
    assert state is not None and state.pause_until is not None
    # The time left to the daemon's deadline when it was drawn (rounded up to the second).
    assert state.pause_until - after <= seconds_in(first) <= state.pause_until - before + 1, first
    # It counts down by itself: no new event comes from the daemon during the pause.
    await expect(countdown).not_to_have_text(first)
    second = await countdown.text_content()
    assert second is not None and seconds_in(second) < seconds_in(first)
    # Promoted, the pause ends and its countdown goes with it.
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await page.click("button[data-action='promote']")
    await expect(page.get_by_test_id("weight-canary")).to_have_text("canary 50%")
    await expect(countdown).to_have_count(0)
    assert errors == []


async def test_the_countdown_is_on_the_daemons_clock(
    browser: Browser, daemon: str, timed_pause: Harness
) -> None:
    """A browser whose clock is 10 minutes behind the daemon's still shows the time left
    on the daemon's clock (told by the Date header of /api/v1/info; here rewritten to
    stand for a daemon 10 minutes ahead)."""
    ahead = 600.0
    page = await open_page(browser, daemon, [])

    async def daemon_ahead(route: Route) -> None:
        response = await route.fetch()
        shifted = email.utils.formatdate(time.time() + ahead, usegmt=True)
        await route.fulfill(response=response, headers={**response.headers, "date": shifted})

    await page.route(f"{daemon}/api/v1/info", daemon_ahead)
    before = time.time()
    await page.goto(daemon + "/#/rollouts/default/myapp")
    countdown = page.get_by_test_id("pause-countdown")
    shown = await countdown.text_content()
    after = time.time()
    state = timed_pause.controller.state
    assert state is not None and state.pause_until is not None and shown is not None
    # The header has whole seconds: within a second and a half of the daemon's time left.
    left = state.pause_until - ahead
    assert left - after - 1.5 <= seconds_in(shown) <= left - before + 2.5, shown
