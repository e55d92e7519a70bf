"""Consumer state in a replicated KV bucket, changed only by compare-and-swap.

One key per (stream, consumer, event name) holds the position (every event of that name up
to it is acknowledged), the acknowledged sequences above it, and the leases and delivery
counts of shared (leased) reads. Every change reads the key with its revision and writes it
back only if the revision is still the same (`Nats-Expected-Last-Subject-Sequence`); a
conflict re-reads and re-applies the change. So two gateways acking the same consumer never
lose each other's acks, and two gateways leasing for one consumer never lease one event twice.
The bucket is created without direct gets: reads go to its leader and see the last write.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from logserver.engine import EngineUnavailable

from .retry import through_elections

MAX_CAS_ATTEMPTS = 100
CONFLICT_PAUSE_SECONDS = 0.01  # up to this long (random) before a retry: colliding writers spread


@dataclass
class ConsumerRecord:
    """One consumer's state for one event name of one stream."""

    consumer: str
    event_name: str
    position: int = 0
    acked: set[int] = field(default_factory=set)
    leases: dict[int, float] = field(default_factory=dict)  # sequence -> lease end (Unix time)
    deliveries: dict[int, int] = field(default_factory=dict)  # sequence -> leased deliveries

    def is_acked(self, sequence: int) -> bool:
        return sequence <= self.position or sequence in self.acked

    def leased(self, now: float) -> int:
        """How many events are leased now and not acknowledged."""
        return sum(
            1 for sequence, until in self.leases.items() if until > now and not self.is_acked(sequence)
        )

    def forget_expired_leases(self, now: float) -> None:
        """Drop lease ends that passed (delivery counts stay: they decide the dead letter)."""
        for sequence in [s for s, until in self.leases.items() if until <= now]:
            del self.leases[sequence]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "consumer": self.consumer,
                "eventName": self.event_name,
                "position": self.position,
                "acked": sorted(self.acked),
                "leases": {str(s): until for s, until in self.leases.items()},
                "deliveries": {str(s): n for s, n in self.deliveries.items()},
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ConsumerRecord:
        raw = orjson.loads(data)
        return cls(
            raw["consumer"],
            raw["eventName"],
            int(raw["position"]),
            set(raw["acked"]),
            {int(s): float(until) for s, until in raw.get("leases", {}).items()},
            {int(s): int(n) for s, n in raw.get("deliveries", {}).items()},
        )


Change = Callable[[ConsumerRecord], Awaitable[bool]]


class ConsumerStore:
    """The consumers bucket. Holds no state of its own; any number of gateways share it."""

    def __init__(self, bucket: KeyValue, retry_seconds: float) -> None:
        self._kv = bucket
        self._retry_seconds = retry_seconds

    async def load(self, key: str, consumer: str, event_name: str) -> tuple[ConsumerRecord, int]:
        """The record and its revision (0: not written yet, a fresh record)."""
        try:
            entry = await through_elections(lambda: self._kv.get(key), self._retry_seconds, "consumer state")
        except KeyNotFoundError:
            return ConsumerRecord(consumer, event_name), 0
        assert entry.value is not None
        return ConsumerRecord.decode(entry.value), entry.revision or 0

    async def _write(self, key: str, record: ConsumerRecord, revision: int) -> None:
        """Create (revision 0) or compare-and-swap one record."""
        if revision == 0:
            await self._kv.create(key, record.encode())
        else:
            await self._kv.update(key, record.encode(), last=revision)

    async def change(self, key: str, consumer: str, event_name: str, apply: Change) -> ConsumerRecord:
        """Apply `apply` to the current record and write it if it says so, retrying on conflict."""
        for _ in range(MAX_CAS_ATTEMPTS):
            record, revision = await self.load(key, consumer, event_name)
            if not await apply(record):
                return record
            try:
                await through_elections(
                    functools.partial(self._write, key, record, revision),
                    self._retry_seconds,
                    "consumer state",
                )
                return record
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another gateway wrote first: re-read and apply again. (nats-py's create
                # answers KeyNotFoundError while the other write is not applied yet.)
                await asyncio.sleep(CONFLICT_PAUSE_SECONDS * random.random())
                continue
        raise EngineUnavailable(f"consumer state {key} kept changing under {MAX_CAS_ATTEMPTS} attempts")

    async def records(self, filter_key: str) -> list[ConsumerRecord]:
        """Every record whose key matches `filter_key` (a stream's consumers)."""
        watcher = await self._kv.watch(filter_key, ignore_deletes=True)
        found = []
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    break
                if entry.value:
                    found.append(ConsumerRecord.decode(entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found


def now() -> float:
    """Lease clock: Unix time, shared by gateways on different hosts (keep their clocks in sync)."""
    return time.time()
