"""Durations as Argo writes them: seconds, or Go-style `1h30m`."""

from __future__ import annotations

import math

import pytest

from meshshift.spec.durations import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("0", 0.0),
        ("45s", 45.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1m500ms", 60.5),
        ("720h", MAX_DURATION),
        (MAX_DURATION, MAX_DURATION),
    ],
)
def test_valid_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "negative"),
        ("-5s", "negative"),
        ("-30", "negative"),
        ("", "empty"),
        ("   ", "empty"),
        ("5 minutes", "no spaces"),
        ("5 m", "no spaces"),
        ("1d", '"d" unit'),
        ("2w", "not a duration"),
        ("10us", "not a duration"),
        ("1.5", "whole seconds"),
        ("m", "not a duration"),
        ("5m ", "not a duration"),
        ("٣٠", "not a duration"),  # Arabic-Indic digits are not seconds
        (True, "boolean"),
        (False, "boolean"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (None, "number or a string"),
        ([30], "number or a string"),
        (MAX_DURATION + 1, "longer than 30 days"),
        ("721h", "longer than 30 days"),
        ("99999999999999999999h", "longer than 30 days"),
    ],
)
def test_invalid_durations(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (30, "30s"), (60, "1m"), (90, "1m30s"), (3600, "1h"), (5415, "1h30m15s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
