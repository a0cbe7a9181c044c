"""Backtests of the tutorial's success-rate template over a real Prometheus' history (history.py).

The expectations are computed by hand from the synthetic data. Prometheus (2.x, as Debian ships
it) takes a `[5m]` window at t as the samples from t-5m to t, both included: with one sample a
minute on the minute, a measurement at minute t sees the minutes ending t-4 .. t, 3000 requests,
without extrapolation. The template fails a measurement when the success rate is below 0.95, so
when those five minutes hold more than 150 errors, and fails the run at the 4th failed
measurement (failureLimit 3). Its metrics measure every minute from the start.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from meshshift.demo.prometheus import PrometheusServer
from tests.analysis.helpers import SEED
from tests.backtest.history import at, iso
from tests.support.command import CommandResult, meshshift

pytestmark = pytest.mark.asyncio(loop_scope="package")

SUCCESS_RATE = SEED / "02-template-success-rate.yaml"


async def backtest(prometheus: PrometheusServer, *args: str | Path) -> CommandResult:
    return await meshshift(
        "analyze",
        SUCCESS_RATE,
        "--arg",
        "service-name=myapp",
        "--prometheus-address",
        prometheus.url,
        *args,
    )


async def test_the_backtest_finds_the_incident_at_the_right_time(history: PrometheusServer) -> None:
    # Minute 12:01 holds 120 errors and the four before it 3 each: 132 of 3000, a success rate of
    # 0.956, a pass. At 12:02 there are 249 errors (0.917): the first failure; 12:03, 12:04 and
    # 12:05 fail too, and the 4th failure ends the run: Failed at 12:05:00.
    result = await backtest(
        history, "--from", "2026-11-07T11:00:00Z", "--to", "2026-11-07T14:00:00Z", "-o", "json"
    )
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "backtest" and report["phase"] == "Failed"
    assert report["verdictAt"] == "2026-11-07T12:05:00Z"
    success = [m for m in report["measurements"] if m["metric"] == "success-rate"]
    start = at("2026-11-07T11:00:00Z")
    assert [m["time"] for m in success] == [iso(start + 60 * i) for i in range(66)]  # 11:00 .. 12:05
    failed = [m["time"][11:16] for m in success if m["phase"] == "Failed"]
    assert failed == ["12:02", "12:03", "12:04", "12:05"]
    values = {m["time"][11:16]: m["value"][0] for m in success}
    assert values["11:30"] == pytest.approx(1 - 15 / 3000)
    assert values["12:01"] == pytest.approx(1 - 132 / 3000)
    assert values["12:02"] == pytest.approx(1 - 249 / 3000)
    assert values["12:05"] == pytest.approx(1 - 600 / 3000)
    latency = [m for m in report["measurements"] if m["metric"] == "latency"]
    assert {m["phase"] for m in latency} == {"Successful"}
    assert latency[0]["value"] == [pytest.approx(97.5)]  # 95 % of the way through the 50-100 ms bucket
    assert "success-rate: failed (4) > failureLimit (3)" in report["message"]
    assert all('service="myapp"' in m["query"] for m in success)


async def test_the_text_timeline_shows_the_verdict(history: PrometheusServer) -> None:
    result = await backtest(history, "--from", "2026-11-07T11:00:00Z", "--to", "2026-11-07T14:00:00Z")
    assert result.code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Backtest of success-rate, replayed as if started at 2026-11-07T11:00:00Z, until 2026-11-07T14:00:00Z"
    )
    assert (
        "2026-11-07T11:00:00Z .. 2026-11-07T12:01:00Z  success-rate  ✔ 62 Successful in a row"
        in result.stdout
    )
    assert any(
        line.startswith("2026-11-07T12:02:00Z  success-rate  ✖ Failed  value [0.917]") for line in lines
    )
    assert (
        "Verdict: Failed at 2026-11-07T12:05:00Z (1h5m after the start): "
        "success-rate: failed (4) > failureLimit (3)" in result.stdout
    )


async def test_a_healthy_replay_is_stopped_at_the_end_of_its_window(history: PrometheusServer) -> None:
    result = await backtest(
        history, "--from", "2026-11-02T08:00:00Z", "--to", "2026-11-02T08:30:00Z", "-o", "json"
    )
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["phase"] == "Successful" and report["verdictAt"] is None
    assert len([m for m in report["measurements"] if m["metric"] == "success-rate"]) == 31  # 08:00 .. 08:30
    values = [m["value"][0] for m in report["measurements"] if m["metric"] == "success-rate"]
    assert values == [pytest.approx(0.995)] * 31


async def test_a_week_of_replays_counts_the_false_rollbacks(
    history: PrometheusServer, tmp_path: Path
) -> None:
    # 28 replays of 30 minutes, at 00:00, 06:00, 12:00 and 18:00 of each day, by hand:
    # - 11-03 06:00 (blip A, 90 errors a minute from 06:11 to 06:20): 06:11 passes (102 of 3000),
    #   06:12 .. 06:15 fail (189 and more): Failed at 06:15:00, a false rollback;
    # - 11-04 18:00 (blip B, 60 errors a minute from 18:11 to 18:13): 18:13, 18:14 and 18:15 fail
    #   (186), 18:12 and 18:16 pass (129): 3 failures, within failureLimit 3: it passes;
    # - 11-05 12:00 (gap C, no sample from 12:01 to 12:10): at 12:05 the window holds one sample
    #   (12:00), so rate() has nothing: an Error, retried every 10 s; the 5th in a row (12:05:40)
    #   exceeds consecutiveErrorLimit 4: Error, a false rollback too;
    # - 11-07 12:00 (the incident): Failed at 12:05:00, 5 minutes after it began: detected;
    # - the 24 others: Successful.
    plot = tmp_path / "week.png"
    result = await backtest(
        history,
        "--from",
        "2026-11-02T00:00:00Z",
        "--to",
        "2026-11-09T00:00:00Z",
        "--every",
        "6h",
        "--duration",
        "30m",
        "--incident",
        "2026-11-07T12:00:00Z..2026-11-07T13:00:00Z",
        "--plot",
        plot,
        "-o",
        "json",
    )
    assert result.code == 1, result.output  # two false rollbacks: the template is not as expected
    report = json.loads(result.stdout)
    assert len(report["replays"]) == 28
    assert report["counts"] == {"Successful": 25, "Failed": 2, "Error": 1, "Inconclusive": 0}
    assert report["healthy"] == 27
    false_rollbacks = [(r["start"], r["phase"], r["verdictAt"]) for r in report["falseRollbacks"]]
    assert false_rollbacks == [
        ("2026-11-03T06:00:00Z", "Failed", "2026-11-03T06:15:00Z"),
        ("2026-11-05T12:00:00Z", "Error", "2026-11-05T12:05:40Z"),
    ]
    assert report["falseRollbackRate"] == pytest.approx(2 / 27)
    (incident,) = report["incidents"]
    assert (incident["replays"], incident["detected"], incident["missed"]) == (1, 1, 0)
    assert incident["detectionDelaysSeconds"] == [300.0]
    blip_b = next(r for r in report["replays"] if r["start"] == "2026-11-04T18:00:00Z")
    assert blip_b["phase"] == "Successful"
    assert [m["time"][11:16] for m in blip_b["measurements"] if m["phase"] == "Failed"] == [
        "18:13",
        "18:14",
        "18:15",
    ]
    assert not report["asExpected"]
    assert plot.stat().st_size > 0


async def test_exit_status_with_incidents_says_whether_the_template_did_its_job(
    history: PrometheusServer,
) -> None:
    # Over a day without a blip, a replay every 6h that overlaps the incident: caught, no false
    # rollback: exit 0. The same with blip A's day: a false rollback: exit 1.
    clean = await backtest(
        history,
        "--from",
        "2026-11-07T00:00:00Z",
        "--to",
        "2026-11-08T00:00:00Z",
        "--every",
        "6h",
        "--duration",
        "30m",
        "--incident",
        "2026-11-07T12:00:00Z..2026-11-07T13:00:00Z",
    )
    assert clean.code == 0, clean.output
    assert "On healthy periods: 0 of 3 replays would have rolled back a healthy release" in clean.stdout
    assert (
        "Incident 2026-11-07T12:00:00Z .. 2026-11-07T13:00:00Z: 1 replays overlap it, 1 detected it"
        in clean.stdout
    )
    assert "detection delay: min 5m, median 5m, max 5m" in clean.stdout
    noisy = await backtest(
        history,
        "--from",
        "2026-11-03T00:00:00Z",
        "--to",
        "2026-11-04T00:00:00Z",
        "--every",
        "6h",
        "--duration",
        "30m",
    )
    assert noisy.code == 1, noisy.output  # without --incident: a Failed replay
    assert "On the whole range, taken as healthy: 1 of 4 replays would have rolled back" in noisy.stdout
    assert "replay from 2026-11-03T06:00:00Z: Failed at 2026-11-03T06:15:00Z" in noisy.stdout


@pytest.mark.parametrize("suffix", [".png", ".svg"])
async def test_the_plot_is_an_image(history: PrometheusServer, tmp_path: Path, suffix: str) -> None:
    plot = tmp_path / f"incident{suffix}"
    result = await backtest(
        history, "--from", "2026-11-07T11:30:00Z", "--to", "2026-11-07T12:30:00Z", "--plot", plot
    )
    assert result.code == 1, result.output
    assert f"plot written to {plot}" in result.stderr
    size = plot.stat().st_size
    assert 5_000 < size < 400_000, size
    if suffix == ".png":
        import matplotlib.image

        pixels = matplotlib.image.imread(plot)
        height, width = pixels.shape[:2]
        assert (width, height) == (1000, 560)  # 10 x 5.6 inches at 100 dpi: two panels
        assert pixels.std() > 0.01  # not a blank picture
    else:
        root = ElementTree.parse(plot).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        texts = "".join(root.itertext())
        assert "success-rate" in texts and "latency" in texts
        assert "result >= 0.95" in texts and "result <= 500" in texts


async def test_a_provider_without_history_is_refused(tmp_path: Path) -> None:
    # The tutorial's web metric (08-metrics-web.yaml) as a template of its own.
    template = tmp_path / "health.yaml"
    template.write_text(
        """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: health}
spec:
  args: [{name: service-name}]
  metrics:
  - name: custom-health-check
    provider:
      web:
        url: https://my-health-api.com/check?service={{args.service-name}}
        jsonPath: "{$.health.status}"
    successCondition: result == "healthy"
"""
    )
    result = await meshshift(
        "analyze",
        template,
        "--from",
        "2026-11-07T11:00:00Z",
        "--to",
        "2026-11-07T12:00:00Z",
        "--arg",
        "service-name=myapp",
    )
    assert result.code == 2, result.output
    assert "this template cannot be replayed over history" in result.stderr
    assert "the web provider asks an endpoint about now" in result.stderr
