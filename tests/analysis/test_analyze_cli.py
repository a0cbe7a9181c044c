"""`meshshift analyze` run as a command against a real Prometheus scraping the test exporter: the
tutorial's success-rate template, unchanged (its in-cluster address replaced by --prometheus-address),
with the exit codes a script relies on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from meshshift.demo.exporter import ServiceTraffic, TrafficExporter, VersionTraffic
from meshshift.demo.prometheus import ScrapeTarget, prometheus_server
from tests.analysis.helpers import SEED
from tests.analysis.stack import Stack
from tests.support.command import CommandResult, meshshift

pytestmark = pytest.mark.asyncio(loop_scope="package")

SUCCESS_RATE = SEED / "02-template-success-rate.yaml"


async def analyze(*args: str | Path, env: dict[str, str] | None = None) -> CommandResult:
    return await meshshift("analyze", *args, env=env)


async def test_once_on_a_healthy_service_is_successful(stack: Stack) -> None:
    result = await analyze(
        SUCCESS_RATE, "--once", "--arg", "service-name=healthy", "--prometheus-address", stack.prometheus.url
    )
    assert result.code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    success = next(line for line in lines if "  success-rate  " in line)
    assert "✔ Successful  value [0.98]" in success
    assert any(
        'query: sum(rate( http_requests_total{ service="healthy", status!~"5.." }[5m] ))' in line
        for line in lines
    )
    latency = next(line for line in lines if "  latency  " in line)
    assert "✔ Successful  value [48.75]" in latency
    assert "Run: Successful (stopped)" in result.stdout


async def test_once_on_a_degraded_service_fails_with_the_reason(stack: Stack) -> None:
    result = await analyze(
        SUCCESS_RATE,
        "--once",
        "--arg",
        "service-name=degraded",
        "--prometheus-address",
        stack.prometheus.url,
        "-o",
        "json",
    )
    assert result.code == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "once" and report["phase"] == "Failed"
    by_metric = {m["metric"]: m for m in report["measurements"]}
    assert by_metric["success-rate"]["value"] == [pytest.approx(0.74)]
    assert by_metric["success-rate"]["phase"] == "Failed"
    assert "successCondition `result[0] >= 0.95` is false" in by_metric["success-rate"]["message"]
    assert 'service="degraded"' in by_metric["success-rate"]["query"]
    assert "success-rate: stopped without a successful measurement" in report["message"]
    assert {m["name"]: m["failed"] for m in report["metrics"]} == {"success-rate": 1, "latency": 1}


async def test_once_with_prometheus_stopped_is_an_error(tmp_path: Path) -> None:
    exporter = TrafficExporter({"shop": ServiceTraffic({"stable": VersionTraffic(10)})})
    async with exporter.serving() as address:
        async with prometheus_server(
            [ScrapeTarget("app", address)], workdir=tmp_path / "prometheus"
        ) as prometheus:
            await prometheus.wait_for_data('rate(http_requests_total{service="shop"}[5s])')
            url = prometheus.url
            running = await analyze(
                SUCCESS_RATE, "--once", "--arg", "service-name=shop", "--prometheus-address", url
            )
            assert running.code == 0, running.stdout + running.stderr
        stopped = await analyze(
            SUCCESS_RATE, "--once", "--arg", "service-name=shop", "--prometheus-address", url
        )
    assert stopped.code == 2, stopped.stdout + stopped.stderr
    assert f"cannot reach prometheus at {url}" in stopped.stdout
    assert "Run: Error (stopped): " in stopped.stdout
    assert "every measurement errored" in stopped.stdout


async def test_inconclusive_exits_two(stack: Stack, tmp_path: Path) -> None:
    template = tmp_path / "between.yaml"
    template.write_text(
        """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: between}
spec:
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.99
    failureCondition: result[0] < 0.9
    provider:
      prometheus:
        query: >-
          sum(rate(http_requests_total{service="healthy", status!~"5.."}[5m]))
          / sum(rate(http_requests_total{service="healthy"}[5m]))
