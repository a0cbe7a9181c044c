"""`meshshift analyze --plot FILE.png|svg`: a backtest drawn, one panel per metric.

Each panel shows what the analysis saw over time (each replay's measurements, a line per replay,
a marker per measurement coloured by its phase, errors as marks on the axis since they have no
value), the fixed thresholds of the metric's conditions as dashed lines (analysis.expr.thresholds),
each replay's verdict as a vertical line (red Failed, orange Error, grey Inconclusive; a passing
verdict is not drawn), and the incidents given as shaded spans.

matplotlib (the `plot` extra: `pip install 'meshshift[plot]'`) is imported only here, with its
non-interactive Agg backend, so the daemon never needs it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from meshshift.analysis.backtest import Period
from meshshift.analysis.expr.thresholds import thresholds
from meshshift.spec.model import AnalysisPhase, Metric

if TYPE_CHECKING:
    from meshshift.runtime.replay import Replay

PHASE_COLOURS = {
    AnalysisPhase.SUCCESSFUL: "#2e7d32",
    AnalysisPhase.FAILED: "#c62828",
    AnalysisPhase.ERROR: "#ef6c00",
    AnalysisPhase.INCONCLUSIVE: "#757575",
    AnalysisPhase.RUNNING: "#1565c0",
}
FIGURE_WIDTH = 10.0  # inches, at DPI: a small PNG
PANEL_HEIGHT = 2.4
DPI = 100


class PlotUnavailableError(Exception):
    """matplotlib is not installed."""


def plotted_value(value: Any) -> float | None:
    """The number drawn for a measured value: a scalar, or a vector's first element."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _time(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def plot_backtest(
    replays: Sequence[Replay],
    path: str,
    *,
    title: str,
    incidents: Sequence[Period] = (),
    mask: Callable[[str], str] = lambda text: text,
) -> None:
    """Draw `replays` into `path` (PNG or SVG, from its suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in an SVG: smaller, searchable
        matplotlib.rcParams["svg.hashsalt"] = "meshshift"  # the same picture gives the same file
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed: pip install 'meshshift[plot]' "
            "(or pip install 'matplotlib>=3.8')"
        ) from None
    metrics = _metrics(replays)
    figure, axes = plt.subplots(
        len(metrics) or 1,
        1,
        sharex=True,
        figsize=(FIGURE_WIDTH, PANEL_HEIGHT * max(1, len(metrics)) + 0.8),
        dpi=DPI,
        squeeze=False,
    )
    panels = [row[0] for row in axes]
    for panel, metric in zip(panels, metrics, strict=False):
        _draw_metric(panel, metric, replays, incidents, mask)
    _legend(figure, replays, incidents)
    locator = mdates.AutoDateLocator(tz=datetime.UTC)  # type: ignore[no-untyped-call]
    panels[-1].xaxis.set_major_locator(locator)
    panels[-1].xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator, tz=datetime.UTC)  # type: ignore[no-untyped-call]
    )
    panels[-1].set_xlabel("time (UTC)")
    figure.suptitle(_title(title, replays), fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 1))  # room for the legend below
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _legend(figure: Any, replays: Sequence[Replay], incidents: Sequence[Period]) -> None:
    """What the marks mean, for those the picture holds."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Line2D([], [], color="#1565c0", lw=1, label="measured value")]
    phases = {e.measurement.phase for r in replays for e in r.timeline}
    failed, error = PHASE_COLOURS[AnalysisPhase.FAILED], PHASE_COLOURS[AnalysisPhase.ERROR]
    if AnalysisPhase.FAILED in phases:
        handles.append(Line2D([], [], marker="o", ls="", color=failed, label="failed measurement"))
    if AnalysisPhase.ERROR in phases:
        handles.append(Line2D([], [], marker="x", ls="", color=error, label="error (no value)"))
    verdicts = {r.run.phase for r in replays}
    for phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE):
        if phase in verdicts:
            handles.append(Line2D([], [], color=PHASE_COLOURS[phase], lw=1.2, label=f"run {phase.value}"))
    handles.append(Line2D([], [], color="#424242", ls="--", lw=1, label="condition's threshold"))
    if incidents:
        handles.append(Patch(color="#c62828", alpha=0.15, label="incident"))
    figure.legend(handles=handles, loc="lower center", fontsize=8, frameon=False, ncol=len(handles))


def _metrics(replays: Sequence[Replay]) -> list[Metric]:
    seen: dict[str, Metric] = {}
    for result in replays:
        for metric in result.run.metrics:
            seen.setdefault(metric.name, metric)
    return list(seen.values())


def _title(title: str, replays: Sequence[Replay]) -> str:
    verdicts: dict[str, int] = {}
    for result in replays:
        verdicts[result.run.phase.value] = verdicts.get(result.run.phase.value, 0) + 1
    counted = ", ".join(f"{n} {phase}" for phase, n in sorted(verdicts.items()))
    noun = "replay" if len(replays) == 1 else "replays"
    return f"backtest of {title}: {len(replays)} {noun} ({counted})"


def _draw_metric(
    panel: Any,
    metric: Metric,
    replays: Sequence[Replay],
    incidents: Sequence[Period],
    mask: Callable[[str], str],
) -> None:
    for period in incidents:
        panel.axvspan(_time(period.start), _time(period.end), color="#c62828", alpha=0.08, lw=0)
    values: list[float] = []
    for result in replays:
        points = [
            (entry.measurement.finished_at, entry.measurement.phase, plotted_value(entry.measurement.value))
            for entry in result.timeline
            if entry.metric == metric.name and entry.measurement.phase != AnalysisPhase.RUNNING
        ]
        drawn = [(t, phase, v) for t, phase, v in points if v is not None]
        values.extend(v for _, _, v in drawn)
        if drawn:
            panel.plot(
                [_time(t) for t, _, _ in drawn], [v for _, _, v in drawn], color="#1565c0", lw=1, zorder=2
            )
            for phase in (AnalysisPhase.FAILED, AnalysisPhase.INCONCLUSIVE):
                marked = [(t, v) for t, p, v in drawn if p == phase]
                if marked:
                    panel.scatter(
                        [_time(t) for t, _ in marked],
                        [v for _, v in marked],
                        s=14,
                        color=PHASE_COLOURS[phase],
                        zorder=3,
                    )
        errors = [t for t, phase, v in points if phase == AnalysisPhase.ERROR or v is None]
        if errors:
            panel.scatter(
                [_time(t) for t in errors],
                [0] * len(errors),
                marker="x",
                s=18,
                color=PHASE_COLOURS[AnalysisPhase.ERROR],
                transform=panel.get_xaxis_transform(),
                clip_on=False,
                zorder=3,
            )
        if result.run.phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE):
            panel.axvline(
                _time(result.completed_at or result.until), color=PHASE_COLOURS[result.run.phase], lw=1.2
            )
    for condition, style in ((metric.success_condition, "--"), (metric.failure_condition, ":")):
        for threshold in thresholds(condition or ""):
            panel.axhline(threshold.value, color="#424242", ls=style, lw=1)
            panel.annotate(
                f"result {threshold.operator} {threshold.value:g}",
                xy=(1.0, threshold.value),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
                color="#424242",
            )
            values.append(threshold.value)
    if values:
        low, high = min(values), max(values)
        pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
        panel.set_ylim(low - pad, high + pad)
    panel.set_ylabel(mask(metric.name), fontsize=9)
    panel.grid(True, alpha=0.3)
