"""Runs the analysis runs of one rollout: the asyncio side of `analysis.run`.

The pure bookkeeping says which metric is due when; this module takes those
measurements through the providers, each cut off at its timeout, and reports every
change of a run so the controller can persist it and re-run the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.analysis.assess import assess_value, stored_value
from meshshift.analysis.run import (
    AnalysisRun,
    Measurement,
    due_metrics,
    fail_run,
    in_progress,
    next_due_at,
    record_measurement,
    start_run,
    terminate,
)
from meshshift.engine.actions import StartAnalysis
from meshshift.ports import (
    ON_DEADLINE,
    MeasureContext,
    MetricProvider,
    ProviderError,
    SecretReader,
    TemplateSource,
)
from meshshift.spec.errors import SpecError
from meshshift.spec.model import AnalysisPhase, AnalysisTemplate, Arg, MeasurementRetention, Metric
from meshshift.spec.steps import read_field_path
from meshshift.spec.templates import (
    compose_template,
    instantiate_template,
    matching_metric_names,
    resolve_args,
)

log = structlog.get_logger(__name__)

DEFAULT_MEASUREMENT_TIMEOUT = 30.0
# What a value read from a Secret becomes wherever a run is persisted or shown.
REDACTED = "*****"


@dataclass(frozen=True, slots=True)
class ArgContext:
    """What meshshift fills in by itself: revision identifiers and where the rollout runs."""

    builtin_args: Mapping[str, str]  # canary-hash, baseline-hash, ... (see builtin_args())
    namespace: str | None = None
    secret_reader: SecretReader | None = None  # for args with valueFrom.secretKeyRef
    # The rollout's object metadata (name, namespace, labels, annotations), for args with
    # valueFrom.fieldRef: the Deployment's, or the standalone rollout file's.
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def builtin_args(*, canary: str, stable: str, namespace: str | None) -> dict[str, str]:
    """The args meshshift provides to every template that declares them."""
    values = {"canary-hash": canary, "latest-hash": canary, "baseline-hash": stable, "stable-hash": stable}
    if namespace is not None:
        values["namespace"] = namespace
    return values


class AnalysisExecutor:
    """Takes the measurements of every live analysis run of one rollout."""

    def __init__(
        self,
        *,
        templates: TemplateSource,
        providers: Mapping[str, MetricProvider],
        clock: Callable[[], float],
        on_change: Callable[[AnalysisRun], None],
        arg_context: Callable[[StartAnalysis], ArgContext],
        measurement_timeout: float = DEFAULT_MEASUREMENT_TIMEOUT,
        evaluate_at_clock: bool = False,
    ) -> None:
        """`evaluate_at_clock`: a replay over history (`meshshift analyze --from`): `clock` is the
        replay's, and each measurement asks its provider for the value as of that time."""
        self.templates = templates
        self.providers = providers
        self.clock = clock
        self.on_change = on_change
        self.arg_context = arg_context
        self.measurement_timeout = measurement_timeout
        self.evaluate_at_clock = evaluate_at_clock
        self.runs: dict[str, AnalysisRun] = {}
        self.contexts: dict[str, MeasureContext] = {}
        self._secret_values: dict[str, tuple[str, ...]] = {}  # run -> values to redact
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def verdicts(self) -> dict[str, AnalysisPhase]:
        return {name: run.phase for name, run in self.runs.items()}

    def restore(self, runs: Mapping[str, AnalysisRun]) -> None:
        """Adopt runs persisted by an earlier daemon; `start` then resumes them."""
        self.runs.update(runs)

    async def start(self, action: StartAnalysis, *, drive: bool = True) -> None:
        """Start the run `action` names, or resume it if it was restored. With `drive=False` no
        task measures it: the caller takes its measurements with `measure_due`."""
        name = action.run_name
        if name in self._tasks:
            return
        context = self.arg_context(action)
        run = self.runs.get(name)
        try:
            templates = await self._templates(action, required=run is None)
            # Read on every start: Secret values are never persisted, only used. A template's
            # own `valueFrom.secretKeyRef` args count unless the rollout gives the arg.
            given = {arg.name for arg in action.analysis.args}
            template_secrets = [
                Arg(arg.name, value_from=arg.value_from)
                for template in templates
                for arg in template.args
                if arg.value_from is not None and arg.value_from.secret_name and arg.name not in given
            ]
            secret_args = await _secret_args([*action.analysis.args, *template_secrets], context)
        except LookupError as error:
            if run is None:
                self._publish(self._error_run(action, f"cannot start analysis: {error}"))
            return
        if run is None:
            run = await self._new_run(action, templates, context, secret_args)
            self._publish(run)
        else:
            log.info("analysis run resumed", run=name, phase=run.phase.value)
        provider_args = {**run.args, **{k: v for k, v in secret_args.items() if k in run.args}}
        self.contexts[name] = MeasureContext(
            args=provider_args, namespace=context.namespace, secret_reader=context.secret_reader
        )
        self._secret_values[name] = tuple(v for v in secret_args.values() if v)
        if drive and not run.phase.completed and not run.terminated:
            self._tasks[name] = asyncio.create_task(self._drive(name), name=f"analysis:{name}")

    async def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run = self.runs.get(name)
        if run is not None and not run.terminated:
            self._publish(terminate(run))

    async def close(self) -> None:
        """Stop measuring (the daemon is stopping); runs stay as they are, to be resumed."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def forget(self, keep: Sequence[str]) -> None:
        """Drop finished runs the rollout state no longer refers to."""
        for name in list(self.runs):
            if name not in keep and name not in self._tasks:
                del self.runs[name]
                self.contexts.pop(name, None)

    # --- building a run ------------------------------------------------------------

    async def _new_run(
        self,
        action: StartAnalysis,
        templates: Sequence[AnalysisTemplate],
        context: ArgContext,
        secret_args: Mapping[str, str],
    ) -> AnalysisRun:
        ref = action.analysis
        now = self.clock()
        try:
            given = _given_args(ref.args, context) | dict(secret_args)
            metrics: list[Metric] = []
            args: dict[str, str] = {}
            dry_run: list[str] = list(ref.dry_run)
            retention: list[MeasurementRetention] = list(ref.measurement_retention)
            for template in templates:
                # Builtins only fill args a template declares; explicit args win.
                declared = {arg.name for arg in template.args}
                own = [
                    Arg(a.name, value_from=a.value_from) for a in template.args if a.value_from is not None
                ]
                offered = (
                    {k: v for k, v in context.builtin_args.items() if k in declared}
                    | _given_args([a for a in own if a.name not in given], context)
                    | given
                )
                template_args = resolve_args(
                    template.args, {k: v for k, v in offered.items() if k in declared}
                )
                metrics.extend(instantiate_template(template, template_args))
                args.update(template_args)
                dry_run.extend(template.dry_run)
                retention.extend(template.measurement_retention)
            _check_unique_metric_names(metrics)
            dry_run, retention = _by_metric_name(metrics, dry_run, retention)
        except (SpecError, LookupError, ValueError) as error:
            log.warning("analysis run invalid", run=action.run_name, error=str(error))
            return self._error_run(action, f"cannot start analysis: {error}")
        # The persisted run keeps no Secret value; start() supplies them to providers.
        kept = {k: (REDACTED if k in secret_args else v) for k, v in args.items()}
        return start_run(action.run_name, metrics, args=kept, now=now, dry_run=dry_run, retention=retention)

    def _error_run(self, action: StartAnalysis, message: str) -> AnalysisRun:
        return AnalysisRun(
            name=action.run_name,
            metrics=(),
            args={},
            results=(),
            started_at=self.clock(),
            phase=AnalysisPhase.ERROR,
            message=message,
        )

    async def _templates(self, action: StartAnalysis, *, required: bool) -> list[AnalysisTemplate]:
        """The run's templates (LookupError if one is missing and `required`); a resumed run
        goes on without those that are gone."""
        found = []
        for ref in action.analysis.templates:
            try:
                found.append(await self._composed(await self._template(ref.template_name, ref.cluster_scope)))
            except LookupError:
                if required:
                    raise
        return found

    async def _composed(self, template: AnalysisTemplate) -> AnalysisTemplate:
        """`template` with the templates it includes (`spec.templates`) merged in."""
        if not template.includes:
            return template
        known: dict[tuple[str, bool], AnalysisTemplate] = {}
        pending = list(template.includes)
        while pending:
            ref = pending.pop()
            key = (ref.template_name, ref.cluster_scope)
            if key in known:
                continue
            included = await self.templates.get(ref.template_name, cluster_scope=ref.cluster_scope)
            if included is not None:  # else compose_template names it
                known[key] = included
                pending.extend(included.includes)
        try:
            return compose_template(template, lambda name, cluster: known.get((name, cluster)))
        except SpecError as error:
            raise LookupError(f"template {template.name!r}: {error}") from None

    async def _template(self, name: str, cluster_scope: bool) -> AnalysisTemplate:
        template = await self.templates.get(name, cluster_scope=cluster_scope)
        if template is None:
            scope = "ClusterAnalysisTemplate" if cluster_scope else "AnalysisTemplate"
            raise LookupError(f"{scope} {name!r} not found")
        return template

    # --- measuring -------------------------------------------------------------------

    def _publish(self, run: AnalysisRun) -> None:
        previous = self.runs.get(run.name)
        self.runs[run.name] = run
        if previous is None or previous.phase != run.phase:
            log.info("analysis run phase", run=run.name, phase=run.phase.value, message=run.message)
        self.on_change(run)

    async def _drive(self, name: str) -> None:
        """Measure the run until it completes; if this task fails, the run ends in Error with the
        reason, so the rollout acts on it instead of waiting for a verdict that never comes."""
        ON_DEADLINE.set(False)  # started inside a pass; its measurements are no pass's deadline
        try:
            await self._measure_until_done(name)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("analysis task failed", run=name)
            run = self.runs.get(name)
            if run is not None and not run.phase.completed:
                self._publish(fail_run(run, f"the analysis stopped: {type(error).__name__}: {error}"))
        finally:
            self._tasks.pop(name, None)

    async def _measure_until_done(self, name: str) -> None:
        while True:
            run = self.runs[name]
            if run.phase.completed or run.terminated:
                return
            if due_metrics(run, self.clock()):
                await self.measure_due(name)
                continue
            at = next_due_at(run)
            if at is None:
                return
            await asyncio.sleep(max(0.0, at - self.clock()))

    async def measure_due(self, name: str, *, metrics: Sequence[Metric] | None = None) -> AnalysisRun:
        """Take the measurements due now (or one of each of `metrics`, due or not), concurrently,
        record them and publish the run. The daemon's task calls it when a metric is due; a caller
        that started the run with `drive=False` calls it itself (a replay, `analyze --once`)."""
        run = self.runs[name]
        due = tuple(metrics) if metrics is not None else due_metrics(run, self.clock())
        if not due or run.phase.completed or run.terminated:
            return run
        measurements = [
            self._redact(name, m) for m in await asyncio.gather(*(self._measure(name, m) for m in due))
        ]
        run = self.runs[name]
        for metric, measurement in zip(due, measurements, strict=True):
            run = record_measurement(run, metric.name, measurement)
        self._publish(run)
        return run

    def _redact(self, run_name: str, measurement: Measurement) -> Measurement:
        """The measurement with every Secret value of its run masked (Argo does the same)."""
        secrets = self._secret_values.get(run_name, ())
        if not secrets:
            return measurement
        query, message = measurement.query, measurement.message
        for secret in secrets:
            query, message = query.replace(secret, REDACTED), message.replace(secret, REDACTED)
        return dataclasses.replace(measurement, query=query, message=message)

    async def _measure(self, run_name: str, metric: Metric) -> Measurement:
        started = self.clock()
        context = self.contexts[run_name]
        running = in_progress(self.runs[run_name].result(metric.name))
        if running is not None:
            context = dataclasses.replace(context, in_progress=running)
        if self.evaluate_at_clock:
            context = dataclasses.replace(context, evaluation_time=started)
        provider = self.providers.get(metric.provider.kind) if metric.provider else None
        if provider is None:
            reason = (
                f"provider {metric.provider.kind!r} is not available"
                if metric.provider
                else "the metric has no provider"
            )
            return Measurement(AnalysisPhase.ERROR, started, self.clock(), message=reason)
        try:
            result = await asyncio.wait_for(
                provider.measure(metric, context), timeout=self.measurement_timeout
            )
        except TimeoutError:
            message = f"{provider.kind} did not answer within {self.measurement_timeout:g}s"
            return Measurement(AnalysisPhase.ERROR, started, self.clock(), message=message)
        except ProviderError as error:
            return Measurement(AnalysisPhase.ERROR, started, self.clock(), message=str(error))
        except Exception as error:  # a provider bug must not stop the rollout's bookkeeping
            log.exception("provider failed", provider=provider.kind, metric=metric.name)
            return Measurement(
                AnalysisPhase.ERROR, started, self.clock(), message=f"{provider.kind}: {error!r}"
            )
        if running is not None:
            started = running.started_at  # the same measurement, taken up again
        now = self.clock()
        if result.phase == AnalysisPhase.RUNNING:
            return Measurement(
                AnalysisPhase.RUNNING,
                started,
                now,
                value=stored_value(result.value),
                message=result.message,
                query=result.query,
                resume_at=now + (result.resume_after if result.resume_after is not None else 1.0),
                stop_phase=result.stop_phase,
                metadata=result.metadata,
            )
        phase, message = assess_value(
            metric,
            result.value,
            query=result.query,
            provider_phase=result.phase,
            provider_message=result.message,
        )
        return Measurement(
            phase,
            started,
            now,
            value=stored_value(result.value),
            message=message,
            query=result.query,
            metadata=result.metadata,
        )


def _given_args(args: Sequence[Arg], context: ArgContext) -> dict[str, str]:
    """Literal args and pod-template hashes; Secret args come from _secret_args."""
    values = {}
    for arg in args:
        if arg.value is not None:
            values[arg.name] = arg.value
            continue
        source = arg.value_from
        if source is None:
            continue
        if source.pod_template_hash == "Stable":
            values[arg.name] = context.builtin_args["stable-hash"]
        elif source.pod_template_hash == "Latest":
            values[arg.name] = context.builtin_args["canary-hash"]
        elif source.field_path is not None:
            try:
                values[arg.name] = read_field_path(source.field_path, context.metadata)
            except LookupError as error:
                raise LookupError(f"arg {arg.name}: {error}") from None
    return values


async def _secret_args(args: Sequence[Arg], context: ArgContext) -> dict[str, str]:
    """The args read from Secrets (valueFrom.secretKeyRef), in the rollout's namespace."""
    values = {}
    for arg in args:
        source = arg.value_from
        if source is None or source.secret_name is None or source.secret_key is None:
            continue
        if context.secret_reader is None:
            raise LookupError(f"arg {arg.name}: Secrets can only be read in Kubernetes mode")
        data = await context.secret_reader(source.secret_name, context.namespace)
        if data is None or source.secret_key not in data:
            raise LookupError(f"arg {arg.name}: Secret {source.secret_name} has no key {source.secret_key!r}")
        values[arg.name] = data[source.secret_key]
    return values


def _by_metric_name(
    metrics: Sequence[Metric], dry_run: Sequence[str], retention: Sequence[MeasurementRetention]
) -> tuple[list[str], list[MeasurementRetention]]:
    """dryRun and measurementRetention rules (metricName regexes, as in Argo) as the exact names
    of the metrics they select; for retention, the last rule naming a metric wins. ValueError
    for a rule that selects nothing, as Argo fails the run then."""
    names = [metric.name for metric in metrics]

    def selected(pattern: str, what: str) -> list[str]:
        found = matching_metric_names(pattern, names)
        if not found:
            raise ValueError(f'{what} metricName "{pattern}" matches no metric (it is a regular expression)')
        return found

    dry = sorted({name for pattern in dry_run for name in selected(pattern, "dryRun")})
    limits: dict[str, int] = {}
    for rule in retention:
        for name in selected(rule.metric_name, "measurementRetention"):
            limits[name] = rule.limit
    return dry, [MeasurementRetention(name, limit) for name, limit in limits.items()]


def _check_unique_metric_names(metrics: Sequence[Metric]) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise ValueError(f"two templates define the metric {metric.name!r}")
        seen.add(metric.name)
