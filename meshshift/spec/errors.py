"""Validation findings: every one names its path (`steps[3].setWeight`) and a reason.

Parsers collect findings instead of stopping at the first one, so a user sees every
mistake in one lint run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class SpecIssue:
    path: str
    reason: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{self.path}: {prefix}{self.reason}" if self.path else f"{prefix}{self.reason}"


class SpecError(ValueError):
    """Raised when a spec has at least one error; carries every finding."""

    def __init__(self, issues: tuple[SpecIssue, ...]) -> None:
        self.issues = issues
        errors = [i for i in issues if i.severity == "error"]
        super().__init__("; ".join(str(i) for i in errors) or "invalid spec")

    @property
    def errors(self) -> tuple[SpecIssue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")


def join_path(base: str, part: str | int) -> str:
    """`join_path("steps", 3)` is `steps[3]`; `join_path("steps[3]", "pause")` is `steps[3].pause`."""
    if isinstance(part, int):
        return f"{base}[{part}]"
    return f"{base}.{part}" if base else part


@dataclass
class Findings:
    """Collects issues while parsing; raise_if_errors() turns them into a SpecError."""

    issues: list[SpecIssue] = field(default_factory=list)

    def error(self, path: str, reason: str) -> None:
        self.issues.append(SpecIssue(path, reason))

    def warning(self, path: str, reason: str) -> None:
        self.issues.append(SpecIssue(path, reason, "warning"))

    def extend(self, other: Findings | SpecError) -> None:
        self.issues.extend(other.issues)

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)

    def __iter__(self) -> Iterator[SpecIssue]:
        return iter(self.issues)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise SpecError(tuple(self.issues))
