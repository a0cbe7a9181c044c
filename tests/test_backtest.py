"""The pure parts of `meshshift analyze`'s backtests: times on the command line, replay windows, the
summary of a series of replays, NRQL moved to a past time, thresholds drawn from conditions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshshift.analysis.backtest import Period, ReplayOutcome, replay_starts, summarise
from meshshift.analysis.expr.thresholds import Threshold, thresholds
from meshshift.analysis.providers.templating import nrql_at
from meshshift.cli.main import _join_time_offsets
from meshshift.spec.durations import format_instant, parse_instant
from meshshift.spec.model import AnalysisPhase

NOW = parse_instant("2026-12-02T10:00:00Z", now=0)
HOUR = 3600.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", NOW - 24 * HOUR),
        ("2026-12-01T12:00:00+02:00", NOW - 24 * HOUR),
        ("2026-12-01T10:00:00.5Z", NOW - 24 * HOUR + 0.5),
        ("1796119200", 1796119200.0),
        ("-2h", NOW - 2 * HOUR),
        ("-1h30m", NOW - 1.5 * HOUR),
        ("-7d", NOW - 7 * 24 * HOUR),
        ("-1w", NOW - 7 * 24 * HOUR),
        ("+15m", NOW + 900),
        ("now", NOW),
    ],
)
def test_times_on_the_command_line(text: str, expected: float) -> None:
    assert parse_instant(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-12-01T10:00:00", "has no time zone"),
        ("yesterday", "is not a time"),
        ("-2x", "is not a time"),
        ("", "cannot be empty"),
        ("12/01/2026", "is not a time"),
    ],
)
def test_what_is_not_a_time_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as error:
        parse_instant(text, now=NOW)
    assert "RFC 3339" in str(error.value) or "time zone" in str(error.value)


def test_instants_are_printed_in_utc() -> None:
    assert format_instant(NOW) == "2026-12-02T10:00:00Z"
    assert format_instant(NOW + 0.25) == "2026-12-02T10:00:00.250Z"
    assert parse_instant(format_instant(NOW + 0.25), now=0) == NOW + 0.25


def test_an_offset_after_a_time_option_is_its_value() -> None:
    assert _join_time_offsets(["analyze", "f.yaml", "--from", "-2h", "--to", "-1h", "--arg", "-x"]) == [
        "analyze",
        "f.yaml",
        "--from=-2h",
        "--to=-1h",
        "--arg",
        "-x",
    ]
    assert _join_time_offsets(["analyze", "--from", "--once"]) == ["analyze", "--from", "--once"]


def test_replays_start_every_interval_while_their_window_fits() -> None:
    assert replay_starts(0, 10 * HOUR, 2 * HOUR, HOUR) == [0, 2 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR]
    assert replay_starts(0, 10 * HOUR, 2 * HOUR, 2 * HOUR) == [0, 2 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR]
    assert replay_starts(0, 10 * HOUR, 2 * HOUR, 3 * HOUR) == [0, 2 * HOUR, 4 * HOUR, 6 * HOUR]
    assert replay_starts(0, HOUR, 2 * HOUR, 2 * HOUR) == []
    with pytest.raises(ValueError):
        replay_starts(0, HOUR, 0, HOUR)


def outcome(start: float, phase: AnalysisPhase, verdict: float | None, length: float = HOUR) -> ReplayOutcome:
    return ReplayOutcome(start, start + length, phase, verdict)


def test_the_summary_separates_healthy_periods_from_incidents() -> None:
    ok, failed, error = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED, AnalysisPhase.ERROR
    incident = Period(10 * HOUR, 11 * HOUR)
    outcomes = [
        outcome(0, ok, None),
        outcome(2 * HOUR, failed, 2.5 * HOUR),  # healthy: a false rollback
        outcome(4 * HOUR, AnalysisPhase.INCONCLUSIVE, 4.2 * HOUR),  # paused, not rolled back
        outcome(6 * HOUR, error, None),  # stopped at its end in Error: rolled back
        outcome(8 * HOUR, ok, None),
        outcome(9.5 * HOUR, failed, 9.9 * HOUR),  # overlaps, but before the incident: early
        outcome(10 * HOUR, failed, 10.1 * HOUR),  # detected in 6 minutes
        outcome(10.5 * HOUR, error, 10.75 * HOUR),  # detected 15 minutes after its own start
        outcome(10.75 * HOUR, ok, None),  # overlaps: missed
        outcome(12 * HOUR, ok, None),
    ]
    summary = summarise(outcomes, [incident])
    assert summary.count(ok) == 4 and summary.count(failed) == 3 and summary.count(error) == 2
    assert [o.start for o in summary.healthy] == [0, 2 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR, 12 * HOUR]
    assert [o.start for o in summary.false_rollbacks] == [2 * HOUR, 6 * HOUR]
    assert summary.false_rollback_rate == pytest.approx(2 / 6)
    (report,) = summary.incidents
    assert [o.start for o in report.replays] == [9.5 * HOUR, 10 * HOUR, 10.5 * HOUR, 10.75 * HOUR]
    assert [o.start for o in report.detected] == [10 * HOUR, 10.5 * HOUR]
    assert [o.start for o in report.early] == [9.5 * HOUR]
    assert report.missed == 1
    assert report.delays == pytest.approx((360.0, 900.0))
    assert report.median_delay == pytest.approx(630.0)
    assert not summary.as_expected


def test_a_summary_is_as_expected_only_without_false_rollbacks_and_with_each_incident_caught() -> None:
    ok, failed = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED
    incident = Period(10 * HOUR, 11 * HOUR)
    caught = [outcome(0, ok, None), outcome(10 * HOUR, failed, 10.1 * HOUR)]
    assert summarise(caught, [incident]).as_expected
    missed = [outcome(0, ok, None), outcome(10 * HOUR, ok, None)]
    assert not summarise(missed, [incident]).as_expected
    assert summarise([outcome(0, ok, None)]).as_expected
    assert summarise([]).false_rollback_rate is None


@pytest.mark.parametrize(
    ("nrql", "expected"),
    [
        (
            "SELECT apdex(duration) FROM Transaction WHERE appName = 'shop'",
            "SELECT apdex(duration) FROM Transaction WHERE appName = 'shop' "
            "SINCE 1796115600000 UNTIL 1796119200000",
        ),
        (
            "SELECT count(*) FROM Transaction SINCE 30 minutes ago",
            "SELECT count(*) FROM Transaction SINCE 1796117400000 UNTIL 1796119200000",
        ),
        (
            "SELECT count(*) FROM Transaction since 2 HOURS AGO until 1 hour ago TIMESERIES",
            "SELECT count(*) FROM Transaction SINCE 1796112000000 UNTIL 1796115600000 TIMESERIES",
        ),
        (
            "SELECT count(*) FROM Transaction WHERE name = 'SINCE 5 minutes ago' SINCE 1 day ago",
            "SELECT count(*) FROM Transaction WHERE name = 'SINCE 5 minutes ago' SINCE 1796032800000 "
            "UNTIL 1796119200000",
        ),
    ],
)
def test_nrql_is_moved_to_the_measurement_time(nrql: str, expected: str) -> None:
    assert nrql_at(nrql, 1796119200.0) == expected


@pytest.mark.parametrize(
    "nrql",
    [
        "SELECT count(*) FROM Transaction SINCE today",
        "SELECT count(*) FROM Transaction SINCE 1796032800000",
        "SELECT count(*) FROM Transaction SINCE '2026-12-01 10:00:00'",
        "SELECT count(*) FROM Transaction -- a comment at the end",
    ],
)
def test_nrql_with_a_window_that_cannot_move_is_refused(nrql: str) -> None:
    with pytest.raises(ValueError, match=r"cannot be replayed|ends inside a comment"):
        nrql_at(nrql, 1796119200.0)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("result[0] >= 0.95", [Threshold(">=", 0.95)]),
        ("result <= 500", [Threshold("<=", 500.0)]),
        ("0.9 < result[0]", [Threshold(">", 0.9)]),
        ("len(result) > 0 && result[0] < -1.5", [Threshold("<", -1.5)]),
        ("result[0] >= 0.9 || result[0] == 0", [Threshold(">=", 0.9), Threshold("==", 0.0)]),
        ("result[1] > 3", []),
        ('result == "healthy"', []),
        ("all(result, {# > 1})", []),
        ("not valid (", []),
    ],
)
def test_the_thresholds_a_plot_draws(condition: str, expected: list[Threshold]) -> None:
    assert sorted(thresholds(condition), key=lambda t: t.operator) == sorted(
        expected, key=lambda t: t.operator
    )


def test_the_command_line_knows_every_builtin_mesh() -> None:
    from meshshift.analysis.providers.builtin import MESHES
    from meshshift.cli.main import BUILTIN_MESHES

    assert BUILTIN_MESHES == MESHES


def test_without_matplotlib_the_plot_says_how_to_get_it(tmp_path: Path) -> None:
    # A Python where matplotlib cannot be imported (as in the daemon's image).
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from meshshift.cli.plot import PlotUnavailableError, plot_backtest\n"
        "try:\n"
        f"    plot_backtest([], {str(tmp_path / 'x.png')!r}, title='t')\n"
        "except PlotUnavailableError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "--plot needs matplotlib, which is not installed: pip install 'meshshift[plot]'" in result.stdout
    assert not (tmp_path / "x.png").exists()
