"""ReadWaiters: long-poll readers of one stream, woken when events of their name become readable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

ANY_NAME = None  # a waiter for events of every name (a live follow)


class ReadWaiters:
    """Futures of waiting readers by event name (None: any name).

    Invariant: a future is registered only while its reader waits. Event-loop only: an
    announcement and a registration never interleave with a read in between.
    """

    def __init__(self) -> None:
        self._by_name: dict[str | None, set[asyncio.Future[None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_name)

    @property
    def count(self) -> int:
        """How many readers wait now (for /metrics)."""
        return sum(len(w) for w in self._by_name.values())

    def announce(self, names: Iterable[str]) -> None:
        """Wake the readers waiting for events of these names, and those waiting for any."""
        woken = [self._by_name.pop(name, ()) for name in set(names)]
        woken.append(self._by_name.pop(ANY_NAME, set()))
        for waiters in woken:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait(self, event_name: str | None, timeout: float) -> bool:
        """Wait for an announcement of that name (None: any); False when `timeout` passes first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._by_name.setdefault(event_name, set())
        waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(waiter)
            if not waiters and self._by_name.get(event_name) is waiters:
                del self._by_name[event_name]
