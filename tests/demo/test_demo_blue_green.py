"""`meshshift demo --strategy blue-green` as a user runs it: a subprocess, real Envoy or NGINX,
the users' load on the active listener and a QA tester's on the preview, counted."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from tests.demo.test_demo_cli import DemoRun

pytestmark = pytest.mark.e2e


async def test_a_healthy_revision_is_previewed_then_switched_to_and_promoted(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--strategy", "blue-green", "--scenario", "healthy", "--router", "envoy")
    await demo.start()
    await demo.wait_for_output(r"PostPromotion")
    async with aiohttp.ClientSession() as session, session.get(f"http://{demo.listen}/metrics") as response:
        metrics = await response.text()
    assert re.search(r'rollout_info\{namespace="standalone",name="demo",strategy="blueGreen"', metrics)
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Promoted, as expected" in output
    assert re.search(r"preview: http://127\.0\.0\.1:\d+/ \(QA\)", output)
    assert re.search(r"switch:             users on it \d+\.\d s after the first QA request", output)
    # The preview only ever reached the new revision; users reached both, the new one after the switch.
    assert re.search(r"preview listener:   canary \d+ \(QA\)\n", output)
    assert re.search(r"active listener:    canary \d+, stable \d+ \(users\)", output)
    assert "failed user requests: 0 (none)" in output
    assert re.search(r"after the decision: canary \d+\n", output)


@pytest.mark.parametrize("router", ["envoy", "nginx"])
async def test_bad_errors_never_reach_a_user(router: str, tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--strategy", "blue-green", "--scenario", "bad-errors", "--router", router)
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Aborted, as expected" in output
    # The pre-promotion analysis stopped it on the testers' traffic: users only met the stable.
    assert re.search(r"active listener:    stable \d+ \(users\)\n", output)
    assert "failed user requests: 0 (none)" in output
    assert re.search(r"failed QA requests: [1-9]\d* \(canary \d+\)", output)
    assert "switch:" not in output
    assert re.search(r"after the decision: stable \d+\n", output)


async def test_a_revision_that_breaks_under_load_is_switched_back(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path, "--strategy", "blue-green", "--scenario", "bad-under-load", "--router", "envoy")
    await demo.start()
    assert await demo.wait() == 0, demo.output
    output = demo.output
    assert "outcome:            Aborted, as expected" in output
    # It passed on the preview; the users' load broke it, and the post-promotion analysis switched back.
    found = re.search(r"switch back:        (\d+) ms from the failed post-promotion measurement", output)
    assert found, output
    print(f"\nswitch back on Envoy: {found.group(1)} ms")
    assert re.search(r"after the decision: stable \d+\n", output)
