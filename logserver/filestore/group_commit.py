"""GroupCommit: one flush for every caller that asked before it started.

Callers take a ticket after changing state (`request`) and await it (`wait`).
If no flush is running, one starts at once; callers arriving while it runs are
covered by the next single flush. This is EventStoreDB's and NATS's group
commit: under load one fsync serves a whole batch, idle it costs no delay.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from logserver.engine import CommitFigures

BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, math.inf)


class GroupCommit:
    """Tickets and the one flush task that serves them.

    Invariant: every ticket up to `completed` is flushed; a failed flush fails every waiter
    it would have covered (the owner rolls back). Event-loop only; the flush may run its
    blocking part in a thread.
    """

    def __init__(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush
        self.requested = 0
        self.completed = 0
        self.flushes = 0  # how many flushes ran
        self.flush_seconds = 0.0  # time spent flushing, summed
        self.batch_sizes: dict[float, int] = dict.fromkeys(BATCH_BUCKETS, 0)  # cumulative, by bucket
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def request(self) -> int:
        self.requested += 1
        return self.requested

    def figures(self) -> CommitFigures:
        """Counters for /metrics."""
        return CommitFigures(self.flushes, self.flush_seconds, self.completed, dict(self.batch_sizes))

    async def wait(self, ticket: int) -> None:
        if ticket <= self.completed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await future

    async def drain(self) -> None:
        """Wait until everything requested so far is flushed."""
        await self.wait(self.requested)

    async def _run(self) -> None:
        try:
            while self._waiters:
                target = self.requested
                self.flushes += 1
                batch = target - self.completed
                for bucket in BATCH_BUCKETS:
                    if batch <= bucket:
                        self.batch_sizes[bucket] += 1
                started = time.perf_counter()
                try:
                    await self._flush()
                except Exception as exc:
                    self.flush_seconds += time.perf_counter() - started
                    # Later waiters fail too: the owner rolls back state they depended on.
                    waiters, self._waiters = self._waiters, deque()
                    for _, future in waiters:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.flush_seconds += time.perf_counter() - started
                self.completed = target
                while self._waiters and self._waiters[0][0] <= target:
                    _, future = self._waiters.popleft()
                    if not future.done():
                        future.set_result(None)
        finally:
            self._task = None
