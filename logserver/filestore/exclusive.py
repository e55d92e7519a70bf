"""Exclusive: a lock that also closes a gate, for the operations that change a log's segments."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Exclusive:
    """`async with log.exclusive():` — the lock held and the append gate closed.

    A class, not an asynccontextmanager: mypyc compiles no async generators.
    """

    __slots__ = ("_gate", "_lock")

    def __init__(self, lock: asyncio.Lock, gate: asyncio.Event) -> None:
        self._lock = lock
        self._gate = gate

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        self._gate.clear()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._gate.set()
        self._lock.release()
