"""What `meshshift demo` shows while it runs, and the summary it ends with.

On a terminal: a live panel (rich) with the step, the desired, applied and observed
canary weights, the analysis values and the request counts. Elsewhere (a pipe, CI): one
plain line each time the step, the phase, the weight or an analysis value changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from meshshift.demo.load import LoadStats
from meshshift.observe.status import (
    applied_weight,
    describe_step,
    numeric_value,
    revision_weight,
    step_position,
)
from meshshift.runtime.controller import RolloutSnapshot
from meshshift.spec.model import AnalysisPhase

CANARY, STABLE = "canary", "stable"


@dataclass(frozen=True, slots=True)
class MetricView:
    name: str
    value: float | None
    phase: str
    measured: int

    def text(self) -> str:
        shown = "-" if self.value is None else f"{self.value:.3g}"
        return f"{self.name} {shown} ({self.phase}, {self.measured} measured)"


@dataclass(frozen=True, slots=True)
class DemoView:
    elapsed: float
    phase: str
    step: str  # "3/13"
    step_text: str  # "pause: {duration: 3s}"
    message: str
    desired: int
    applied: int | None
    observed: float | None  # canary share of the weighted traffic over the last seconds
    header_share: float | None  # canary share of the requests carrying the header
    metrics: tuple[MetricView, ...] = ()
    requests: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    qa_label: str = "X-Canary: true"  # blue-green: the testers' traffic is the preview's

    def line(self) -> str:
        observed = "-" if self.observed is None else f"{self.observed * 100:.0f}%"
        applied = "-" if self.applied is None else f"{self.applied}%"
        where = f"step {self.step} {self.step_text}" if self.step else self.step_text
        parts = [
            f"[{self.elapsed:5.1f}s] {self.phase:<11} {where}",
            f"weight desired {self.desired}% applied {applied} observed {observed}",
        ]
        if self.metrics:
            parts.append("; ".join(m.text() for m in self.metrics))
        return " | ".join(parts)

    def key(self) -> tuple[object, ...]:
        """What must change for the plain output to print a new line."""
        return (
            self.phase,
            self.step,
            self.desired,
            self.applied,
            tuple((m.name, m.measured, m.phase) for m in self.metrics),
        )


def latest_metrics(snapshot: RolloutSnapshot) -> tuple[MetricView, ...]:
    """The metrics of the newest analysis run, with their last measured value."""
    state = snapshot.state
    if state is None:
        return ()
    for record in reversed(state.current_runs()):
        run = snapshot.analysis_runs.get(record.name)
        if run is None:
            continue
        views = []
        for result in run.results:
            last = result.measurements[-1] if result.measurements else None
            value = numeric_value(last.value) if last is not None else None
            views.append(MetricView(result.name, value, result.phase.value, len(result.measurements)))
        return tuple(views)
    return ()


def build_view(
    snapshot: RolloutSnapshot,
    *,
    elapsed: float,
    load: LoadStats,
    header: LoadStats,
    window_start: float,
    qa_label: str = "X-Canary: true",
) -> DemoView:
    state = snapshot.state
    applied = applied_weight(snapshot)
    position = step_position(snapshot)
    steps = snapshot.spec.steps if snapshot.spec is not None else ()
    index = state.step_index if state is not None else 0
    step_text = describe_step(steps[index]) if state is not None and index < len(steps) else ""
    blue_green = snapshot.spec is not None and snapshot.spec.blue_green is not None
    step = str(position)
    if blue_green:
        step, step_text = "", state.stage.value if state is not None else ""  # Preview, Switching, ...
    return DemoView(
        elapsed=elapsed,
        phase=state.phase.value if state is not None else "Starting",
        step=step,
        step_text=step_text,
        message=(state.message if state is not None else "") or "",
        # The new revision's share, as `get` and the metrics count it (100 once promoted), so
        # desired and applied read the same as observed, which counts the new version's answers.
        desired=revision_weight(snapshot, state.desired_weight) if state is not None else 0,
        applied=None if applied is None else revision_weight(snapshot, applied),
        observed=load.share(CANARY, since=window_start),
        header_share=header.share(CANARY, since=window_start),
        metrics=latest_metrics(snapshot),
        requests=dict(load.requests),
        failed=dict(load.failures + header.failures),  # QA's X-Canary requests count too
        qa_label=qa_label,
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def render_view(view: DemoView, title: str) -> Table:
    table = Table(title=title, show_header=False, expand=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("elapsed", f"{view.elapsed:.1f}s")
    table.add_row("phase", f"{view.phase}: {view.message}")
    table.add_row("step" if view.step else "stage", f"{view.step}  {view.step_text}".strip())
    table.add_row(
        "canary weight",
        f"desired {view.desired}%   applied {view.applied if view.applied is not None else '-'}%   "
        f"observed {_percent(view.observed)} (last 2 s of traffic)",
    )
    table.add_row(view.qa_label, f"{_percent(view.header_share)} reach the canary")
    metrics = Text()
    for metric in view.metrics:
        style = {AnalysisPhase.SUCCESSFUL.value: "green", AnalysisPhase.FAILED.value: "red"}.get(metric.phase)
        metrics.append(metric.text() + "\n", style=style)
    table.add_row("analysis", metrics if view.metrics else "-")
    counts = ", ".join(
        f"{version} {count} ({view.failed.get(version, 0)} failed)"
        for version, count in sorted(view.requests.items())
    )
    table.add_row("requests", counts or "-")
    return table


class ProgressDisplay:
    """Live on a terminal, one line per change elsewhere."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.live: Live | None = None
        self._last_key: tuple[object, ...] | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, error, trace)
            self.live = None

    def show(self, view: DemoView) -> None:
        if self.live is not None:
            self.live.update(render_view(view, self.title))
            return
        key = view.key()
        if key != self._last_key:
            self._last_key = key
            self.console.print(view.line(), highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    router: str
    outcome: str  # Promoted, Aborted, or what happened instead
    expected: str
    decision_seconds: float | None  # from the first canary request to the decision
    requests: dict[str, int]
    failed: dict[str, int]
    header_requests: dict[str, int]
    after: dict[str, int]  # versions answering in the seconds after the decision
    metrics_source: str
    evidence: tuple[str, ...] = ()  # the sequential judges at the decision
    # Blue-green: the preview listener's answers, the switch, the switch back.
    strategy: str = "canary"
    preview_requests: dict[str, int] = field(default_factory=dict)
    preview_failed: dict[str, int] = field(default_factory=dict)
    switch_seconds: float | None = None  # from the first preview request to the first user one switched
    switch_back_seconds: float | None = None  # from the failed post-promotion measurement
    spare_users: bool = False  # the scenario is caught before the switch: no user request may fail

    @property
    def as_expected(self) -> bool:
        users_failed = sum(self.failed.values())
        return self.outcome == self.expected and not (self.spare_users and users_failed > 0)

    def lines(self) -> Iterator[str]:
        if self.strategy == "blue-green":
            yield from self._blue_green_lines()
            return
        verdict = "as expected" if self.as_expected else f"UNEXPECTED (expected {self.expected})"
        meaning = {
            "Promoted": "the canary is the new stable: all traffic goes to it",
            "Aborted": "rolled back: all traffic goes to the stable",
        }.get(self.outcome, "")
        yield f"outcome:            {self.outcome}, {verdict}" + (f"; {meaning}" if meaning else "")
        if self.decision_seconds is not None:
            yield f"time to decision:   {self.decision_seconds:.1f} s after the first canary request"
        yield f"requests:           {_counts(self.requests)}"
        yield f"failed requests:    {sum(self.failed.values())} ({_counts(self.failed) or 'none'})"
        if self.header_requests:
            yield f"X-Canary: true:     {_counts(self.header_requests)}"
        if self.after:
            yield f"after the decision: {_counts(self.after)}"
        yield f"analysis metrics:   {self.metrics_source}"
        for index, line in enumerate(self.evidence):
            yield f"{'judge at decision:' if index == 0 else '':<20}{line}"

    def _blue_green_lines(self) -> Iterator[str]:
        failed_users = sum(self.failed.values())
        if self.as_expected:
            verdict = "as expected"
        elif self.outcome == self.expected:
            verdict = f"UNEXPECTED ({failed_users} user requests failed; none may)"
        else:
            verdict = f"UNEXPECTED (expected {self.expected})"
        meaning = {
            "Promoted": "the new revision is the stable: all user traffic goes to it",
            "Aborted": "all user traffic is on the stable",
        }.get(self.outcome, "")
        yield f"outcome:            {self.outcome}, {verdict}" + (f"; {meaning}" if meaning else "")
        if self.decision_seconds is not None:
            yield f"time to decision:   {self.decision_seconds:.1f} s after the first preview request"
        if self.switch_seconds is not None:
            yield f"switch:             users on it {self.switch_seconds:.1f} s after the first QA request"
        if self.switch_back_seconds is not None:
            yield (
                f"switch back:        {self.switch_back_seconds * 1000:.0f} ms from the failed "
                "post-promotion measurement to the users' first request on the stable"
            )
        yield f"active listener:    {_counts(self.requests)} (users)"
        yield f"preview listener:   {_counts(self.preview_requests) or 'none'} (QA)"
        yield f"failed user requests: {failed_users} ({_counts(self.failed) or 'none'})"
        qa_failed = sum(self.preview_failed.values())
        yield f"failed QA requests: {qa_failed} ({_counts(self.preview_failed) or 'none'})"
        if self.after:
            yield f"after the decision: {_counts(self.after)}"
        yield f"analysis metrics:   {self.metrics_source}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{version} {count}" for version, count in sorted(counts.items()))


def print_summary(console: Console, summary: Summary, extra: Sequence[str] = ()) -> None:
    console.rule(f"meshshift demo: {summary.scenario} on {summary.router}")
    for line in summary.lines():
        console.print(line, highlight=False, soft_wrap=True)
    for line in extra:
        console.print(line, highlight=False, soft_wrap=True)