"""
    )
    result = await analyze(template, "--prometheus-address", stack.prometheus.url)
    assert result.code == 2, result.stdout + result.stderr
    assert "? Inconclusive  value [0.98]" in result.stdout
    assert "Run: Inconclusive" in result.stdout


async def test_count_and_interval_are_honoured_without_once(stack: Stack, tmp_path: Path) -> None:
    template = tmp_path / "short.yaml"
    template.write_text(
        SUCCESS_RATE.read_text().replace(
            "interval: 1m", "interval: 300ms\n    count: 3\n    initialDelay: 200ms"
        )
    )
    result = await analyze(
        template, "--arg", "service-name=healthy", "--prometheus-address", stack.prometheus.url, "-o", "json"
    )
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "live" and report["phase"] == "Successful"
    assert [m["metric"] for m in report["measurements"]].count("success-rate") == 3
    assert {m["name"]: (m["phase"], m["count"]) for m in report["metrics"]} == {
        "success-rate": ("Successful", 3),
        "latency": ("Successful", 3),
    }
    assert "count (3) reached" in next(m for m in report["metrics"] if m["name"] == "latency")["message"]


async def test_duration_stops_a_metric_without_count(stack: Stack) -> None:
    result = await analyze(
        SUCCESS_RATE,
        "--arg",
        "service-name=healthy",
        "--prometheus-address",
        stack.prometheus.url,
        "--duration",
        "1s",
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "Run: Successful (stopped)" in result.stdout  # interval 1m, no count: only --duration ends it


async def test_secret_args_are_masked(stack: Stack, tmp_path: Path) -> None:
    secret = "s3cr3t-t0ken-value"
    template = tmp_path / "secret.yaml"
    template.write_text(
        """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: with-secret}
spec:
  args:
  - name: api-token
    valueFrom:
      secretKeyRef: {name: prometheus-credentials, key: token}
  metrics:
  - name: up
    successCondition: result[0] == 1
    provider:
      prometheus:
        query: vector(1) + 0 * scalar(absent(nothing_here{token="{{args.api-token}}"}))
        headers:
        - key: X-Scope
          value: "{{args.api-token}}"
"""
    )
    for how, env, extra in (
        ("environment", {"MESHSHIFT_ARG_API_TOKEN": secret}, ()),
        ("--arg", {}, ("--arg", f"api-token={secret}")),
    ):
        for output in ("text", "json"):
            result = await analyze(
                template,
                "--once",
                "--prometheus-address",
                stack.prometheus.url,
                "-o",
                output,
                *extra,
                env=env,
            )
            assert result.code == 0, (how, result.stdout + result.stderr)
            assert secret not in result.stdout + result.stderr, how
            shown = (
                json.loads(result.stdout)["measurements"][0]["query"] if output == "json" else result.stdout
            )
            assert 'token="*****"' in shown, how
    missing = await analyze(template, "--once", "--prometheus-address", stack.prometheus.url)
    assert missing.code == 2
    assert "arg 'api-token' is read from Secret 'prometheus-credentials'" in missing.stderr
    assert "MESHSHIFT_ARG_API_TOKEN" in missing.stderr


async def test_bad_input_is_refused_with_exit_two(tmp_path: Path) -> None:
    nothing = await analyze(SUCCESS_RATE, "--template", "nope", "--once")
    assert nothing.code == 2
    assert "no AnalysisTemplate 'nope' in the files (they hold: success-rate)" in nothing.stderr
    no_arg = await analyze(SUCCESS_RATE, "--once", "--prometheus-address", "http://127.0.0.1:1")
    assert no_arg.code == 2
    assert "service-name" in no_arg.stdout  # the run cannot start without the arg
    future = await analyze(SUCCESS_RATE, "--from", "-1h", "--to", "+1h")
    assert future.code == 2 and "is in the future" in future.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: b}\n"
        "spec: {metrics: [{name: m, count: x}]}\n"
    )
    invalid = await analyze(broken, "--once")
    assert invalid.code == 2 and "the templates have errors" in invalid.stderr


async def test_ctrl_c_stops_the_run_which_takes_its_phase(stack: Stack) -> None:
    # interval 1m and no count: the run only ends when stopped. Ctrl-C (SIGINT) after the first
    # measurements stops it as the end of a step would, and it is Successful on what it measured.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshshift.cli",
        "analyze",
        str(SUCCESS_RATE),
        "--arg",
        "service-name=healthy",
        "--prometheus-address",
        stack.prometheus.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    seen: list[str] = []

    def measured(metric: str) -> bool:
        return any(f"  {metric}  " in line for line in seen)

    while not (measured("latency") and measured("success-rate")):
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert line, "the command ended before measuring"
        seen.append(line.decode())
    process.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    assert "Run: Successful (stopped)" in rest.decode()
