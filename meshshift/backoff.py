"""Retry delays shared by the controller loops and the watches."""

from __future__ import annotations


class Backoff:
    """0.5 s, 1 s, 2 s, ... up to `cap`; reset after a success."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first
