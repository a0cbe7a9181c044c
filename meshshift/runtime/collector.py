"""Python's cyclic garbage collector, tuned for a daemon that keeps a large cache.

At a thousand rollouts the daemon holds millions of long-lived objects (the informer's
Deployments, parsed specs, metric series) and allocates many short-lived ones per request.
At CPython's default thresholds (700, 10, 10), one rollout of 1,000 rollouts in
`bench/scale.py` spent 1.7 of its 7.5 CPU-seconds in the collector, 1.1 of them in four full
collections of about 0.3 s each, which stalled every rollout while they ran. Almost none of
that is garbage: parsed JSON forms no cycles, and reference counting frees it.

So, while a daemon runs:
- the youngest generation is collected every YOUNG_THRESHOLD allocations, not 700: most of
  what a request allocates is gone by then;
- what survives a full collection is frozen (`gc.freeze`): the next full collections scan only
  what came since, not the whole cache again;
- every UNFREEZE_EVERY seconds a full collection scans everything once more, so a cycle that
  became garbage after it was frozen (a closed connection, a finished rollout's task) is still
  freed, only later.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation
UNFREEZE_EVERY = 600.0  # seconds between full collections that scan the frozen objects too
_OLDEST = 2


class CollectorTuning:
    """The thresholds and the freezing above, installed on the process's collector."""

    def __init__(
        self,
        *,
        young_threshold: int = YOUNG_THRESHOLD,
        unfreeze_every: float = UNFREEZE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.young_threshold = young_threshold
        self.unfreeze_every = unfreeze_every
        self.clock = clock
        self.full_collections = 0
        self.full_scans = 0  # of those, the ones that scanned the frozen objects too
        self._thresholds: tuple[int, int, int] | None = None
        self._scanned_all_at = 0.0

    def install(self) -> None:
        if self._thresholds is not None:
            return
        self._thresholds = gc.get_threshold()
        _, middle, oldest = self._thresholds
        gc.set_threshold(self.young_threshold, middle, oldest)
        self._scanned_all_at = self.clock()
        gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        """The collector as it was: its thresholds, and nothing frozen."""
        if self._thresholds is None:
            return
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)
        gc.set_threshold(*self._thresholds)
        self._thresholds = None
        gc.unfreeze()

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != _OLDEST:
            return
        if phase == "start":
            if self.clock() - self._scanned_all_at >= self.unfreeze_every:
                gc.unfreeze()  # this collection looks at everything once more
                self._scanned_all_at = self.clock()
                self.full_scans += 1
            return
        self.full_collections += 1
        gc.freeze()  # what survived is long-lived: the next full collections skip it


@contextlib.contextmanager
def tuned_collector(tuning: CollectorTuning | None = None) -> Iterator[CollectorTuning]:
    """The collector tuned for a daemon while the block runs; as it was afterwards."""
    tuning = tuning or CollectorTuning()
    tuning.install()
    try:
        yield tuning
    finally:
        tuning.uninstall()
