"""The sequential judge in a real standalone rollout: Envoy, the demo apps, real traffic, no
Prometheus (Envoy's admin endpoint). A canary failing half its requests is rolled back on the
judge's `worse`; the API, `meshshift get` and the dashboard show the verdict, the counts and
rates of each side, and the evidence against alpha."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from meshshift.demo.load import LoadGenerator, running_load
from meshshift.processes import free_port
from meshshift.settings import DaemonSettings
from meshshift.standalone.daemon import parse_rollout_text, standalone_runtime
from tests.standalone.conftest import Apps
from tests.standalone.test_daemon_e2e import finished, rollout_text, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]

TOKEN = "judge-e2e-token"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
JUDGE: dict[str, Any] = {
    "analysis": {
        "templates": [{"templateName": "sequential-error-rate"}],
        "args": [{"name": "interval", "value": "0.5s"}, {"name": "max-duration", "value": "60s"}],
    }
}


async def meshshift(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "100"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_judge_rolls_back_a_bad_canary_and_shows_why(apps: Apps, tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, JUDGE, {"setWeight": 100}]
    loaded = parse_rollout_text(rollout_text("envoy", apps.stable, apps.bad, steps), "r")
    settings = DaemonSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN)
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings) as runtime:
        url = runtime.proxy_url + "/"
        async with running_load(LoadGenerator(url, rate=40)):
            snapshot = await wait_until(runtime, finished("Aborted"))
        assert snapshot.state is not None and snapshot.state.abort_reason == "AnalysisRunFailed"
        base = runtime.http_url
        assert base is not None

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/v1/rollouts/standalone/shop") as answer,
        ):
            view = await answer.json()
        [run] = [r for r in view["analysisRuns"] if r["templates"] == ["sequential-error-rate"]]
        [metric] = run["metrics"]
        judge = metric["judge"]
        assert judge["verdict"] == "worse" and judge["mode"] == "paired" and judge["alpha"] == 0.01
        assert judge["canary"]["bad"] > 0 and judge["canary"]["badName"] == "errors"
        assert judge["stable"]["bad"] == 0 and judge["stable"]["requests"] > 0
        assert judge["evidence"] == "inf" or judge["evidence"] >= judge["threshold"] == 100
        assert metric["phase"] == "Failed" and "worse: canary" in metric["message"]

        code, text = await meshshift("get", "rollout", "shop", "-n", "standalone", "--server", base)
        assert code == 0, text
        lines = text.splitlines()
        start = lines.index("Judge:")
        assert lines[start + 1].startswith(f"  sequential-error-rate ({run['name']}): ✖ worse after ")
        assert lines[start + 2].startswith("    canary  ") and " errors in " in lines[start + 2]
        assert lines[start + 3].startswith("    stable  0 errors in ")
        assert (
            lines[start + 4].startswith("    evidence ") and "of 100 needed (alpha 0.01)" in lines[start + 4]
        )

        assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1100})
                page.set_default_timeout(20_000)  # a hang guard
                await page.goto(f"{base}/#/rollouts/standalone/shop")
                block = page.locator("[data-testid='judge'][data-metric='sequential-error-rate']")
                await expect(block).to_have_attribute("data-verdict", "worse", timeout=20_000)
                await expect(block).to_contain_text("canary")
                await expect(block).to_contain_text("stable")
                await expect(block.get_by_test_id("evidence")).to_contain_text("of 100 needed (alpha 0.01)")
                last = page.locator("tr[data-metric='sequential-error-rate'] [data-testid='last-value']")
                await expect(last).to_contain_text("worse")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=ARTIFACTS / "dashboard-judge.png", full_page=True)
            finally:
                await browser.close()
