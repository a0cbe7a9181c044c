"""`meshshift analyze FILE... --template NAME`: try an AnalysisTemplate before trusting it.

The run is the one a rollout would make: the real AnalysisExecutor, the real providers, the same
templating and escaping, the same phase rules. Three ways to run it:

- live (default): from now, honouring `interval`, `count` and `initialDelay`, until the run
  completes (or `--duration`, or Ctrl-C, which stop it as the end of a step would);
- `--once`: one measurement of each metric now (initialDelay is not waited for), then the run is
  stopped and takes its phase from that one measurement;
- a backtest, `--from T1 --to T2`: the run replayed as if it had started at T1, each measurement
  evaluated at its own time from the metrics store's history (see meshshift.runtime.replay), and
  with `--every DURATION` one replay every DURATION across the range, each `--duration` long
  (default: DURATION), summarised (meshshift.analysis.backtest). `--plot FILE.png|svg` draws it.

Args: `--arg NAME=VALUE`; an arg not given is read from `$MESHSHIFT_ARG_<NAME>` (upper case, `-`
and `.` as `_`). The values of args a template reads from a Secret (`valueFrom.secretKeyRef`),
and of args named like credentials (token, password, secret, key...), are masked in the output.

Exit status: 0 Successful, 1 Failed, 2 Error or Inconclusive, and 2 when the input is wrong.
With --every: 0 when no replay rolled back, 1 when one Failed, 2 when one Errored (or was
Inconclusive); with --incident: 0 when no healthy replay rolled back and every incident was
detected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from meshshift.analysis.assess import value_excerpt
from meshshift.analysis.backtest import Period, ReplayOutcome, Summary, replay_starts, summarise
from meshshift.analysis.providers import (
    BuiltinTarget,
    BuiltinTemplates,
    ChainedTemplates,
    InlineTemplates,
    default_providers,
)
from meshshift.analysis.run import AnalysisRun, Measurement, next_due_at
from meshshift.cli.plot import plotted_value
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.ports import MetricProvider, TemplateSource
from meshshift.runtime.analysis import REDACTED, AnalysisExecutor, ArgContext
from meshshift.runtime.replay import Replay, ReplayRefusedError, TimedMeasurement, replay
from meshshift.spec.documents import TEMPLATE, classify, load_documents
from meshshift.spec.durations import format_duration, format_instant, parse_duration, parse_instant
from meshshift.spec.errors import Findings
from meshshift.spec.model import AnalysisPhase, AnalysisRef, AnalysisTemplate, Arg, TemplateRef
from meshshift.spec.templates import read_template

RUN_NAME = "analyze"
ARG_ENV_PREFIX = "MESHSHIFT_ARG_"
EXIT_CODES = {
    AnalysisPhase.SUCCESSFUL: 0,
    AnalysisPhase.FAILED: 1,
    AnalysisPhase.ERROR: 2,
    AnalysisPhase.INCONCLUSIVE: 2,
}
EXIT_BAD_INPUT = 2
# An arg whose name holds one of these is a credential: its value is masked like a Secret's.
_SECRET_WORDS = ("token", "password", "passwd", "secret", "key", "credential", "auth")
_COLLAPSE_AT = 3  # this many Successful measurements in a row are shown as one line (text output)
DEFAULT_CONCURRENCY = 4  # replays measured at the same time (--every)


class AnalyzeError(Exception):
    """Wrong input: printed as `meshshift analyze: ...`, exit status 2."""


# --- the command -----------------------------------------------------------------------------


def run_analyze(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        request = _request(args, environ=os.environ, now=time.time())
        return asyncio.run(_run(request, out, err))
    except AnalyzeError as error:
        err.write(f"meshshift analyze: {error}\n")
        return EXIT_BAD_INPUT


# --- what was asked ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    templates: Mapping[tuple[str, bool], AnalysisTemplate]
    template_names: tuple[str, ...]
    args: Mapping[str, str]  # literal args
    secrets: Mapping[str, Mapping[str, str]]  # secret name -> key -> value, for secretKeyRef args
    masked: tuple[str, ...]  # values never printed
    once: bool
    duration: float | None
    start: float | None
    end: float | None
    every: float | None
    incidents: tuple[Period, ...]
    plot: str | None
    prometheus_address: str | None
    mesh: str | None
    namespace: str | None
    output: str
    concurrency: int = DEFAULT_CONCURRENCY


def _request(args: argparse.Namespace, *, environ: Mapping[str, str], now: float) -> Request:
    templates = _load_templates(args.files, args.prometheus_address)
    names = tuple(args.template or ())
    if not names:
        own = sorted({name for name, _ in templates})
        if len(own) != 1:
            listed = ", ".join(own) if own else "none"
            raise AnalyzeError(
                f"say which template to run with --template (templates in the files: {listed})"
            )
        names = (own[0],)
    builtin_names = BuiltinTemplates(args.mesh).templates if args.mesh else {}
    for name in names:
        if (name, False) not in templates and (name, True) not in templates and name not in builtin_names:
            known = ", ".join(sorted({n for n, _ in templates})) or "none"
            hint = "" if args.mesh else " (builtin templates need --mesh)"
            raise AnalyzeError(f"no AnalysisTemplate {name!r} in the files (they hold: {known}){hint}")
    given = _given_args(args.arg)
    secret_refs = _secret_refs(templates.values())
    declared = {arg.name for template in templates.values() for arg in template.args}
    if args.mesh:
        declared |= {arg.name for template in builtin_names.values() for arg in template.args}
    for name in declared:
        env = ARG_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        if name not in given and environ.get(env):
            given[name] = environ[env]
    secrets: dict[str, dict[str, str]] = {}
    literal = {}
    for name, value in given.items():
        if name in secret_refs:
            secret, key = secret_refs[name]
            secrets.setdefault(secret, {})[key] = value
        else:
            literal[name] = value
    for name, (secret, key) in secret_refs.items():
        if name not in given and _needed(name, names, templates):
            env = ARG_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
            raise AnalyzeError(
                f"arg {name!r} is read from Secret {secret!r} (key {key!r}) in a cluster; give its value "
                f"with --arg {name}=VALUE or ${env} (it is masked in the output)"
            )
    masked = tuple(
        value
        for name, value in given.items()
        if value and (name in secret_refs or any(word in name.lower() for word in _SECRET_WORDS))
    )
    start = _instant(args.start, "--from", now) if args.start else None
    end = _instant(args.end, "--to", now) if args.end else (now if start is not None else None)
    if start is None and (args.end or args.every or args.incident):
        raise AnalyzeError("--to, --every and --incident are for a backtest: give --from too")
    if args.plot and start is None:
        raise AnalyzeError("--plot draws a backtest: give --from (and --to)")
    if start is not None and end is not None:
        if end <= start:
            raise AnalyzeError(f"--to ({format_instant(end)}) must be after --from ({format_instant(start)})")
        if end > now + 1:
            raise AnalyzeError(
                f"--to ({format_instant(end)}) is in the future: there is no history there yet"
            )
        if args.once:
            raise AnalyzeError("--once takes one measurement now; a backtest (--from) replays the run")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".svg"):
        raise AnalyzeError(f"--plot {args.plot}: write a .png or an .svg file")
    return Request(
        templates=templates,
        template_names=names,
        args=literal,
        secrets=secrets,
        masked=masked,
        once=args.once,
        duration=_duration(args.duration, "--duration") if args.duration else None,
        start=start,
        end=end,
        every=_duration(args.every, "--every") if args.every else None,
        incidents=tuple(_incident(text, now, end) for text in args.incident),
        plot=args.plot,
        prometheus_address=args.prometheus_address,
        mesh=args.mesh,
        namespace=args.namespace,
        output=args.output,
    )


def _load_templates(
    paths: Sequence[str], prometheus_address: str | None
) -> dict[tuple[str, bool], AnalysisTemplate]:
    """Every AnalysisTemplate and ClusterAnalysisTemplate of the files; AnalyzeError listing the
    problems of one that does not parse."""
    templates: dict[tuple[str, bool], AnalysisTemplate] = {}
    problems: list[str] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AnalyzeError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        documents, syntax = load_documents(text, path)
        problems.extend(str(finding) for finding in syntax)
        for document in documents:
            if classify(document.data) != TEMPLATE:
                continue
            data = document.data
            if prometheus_address:
                data = _with_prometheus_address(data, prometheus_address)
            findings = Findings()
            template = read_template(data, findings)
            problems.extend(
                f"{path}:{document.index}:{issue.path}: {issue.reason}"
                for issue in findings
                if issue.severity == "error"
            )
            if template is not None and not findings.has_errors:
                templates.setdefault((template.name, template.cluster_scope), template)
    if problems:
        raise AnalyzeError(
            "the templates have errors (run `meshshift lint` on them):\n  " + "\n  ".join(problems)
        )
    return templates


def _with_prometheus_address(data: Any, address: str) -> Any:
    """A copy of a template document whose prometheus metrics query `address`."""
    copy = json.loads(json.dumps(data, default=str))
    metrics = copy.get("spec", {}).get("metrics") if isinstance(copy.get("spec"), Mapping) else None
    for metric in metrics if isinstance(metrics, list) else []:
        provider = metric.get("provider") if isinstance(metric, Mapping) else None
        if isinstance(provider, dict) and isinstance(provider.get("prometheus"), dict):
            provider["prometheus"]["address"] = address
    return copy


def _given_args(raw: Sequence[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise AnalyzeError(f"--arg {item!r}: write NAME=VALUE")
        given[name.strip()] = value
    return given


def _secret_refs(templates: Iterable[AnalysisTemplate]) -> dict[str, tuple[str, str]]:
    """Args the templates read from Secrets: name -> (secret, key)."""
    refs: dict[str, tuple[str, str]] = {}
    for template in templates:
        for arg in template.args:
            source = arg.value_from
            if source is not None and source.secret_name and source.secret_key:
                refs.setdefault(arg.name, (source.secret_name, source.secret_key))
    return refs


def _needed(arg: str, names: Sequence[str], templates: Mapping[tuple[str, bool], AnalysisTemplate]) -> bool:
    """Whether a template to run (or one it includes) declares `arg`."""
    pending = list(names)
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for scope in (False, True):
            template = templates.get((name, scope))
            if template is None:
                continue
            if any(a.name == arg for a in template.args):
                return True
            pending.extend(ref.template_name for ref in template.includes)
    return False


def _instant(text: str, option: str, now: float) -> float:
    try:
        return parse_instant(text, now=now)
    except ValueError as error:
        raise AnalyzeError(f"{option}: {error}") from None


def _duration(text: str, option: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise AnalyzeError(f"{option}: {error}") from None
    if seconds <= 0:
        raise AnalyzeError(f"{option}: must be more than 0")
    return seconds


def _incident(text: str, now: float, end: float | None) -> Period:
    first, sep, last = text.partition("..")
    if not sep or not first:
        raise AnalyzeError(f"--incident {text!r}: write START..END (END may be left out: until --to)")
    start = _instant(first, "--incident", now)
    stop = _instant(last, "--incident", now) if last else (end if end is not None else now)
    if stop <= start:
        raise AnalyzeError(f"--incident {text!r}: its end must be after its start")
    return Period(start, stop)


# --- running ---------------------------------------------------------------------------------------


def _template_source(request: Request) -> TemplateSource:
    user = InlineTemplates(*request.templates.values())
    if request.mesh is None:
        return ChainedTemplates(user)
    target = BuiltinTarget(namespace=request.namespace or "default")
    return ChainedTemplates(user, BuiltinTemplates(request.mesh, target))


def _providers(request: Request) -> dict[str, MetricProvider]:
    return default_providers(prometheus_address=request.prometheus_address)


def _arg_context(request: Request) -> ArgContext:
    async def read_secret(name: str, _namespace: str | None) -> Mapping[str, str] | None:
        return request.secrets.get(name)

    builtin = {"namespace": request.namespace} if request.namespace else {}
    return ArgContext(builtin_args=builtin, namespace=request.namespace, secret_reader=read_secret)


def _action(request: Request, name: str = RUN_NAME) -> StartAnalysis:
    ref = AnalysisRef(
        templates=tuple(
            TemplateRef(n, cluster_scope=_cluster_only(request, n)) for n in request.template_names
        ),
        args=tuple(Arg(k, v) for k, v in request.args.items()),
    )
    return StartAnalysis(run_name=name, kind=AnalysisKind.STEP, analysis=ref, revision="", stable_revision="")


def _cluster_only(request: Request, name: str) -> bool:
    return (name, False) not in request.templates and (name, True) in request.templates


async def _run(request: Request, out: TextIO, err: TextIO) -> int:
    report = Reporter(request, out, err)
    if request.start is not None and request.end is not None:
        if request.every is not None:
            return await _backtests(request, report)
        return await _backtest(request, report)
    return await _live(request, report)


async def _live(request: Request, report: Reporter) -> int:
    stop = asyncio.Event()
    done = asyncio.Event()
    timeline: list[TimedMeasurement] = []
    seen: dict[str, Measurement] = {}

    def changed(run: AnalysisRun) -> None:
        for result in run.results:
            if result.measurements and seen.get(result.name) != result.measurements[-1]:
                seen[result.name] = result.measurements[-1]
                entry = TimedMeasurement(result.name, result.measurements[-1])
                timeline.append(entry)
                report.measurement(entry)
        if run.phase.completed:
            done.set()

    executor = AnalysisExecutor(
        templates=_template_source(request),
        providers=_providers(request),
        clock=time.time,
        on_change=changed,
        arg_context=lambda _action: _arg_context(request),
    )
    loop = asyncio.get_running_loop()
    with _signals(loop, stop):
        started = time.time()
        action = _action(request)
        await executor.start(action, drive=not request.once)
        run = executor.runs[RUN_NAME]
        if request.once and not run.phase.completed:
            await executor.measure_due(RUN_NAME, metrics=run.metrics)
            await executor.stop(RUN_NAME)
        elif not run.phase.completed:
            deadline = started + request.duration if request.duration else None
            with report.status() as status:
                while not done.is_set() and not stop.is_set():
                    if deadline is not None and time.time() >= deadline:
                        break
                    status(_waiting(executor.runs[RUN_NAME], deadline))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(done.wait()), timeout=0.5)
            if not executor.runs[RUN_NAME].phase.completed:
                await executor.stop(RUN_NAME)
        await executor.close()
    run = executor.runs[RUN_NAME]
    report.run_result(run, timeline, interrupted=stop.is_set())
    return EXIT_CODES.get(run.phase, 2)


def _waiting(run: AnalysisRun, deadline: float | None) -> str:
    due = next_due_at(run)
    now = time.time()
    taken = sum(r.counts.measured for r in run.results)
    parts = [f"{run.phase.value}: {taken} measurement{'s' if taken != 1 else ''} taken"]
    if due is not None:
        parts.append(f"next in {format_duration(max(0.0, round(due - now)))}")
    if deadline is not None:
        parts.append(f"stopping in {format_duration(max(0.0, round(deadline - now)))}")
    return "; ".join(parts) + " (Ctrl-C stops the run)"


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run (it then takes its phase), they do not kill the command."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _replay(request: Request, start: float, until: float, name: str) -> Replay:
    try:
        return await replay(
            _action(request, name),
            templates=_template_source(request),
            providers=_providers(request),
            arg_context=_arg_context(request),
            start=start,
            until=until,
        )
    except ReplayRefusedError as error:
        raise AnalyzeError(f"this template cannot be replayed over history: {error}") from None


async def _backtest(request: Request, report: Reporter) -> int:
    assert request.start is not None and request.end is not None
    until = request.end if request.duration is None else min(request.end, request.start + request.duration)
    with report.status() as status:
        status(f"replaying from {format_instant(request.start)} to {format_instant(until)}")
        result = await _replay(request, request.start, until, RUN_NAME)
    report.replay_result(result)
    if request.plot:
        _plot(request, [result], report)
    return EXIT_CODES.get(result.run.phase, 2)


async def _backtests(request: Request, report: Reporter) -> int:
    assert request.start is not None and request.end is not None and request.every is not None
    duration = request.duration or request.every
    starts = replay_starts(request.start, request.end, request.every, duration)
    if not starts:
        raise AnalyzeError(
            f"no replay of {format_duration(duration)} fits between --from and --to; widen the range "
            "or shorten --duration"
        )
    replays: list[Replay] = []
    with report.progress(len(starts)) as advance:
        # The first alone: a template that cannot be replayed is refused once, before the rest.
        replays.append(await _replay(request, starts[0], starts[0] + duration, f"{RUN_NAME}-0"))
        advance()
        gate = asyncio.Semaphore(request.concurrency)

        async def one(index: int, start: float) -> Replay:
            async with gate:
                result = await _replay(request, start, start + duration, f"{RUN_NAME}-{index}")
                advance()
                return result

        replays.extend(await asyncio.gather(*(one(i, s) for i, s in enumerate(starts[1:], 1))))
    outcomes = [_outcome(r) for r in replays]
    summary = summarise(outcomes, request.incidents)
    report.backtests_result(replays, summary, duration)
    if request.plot:
        _plot(request, replays, report)
    if request.incidents:
        return 0 if summary.as_expected else 1
    if summary.count(AnalysisPhase.FAILED):
        return 1
    if summary.count(AnalysisPhase.ERROR) or summary.count(AnalysisPhase.INCONCLUSIVE):
        return 2
    return 0


def _outcome(result: Replay) -> ReplayOutcome:
    return ReplayOutcome(
        start=result.started_at,
        until=result.until,
        phase=result.run.phase,
        completed_at=result.completed_at,
        message=result.run.message,
    )


def _plot(request: Request, replays: Sequence[Replay], report: Reporter) -> None:
    assert request.plot is not None
    from meshshift.cli.plot import PlotUnavailableError, plot_backtest

    try:
        plot_backtest(
            replays,
            request.plot,
            title=", ".join(request.template_names),
            incidents=request.incidents,
            mask=report.mask,
        )
    except PlotUnavailableError as error:
        raise AnalyzeError(str(error)) from None
    report.note(f"plot written to {request.plot}")


# --- output ----------------------------------------------------------------------------------------

_PHASE_MARKS = {
    AnalysisPhase.SUCCESSFUL: "✔",
    AnalysisPhase.FAILED: "✖",
    AnalysisPhase.ERROR: "⚠",
    AnalysisPhase.INCONCLUSIVE: "?",
    AnalysisPhase.RUNNING: "◌",
    AnalysisPhase.PENDING: "◌",
}


@dataclass
class Reporter:
    """Prints what a run does: text as it happens, or one JSON document at the end."""

    request: Request
    out: TextIO
    err: TextIO
    _queries: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> bool:
        return self.request.output == "text"

    def mask(self, text: str) -> str:
        for value in self.request.masked:
            text = text.replace(value, REDACTED)
        return text

    def note(self, message: str) -> None:
        self.err.write(f"{message}\n")

    @contextlib.contextmanager
    def status(self) -> Iterator[Callable[[str], None]]:
        """A spinner line on the terminal (standard error) while waiting; nothing elsewhere."""
        console = Console(file=self.err)
        if not console.is_terminal:
            yield lambda message: None
            return
        with console.status("") as status:
            yield lambda message: status.update(message)

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable[[], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.err)
        if not console.is_terminal:
            yield lambda: None
            return
        with Progress(
            TextColumn("replays"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("replays", total=total)
            yield lambda: bar.advance(task)

    # live and --once

    def measurement(self, entry: TimedMeasurement) -> None:
        if not self.text or entry.measurement.phase == AnalysisPhase.RUNNING:
            return
        m = entry.measurement
        self.out.write(f"{self._line(entry)}\n")
        query = self.mask(_one_line(m.query))
        if query and self._queries.get(entry.metric) != query:
            self._queries[entry.metric] = query
            self.out.write(f"    query: {query}\n")
        self.out.flush()

    def _line(self, entry: TimedMeasurement) -> str:
        m = entry.measurement
        mark = _PHASE_MARKS.get(m.phase, " ")
        value = "" if m.value is None else _shown_value(m.value)
        text = f"{format_instant(m.finished_at)}  {entry.metric}  {mark} {m.phase.value}"
        if value:
            text += f"  value {self.mask(value)}"
        if m.message:
            text += f"  {self.mask(m.message)}"
        return text

    def run_result(
        self, run: AnalysisRun, timeline: Sequence[TimedMeasurement], *, interrupted: bool
    ) -> None:
        if not self.text:
            self._json({"mode": "once" if self.request.once else "live", **self._run_json(run, timeline)})
            return
        if not timeline:
            self.out.write("no measurement was taken\n")
        stopped = " (stopped)" if interrupted or run.terminated else ""
        self.out.write(f"\nRun: {run.phase.value}{stopped}{self._why(run)}\n")
        for result in run.results:
            self.out.write(f"  {result.name}: {result.phase.value}{self._counts(result.counts)}\n")

    def _why(self, run: AnalysisRun) -> str:
        return f": {self.mask(run.message)}" if run.message and run.phase != AnalysisPhase.SUCCESSFUL else ""

    @staticmethod
    def _counts(counts: Any) -> str:
        parts = [
            f"{n} {label}"
            for n, label in (
                (counts.successful, "successful"),
                (counts.failed, "failed"),
                (counts.inconclusive, "inconclusive"),
                (counts.error, "error"),
            )
            if n
        ]
        return f" ({', '.join(parts)})" if parts else ""

    # a backtest

    def replay_result(self, result: Replay) -> None:
        run = result.run
        if not self.text:
            self._json(
                {
                    "mode": "backtest",
                    "from": format_instant(result.started_at),
                    "to": format_instant(result.until),
                    "verdictAt": None if result.completed_at is None else format_instant(result.completed_at),
                    **self._run_json(run, result.timeline),
                }
            )
            return
        self.out.write(
            f"Backtest of {', '.join(self.request.template_names)}, replayed as if started at "
            f"{format_instant(result.started_at)}, until {format_instant(result.until)}\n"
        )
        queries: dict[str, str] = {}
        for entry in result.timeline:
            queries.setdefault(entry.metric, self.mask(_one_line(entry.measurement.query)))
        for metric, query in queries.items():
            if query:
                self.out.write(f"  {metric}: {query}\n")
        self.out.write("\n")
        for line in self._timeline(result.timeline):
            self.out.write(f"{line}\n")
        if not result.timeline:
            self.out.write("no measurement was taken\n")
        self.out.write("\n")
        if result.completed_at is not None and run.phase.completed and result.timeline:
            after = format_duration(result.completed_at - result.started_at)
            self.out.write(
                f"Verdict: {run.phase.value} at {format_instant(result.completed_at)} "
                f"({after} after the start)"
                f"{self._why(run)}\n"
            )
        else:
            self.out.write(
                f"Verdict: {run.phase.value} when stopped at {format_instant(result.until)} "
                "(no verdict before)"
                f"{self._why(run)}\n"
            )
        for result_of in run.results:
            self.out.write(f"  {result_of.name}: {result_of.phase.value}{self._counts(result_of.counts)}\n")

    def _timeline(self, timeline: Sequence[TimedMeasurement]) -> Iterator[str]:
        """Each measurement; a streak of Successful ones of a metric as one line."""
        streaks: dict[str, list[TimedMeasurement]] = {}

        def flush(metric: str) -> Iterator[str]:
            streak = streaks.pop(metric, [])
            if len(streak) >= _COLLAPSE_AT:
                values = [v for e in streak if (v := plotted_value(e.measurement.value)) is not None]
                first, last = streak[0].measurement.finished_at, streak[-1].measurement.finished_at
                span = f"{format_instant(first)} .. {format_instant(last)}"
                shown = f"  values {min(values):.6g} .. {max(values):.6g}" if values else ""
                yield f"{span}  {metric}  ✔ {len(streak)} Successful in a row{shown}"
            else:
                yield from (self._line(e) for e in streak)

        for entry in timeline:
            if entry.measurement.phase == AnalysisPhase.SUCCESSFUL:
                streaks.setdefault(entry.metric, []).append(entry)
                continue
            yield from flush(entry.metric)
            yield self._line(entry)
        for metric in list(streaks):
            yield from flush(metric)

    def backtests_result(self, replays: Sequence[Replay], summary: Summary, duration: float) -> None:
        if not self.text:
            self._json(_summary_json(replays, summary, self.request, duration, self.mask))
            return
        first, last = replays[0].started_at, replays[-1].started_at
        every = format_duration(self.request.every or 0)
        self.out.write(
            f"{len(replays)} replays of {', '.join(self.request.template_names)}, one every {every}, each "
            f"{format_duration(duration)} long, starting {format_instant(first)} .. {format_instant(last)}\n"
        )
        counts = [(phase, summary.count(phase)) for phase in EXIT_CODES]
        self.out.write("  " + " · ".join(f"{phase.value} {n}" for phase, n in counts) + "\n\n")
        healthy = "healthy periods" if self.request.incidents else "the whole range, taken as healthy"
        rate = summary.false_rollback_rate
        shown_rate = "n/a" if rate is None else f"{rate:.1%}"
        self.out.write(
            f"On {healthy}: {len(summary.false_rollbacks)} of {len(summary.healthy)} replays would have "
            "rolled "
            f"back a healthy release (false-rollback rate {shown_rate})\n"
        )
        for outcome in summary.false_rollbacks:
            self.out.write(f"  {self._outcome_line(outcome)}\n")
        for incident in summary.incidents:
            period = f"{format_instant(incident.incident.start)} .. {format_instant(incident.incident.end)}"
            self.out.write(
                f"Incident {period}: {len(incident.replays)} replays overlap it, {len(incident.detected)} "
                f"detected it, {incident.missed} missed it"
                + (f", {len(incident.early)} rolled back before it began" if incident.early else "")
                + "\n"
            )
            if incident.delays:
                self.out.write(
                    f"  detection delay: min {format_duration(min(incident.delays))}, median "
                    f"{format_duration(incident.median_delay or 0)}, "
                    f"max {format_duration(max(incident.delays))}\n"
                )
            for outcome in incident.replays:
                self.out.write(f"  {self._outcome_line(outcome)}\n")
        self.out.write("\nREPLAY START          PHASE         VERDICT\n")
        for outcome in summary.replays:
            verdict = (
                f"at {format_instant(outcome.completed_at)}"
                if outcome.completed_at is not None
                else f"stopped at {format_instant(outcome.until)}"
            )
            self.out.write(f"{format_instant(outcome.start)}  {outcome.phase.value:<12}  {verdict}\n")

    def _outcome_line(self, outcome: ReplayOutcome) -> str:
        when = format_instant(outcome.ended_at)
        message = f": {self.mask(outcome.message)}" if outcome.message and outcome.rolled_back else ""
        return f"replay from {format_instant(outcome.start)}: {outcome.phase.value} at {when}{message}"

    # JSON

    def _run_json(self, run: AnalysisRun, timeline: Sequence[TimedMeasurement]) -> dict[str, Any]:
        return {
            "templates": list(self.request.template_names),
            "args": {k: self.mask(v) for k, v in run.args.items()},
            "measurements": [_measurement_json(e, self.mask) for e in timeline],
            "phase": run.phase.value,
            "message": self.mask(run.message),
            "metrics": [
                {
                    "name": result.name,
                    "phase": result.phase.value,
                    "message": self.mask(result.message),
                    **{_camel(k): v for k, v in dataclasses.asdict(result.counts).items()},
                }
                for result in run.results
            ],
        }

    def _json(self, document: Mapping[str, Any]) -> None:
        json.dump(document, self.out, indent=2, allow_nan=True)
        self.out.write("\n")


def _measurement_json(entry: TimedMeasurement, mask: Callable[[str], str]) -> dict[str, Any]:
    m = entry.measurement
    return {
        "time": format_instant(m.finished_at),
        "metric": entry.metric,
        "phase": m.phase.value,
        "value": _json_value(m.value),
        "query": mask(m.query),
        "message": mask(m.message),
    }


def _json_value(value: Any) -> Any:
    """NaN and infinities as Prometheus writes them (JSON has no such numbers)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return value_excerpt(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _summary_json(
    replays: Sequence[Replay], summary: Summary, request: Request, duration: float, mask: Callable[[str], str]
) -> dict[str, Any]:
    def outcome(o: ReplayOutcome) -> dict[str, Any]:
        return {
            "start": format_instant(o.start),
            "until": format_instant(o.until),
            "phase": o.phase.value,
            "verdictAt": None if o.completed_at is None else format_instant(o.completed_at),
            "message": mask(o.message),
        }

    return {
        "mode": "backtests",
        "templates": list(request.template_names),
        "every": format_duration(request.every or 0),
        "duration": format_duration(duration),
        "replays": [
            {**outcome(o), "measurements": [_measurement_json(e, mask) for e in r.timeline]}
            for o, r in zip(summary.replays, replays, strict=True)
        ],
        "counts": {phase.value: summary.count(phase) for phase in EXIT_CODES},
        "healthy": len(summary.healthy),
        "falseRollbacks": [outcome(o) for o in summary.false_rollbacks],
        "falseRollbackRate": summary.false_rollback_rate,
        "incidents": [
            {
                "start": format_instant(report.incident.start),
                "end": format_instant(report.incident.end),
                "replays": len(report.replays),
                "detected": len(report.detected),
                "missed": report.missed,
                "early": len(report.early),
                "detectionDelaysSeconds": list(report.delays),
                "medianDetectionDelaySeconds": report.median_delay,
            }
            for report in summary.incidents
        ],
        "asExpected": summary.as_expected,
    }


def _shown_value(value: Any) -> str:
    """A measured value for a terminal: numbers to 10 significant digits (0.98, not
    0.9800000000000001), anything else as JSON, cut to 60 characters."""

    def number(v: Any) -> str | None:
        if isinstance(v, float) and v == v and v not in (float("inf"), float("-inf")):
            return f"{v:.10g}"
        return None

    if (shown := number(value)) is not None:
        return shown
    if isinstance(value, list) and value and all(number(v) is not None for v in value):
        text = "[" + ", ".join(number(v) or "" for v in value) + "]"
        return text if len(text) <= 60 else value_excerpt(value, 60)
    return value_excerpt(value, 60)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _one_line(text: str) -> str:
    return " ".join(text.split())
