"""IdempotencyKeys: the recent idempotency keys of one stream, for retried appends.

A key is stored in its records (`idempotencyKey`), so it is exactly as durable
as the append it names. The window survives restarts without a file of its
own: sealed segments carry their keys in their `.idx`, and the active segment
is scanned at start anyway. Like NATS JetStream's duplicate window, a key is
remembered for a configurable time (default 2 minutes).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .record import rfc3339


@dataclass
class KeyEntry:
    """Where the records of one key's append start, how many there are, and when."""

    first_sequence: int
    count: int
    received_at: str


class IdempotencyKeys:
    """One stream's keys seen within the window, oldest first. Event-loop only; the stream
    log checks and adds a key with no await in between (see StreamLog)."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._entries: OrderedDict[str, KeyEntry] = OrderedDict()  # oldest first

    def add(self, key: str, first_sequence: int, count: int, received_at: str) -> None:
        self._entries[key] = KeyEntry(first_sequence, count, received_at)
        self._entries.move_to_end(key)

    def note_record(self, key: str, sequence: int, received_at: str) -> None:
        """Recovery: records of one keyed batch are consecutive and share the key."""
        entry = self._entries.get(key)
        if entry is not None and entry.first_sequence + entry.count == sequence:
            entry.count += 1
        else:
            self.add(key, sequence, 1, received_at)

    def get(self, key: str) -> KeyEntry | None:
        self.expire()
        return self._entries.get(key)

    def expire(self) -> None:
        cutoff = rfc3339(datetime.now(UTC) - timedelta(seconds=self.window_seconds))
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.received_at >= cutoff:
                break
            self._entries.popitem(last=False)

    def forget_from(self, sequence: int) -> None:
        """After a rollback: keys of records that no longer exist."""
        for key in [k for k, e in self._entries.items() if e.first_sequence >= sequence]:
            del self._entries[key]

    def in_range(self, first: int, end: int) -> list[list[object]]:
        """Keys whose records start in [first, end), for a segment's index."""
        return [
            [key, e.first_sequence, e.count, e.received_at]
            for key, e in self._entries.items()
            if first <= e.first_sequence < end
        ]
