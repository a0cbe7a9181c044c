"""What a series of replays over history says about a template (`meshshift analyze --every`).

Pure: it is handed each replay's window and outcome and the incidents the user names, and
counts. A replay *rolls back* when its run ends Failed or Error (both abort a rollout;
Inconclusive pauses it for a human). A replay whose window [start, until] overlaps no
incident ran on a healthy period, so rolling back there is a false rollback. A replay
overlapping an incident detects it when it rolls back at or after the incident's start; the
detection delay runs from the later of the incident's start and the replay's start.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from meshshift.spec.model import AnalysisPhase


@dataclass(frozen=True, slots=True)
class Period:
    """An incident: from `start` to `end` (Unix seconds)."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    start: float
    until: float  # the end of its window
    phase: AnalysisPhase
    # Its verdict; None: still running at `until`, where it was stopped (and took its phase then).
    completed_at: float | None
    message: str = ""

    @property
    def rolled_back(self) -> bool:
        return self.phase.blocks_rollout

    @property
    def ended_at(self) -> float:
        return self.until if self.completed_at is None else self.completed_at

    def overlaps(self, period: Period) -> bool:
        return self.start < period.end and self.until > period.start


@dataclass(frozen=True, slots=True)
class IncidentReport:
    incident: Period
    replays: tuple[ReplayOutcome, ...]  # those overlapping it
    detected: tuple[ReplayOutcome, ...]
    early: tuple[ReplayOutcome, ...]  # rolled back before it began: a false rollback too
    delays: tuple[float, ...]  # of the detections, seconds

    @property
    def missed(self) -> int:
        return len(self.replays) - len(self.detected) - len(self.early)

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass(frozen=True, slots=True)
class Summary:
    replays: tuple[ReplayOutcome, ...]
    healthy: tuple[ReplayOutcome, ...]  # overlapping no incident
    false_rollbacks: tuple[ReplayOutcome, ...]  # of the healthy ones
    incidents: tuple[IncidentReport, ...]

    def count(self, phase: AnalysisPhase) -> int:
        return sum(outcome.phase == phase for outcome in self.replays)

    @property
    def false_rollback_rate(self) -> float | None:
        return len(self.false_rollbacks) / len(self.healthy) if self.healthy else None

    @property
    def as_expected(self) -> bool:
        """No false rollback, and every incident detected by at least one replay."""
        return not self.false_rollbacks and all(
            report.detected and not report.early for report in self.incidents
        )


def replay_starts(start: float, end: float, every: float, duration: float) -> list[float]:
    """The starts of replays every `every` seconds from `start` whose whole window of `duration`
    fits before `end`."""
    if every <= 0 or duration <= 0:
        raise ValueError("the interval between replays and their duration must be more than 0")
    starts = []
    index = 0
    while (begin := start + index * every) + duration <= end:
        starts.append(begin)
        index += 1
    return starts


def summarise(outcomes: Sequence[ReplayOutcome], incidents: Sequence[Period] = ()) -> Summary:
    healthy = tuple(o for o in outcomes if not any(o.overlaps(period) for period in incidents))
    reports = []
    for period in incidents:
        overlapping = tuple(o for o in outcomes if o.overlaps(period))
        detected = tuple(o for o in overlapping if o.rolled_back and o.ended_at >= period.start)
        early = tuple(o for o in overlapping if o.rolled_back and o.ended_at < period.start)
        delays = tuple(o.ended_at - max(period.start, o.start) for o in detected)
        reports.append(IncidentReport(period, overlapping, detected, early, delays))
    return Summary(
        replays=tuple(outcomes),
        healthy=healthy,
        false_rollbacks=tuple(o for o in healthy if o.rolled_back),
        incidents=tuple(reports),
    )
