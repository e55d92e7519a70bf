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
from typing import NamedTuple

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


class Pending(NamedTuple):
    """One queued change of a key and the future its caller awaits."""

    apply: Change
    settle: Change | None
    done: asyncio.Future[ConsumerRecord]


class ConsumerStore:
    """The consumers bucket, shared by every gateway; in this gateway, a combiner per key.

    Concurrent changes of one key in this gateway are applied together, in arrival order, in
    one compare-and-swap write by one writer task (without it, 200 acks of one consumer at
    once kept colliding with each other); changes from other gateways still meet by CAS.
    The last revision this gateway wrote or read of a key is kept, so a change usually writes
    without reading first; a conflict reads the key again. Single event loop.
    """

    def __init__(self, bucket: KeyValue, retry_seconds: float) -> None:
        self._kv = bucket
        self._retry_seconds = retry_seconds
        self._pending: dict[str, list[Pending]] = {}
        self._last: dict[str, tuple[bytes, int]] = {}  # key -> (value, revision) last seen here

    async def load(self, key: str, consumer: str, event_name: str) -> tuple[ConsumerRecord, int]:
        """The record and its revision (0: not written yet, a fresh record), read from the leader."""
        try:
            entry = await through_elections(lambda: self._kv.get(key), self._retry_seconds, "consumer state")
        except KeyNotFoundError:
            return ConsumerRecord(consumer, event_name), 0
        assert entry.value is not None
        revision = entry.revision or 0
        known = self._last.get(key)
        if known is None or known[1] < revision:
            self._last[key] = (entry.value, revision)
        return ConsumerRecord.decode(entry.value), revision

    async def _write(self, key: str, record: ConsumerRecord, revision: int) -> None:
        """Create (revision 0) or compare-and-swap one record."""
        value = record.encode()
        if revision == 0:
            written = await self._kv.create(key, value)
        else:
            written = await self._kv.update(key, value, last=revision)
        self._last[key] = (value, written)

    async def change(
        self, key: str, consumer: str, event_name: str, apply: Change, settle: Change | None = None
    ) -> ConsumerRecord:
        """Apply `apply` to the current record and write it if it says so; durable on return.

        `settle` runs once after a round's changes when any changed the record (an ack's move
        of the position: once for all the acks of the round, not once each).
        """
        done: asyncio.Future[ConsumerRecord] = asyncio.get_running_loop().create_future()
        queue = self._pending.get(key)
        if queue is None:
            queue = self._pending[key] = []
            asyncio.create_task(self._drain(key, consumer, event_name, queue))  # noqa: RUF006 - ends itself
        queue.append(Pending(apply, settle, done))
        return await asyncio.shield(done)  # a cancelled caller does not stop the others' write

    async def _drain(self, key: str, consumer: str, event_name: str, queue: list[Pending]) -> None:
        """Write the key's queued changes, a round at a time, until none are left."""
        try:
            await asyncio.sleep(0)  # let the changes that arrive with the first one join it
            while queue:
                round_ = queue[:]
                del queue[:]
                try:
                    record = await self._apply_all(key, consumer, event_name, round_)
                except Exception as exc:
                    for pending in round_:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                else:
                    for pending in round_:
                        if not pending.done.done():
                            pending.done.set_result(record)
        finally:
            del self._pending[key]

    async def _apply_all(
        self, key: str, consumer: str, event_name: str, round_: list[Pending]
    ) -> ConsumerRecord:
        """One CAS cycle for several changes, retried on conflict."""
        known = self._last.get(key)
        for _ in range(MAX_CAS_ATTEMPTS):
            if known is not None:
                record, revision = ConsumerRecord.decode(known[0]), known[1]
            else:
                record, revision = await self.load(key, consumer, event_name)
            changed = False
            for pending in round_:
                changed |= await pending.apply(record)
            settle = next((p.settle for p in round_ if p.settle is not None), None)
            if changed and settle is not None:  # every change of one key brings the same settle
                await settle(record)
            if not changed:
                if known is None:
                    return record
                known = None  # "nothing to do" is trusted from a fresh read only (a seek elsewhere)
                continue
            try:
                await through_elections(
                    functools.partial(self._write, key, record, revision),
                    self._retry_seconds,
                    "consumer state",
                )
                return record
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another gateway wrote first (or this gateway's copy was old): read and apply
                # again. nats-py's create answers KeyNotFoundError while the other write is
                # not applied yet.
                known = None
                await asyncio.sleep(CONFLICT_PAUSE_SECONDS * random.random())
        raise EngineUnavailable(f"consumer state {key} kept changing under {MAX_CAS_ATTEMPTS} attempts")

    async def records(self, keys: list[str]) -> list[ConsumerRecord]:
        """The records of these keys (read from the leader: a key written a moment ago is there)."""
        found = []
        for key in keys:
            try:
                entry = await through_elections(
                    functools.partial(self._kv.get, key), self._retry_seconds, "consumers"
                )
            except KeyNotFoundError:
                continue
            if entry.value:
                found.append(ConsumerRecord.decode(entry.value))
        return found


def now() -> float:
    """Lease clock: Unix time, shared by gateways on different hosts (keep their clocks in sync)."""
    return time.time()
