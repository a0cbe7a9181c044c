"""Client-side rate limiting of API requests: client-go's token bucket, with a fair queue per rollout.

Argo Rollouts limits its client to `--qps` 40 with a `--burst` of 80 (client-go's token
bucket: tokens refill at qps per second up to burst; a request takes one). meshshift does
the same (`--qps`, `--burst`; 0 turns it off), with one difference: requests that find no token
wait in a queue of their own rollout, and the queues are served in turn, one request each.
A rollout that bursts (a resync after a restart, a promotion touching five objects) then
delays another rollout's step by at most one request per rollout waiting, never by its whole
burst; in client-go's single FIFO the step would wait behind all of it. The daemon's own
requests (informer lists and watches) have a queue too. Leader election does not go through
the limiter at all: it has its own client (election.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable

Owner = tuple[str, str] | None  # the rollout a request is for (None: the daemon's own)


class FairRateLimiter:
    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive (0 means no limiter: do not make one)")
        self.qps = qps
        self.burst = max(1, burst)
        self.clock = clock
        self._tokens = float(self.burst)
        self._refilled_at = clock()
        self._queues: OrderedDict[Owner, deque[asyncio.Future[None]]] = OrderedDict()
        self._dispatcher: asyncio.Task[None] | None = None
        self.waited = 0  # requests that had to queue, for the curious

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.qps)
        self._refilled_at = now

    async def acquire(self, owner: Owner) -> None:
        """Wait for this request's turn (at once while tokens are left and nobody queues)."""
        self._refill()
        if not self._queues and self._tokens >= 1:
            self._tokens -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(owner, deque()).append(turn)
        self.waited += 1
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")
        await turn

    def queued(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def _dispatch(self) -> None:
        """Hand tokens out as they come, one rollout after the other."""
        while self._queues:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                continue
            owner, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(owner)  # its next request waits for everyone else's turn
            else:
                del self._queues[owner]
            if turn.done():  # its caller gave up waiting
                continue
            self._tokens -= 1
            turn.set_result(None)
