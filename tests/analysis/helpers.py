"""Helpers for the analysis tests: local HTTP servers, runs through the real AnalysisExecutor."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from meshshift.analysis.providers import InlineTemplates
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.ports import MeasureContext, MetricProvider, TemplateSource
from meshshift.processes import free_port
from meshshift.runtime.analysis import AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    AnalysisTemplate,
    Arg,
    Metric,
    ProviderSpec,
    TemplateRef,
)
from meshshift.spec.templates import parse_template

SEED = Path(__file__).parent.parent / "data" / "seed"
HANG_GUARD = 60.0  # seconds; only ever reached when something hangs


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and a free port; yields its base URL."""
    # Cancel handlers whose client went away (a timed-out request), so cleanup does not wait.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def seed_document(filename: str) -> dict[str, Any]:
    """A tutorial YAML block, as copied unchanged into tests/data/seed."""
    doc = yaml.safe_load((SEED / filename).read_text())
    assert isinstance(doc, dict)
    return doc


def with_prometheus_address(doc: dict[str, Any], address: str) -> dict[str, Any]:
    """A copy of a template document whose Prometheus metrics query `address` (the seed says
    http://prometheus:9090, a name that only resolves inside the tutorial's cluster)."""
    copy: dict[str, Any] = yaml.safe_load(yaml.safe_dump(doc))
    for metric in copy["spec"]["metrics"]:
        metric["provider"]["prometheus"]["address"] = address
    return copy


def with_metric_fields(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of a template document with the same fields set on every metric."""
    copy: dict[str, Any] = yaml.safe_load(yaml.safe_dump(doc))
    for metric in copy["spec"]["metrics"]:
        metric.update(fields)
    return copy


def metric(kind: str, options: Mapping[str, Any], **fields: Any) -> Metric:
    return Metric(name=fields.pop("name", "m"), provider=ProviderSpec(kind, dict(options)), **fields)


async def measure(provider: MetricProvider, kind: str, options: Mapping[str, Any], **args: str) -> Any:
    result = await provider.measure(metric(kind, options), MeasureContext(args=args))
    return result


class Runs:
    """An AnalysisExecutor over given templates and providers, and the runs it publishes."""

    def __init__(
        self,
        templates: TemplateSource | Sequence[AnalysisTemplate | dict[str, Any]],
        providers: Mapping[str, MetricProvider],
        *,
        measurement_timeout: float = 10.0,
        canary: str = "canary",
        stable: str = "stable",
        namespace: str | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if isinstance(templates, Sequence):
            parsed = [t if isinstance(t, AnalysisTemplate) else parse_template(t) for t in templates]
            templates = InlineTemplates(*parsed)
        self.changed = asyncio.Event()

        async def read_secret(name: str, _namespace: str | None) -> Mapping[str, str] | None:
            return (secrets or {}).get(name)

        context = ArgContext(
            builtin_args=builtin_args(canary=canary, stable=stable, namespace=namespace),
            namespace=namespace,
            secret_reader=read_secret,
        )
        self.executor = AnalysisExecutor(
            templates=templates,
            providers=providers,
            clock=time.monotonic,
            on_change=lambda run: self.changed.set(),
            arg_context=lambda action: context,
            measurement_timeout=measurement_timeout,
        )

    async def start(
        self, *template_names: str, args: Mapping[str, str] | None = None, name: str = "run"
    ) -> None:
        ref = AnalysisRef(
            templates=tuple(TemplateRef(t) for t in template_names),
            args=tuple(Arg(k, v) for k, v in (args or {}).items()),
        )
        await self.executor.start(
            StartAnalysis(
                run_name=name,
                kind=AnalysisKind.STEP,
                analysis=ref,
                revision="canary",
                stable_revision="stable",
            )
        )

    async def wait(self, check: Any, name: str = "run") -> AnalysisRun:
        """Wait until `check(run)` holds (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + HANG_GUARD
        while True:
            run = self.executor.runs[name]
            if check(run):
                return run
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"run never reached the expected state: {run}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))

    async def completed(self, name: str = "run") -> AnalysisRun:
        return await self.wait(lambda run: run.phase.completed, name)

    async def measured_once(self, name: str = "run") -> AnalysisRun:
        """Wait until every metric has a measurement, then stop the run (Argo: terminate)."""
        await self.wait(lambda run: all(r.measurements for r in run.results) or run.phase.completed, name)
        await self.executor.stop(name)
        return self.executor.runs[name]

    async def close(self) -> None:
        await self.executor.close()


def phases(run: AnalysisRun) -> dict[str, AnalysisPhase]:
    return {result.name: result.phase for result in run.results}
