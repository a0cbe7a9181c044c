"""Cumulative counters read raw, turned into increases that survive resets.

A counter of a pod (or of an Envoy) starts again at 0 when the process restarts. Between
two readings of the same series, a value lower than the previous one means the series was
reset, and its whole new value counts (what was counted between the previous reading and
the reset is lost, on every series of that process alike, so it biases no side). A series
that appears after the first reading (a new pod, a first 5xx) counts from 0. A series that
disappears keeps its last value, so that it is neither double counted nor lost when it
comes back.

Pure code: readings in, increases out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Advance:
    increases: dict[str, float]  # series key -> increase since the previous reading
    last: dict[str, float]  # what to compare the next reading with
    resets: tuple[str, ...]  # the series that were reset


def advance(last: Mapping[str, float], current: Mapping[str, float]) -> Advance:
    """The increase of every series of `current` since `last` (a reading of the same series)."""
    increases: dict[str, float] = {}
    resets: list[str] = []
    kept = dict(last)
    for key, value in current.items():
        if value != value or value < 0:  # NaN or negative: not a counter reading; skip it
            continue
        before = last.get(key)
        if before is None:
            increases[key] = value
        elif value < before:
            increases[key] = value
            resets.append(key)
        else:
            increases[key] = value - before
        kept[key] = value
    return Advance(increases, kept, tuple(sorted(resets)))
