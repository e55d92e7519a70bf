"""ConsumerState: what every consumer of one stream has read and acknowledged.

Positions and acknowledged sets are durable (the checkpoint); leases and delivery counts of
shared consumers (`ackWait`) live in memory only: a restart just redelivers, which
at-least-once delivery allows.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import islice

from logserver.engine import ConsumerLag

from .checkpoint import ConsumerCheckpoint, ConsumerPosition
from .name_index import NameIndex
from .record import event_members, json_array
from .stream_log import StreamLog

_NO_ACKS: frozenset[int] = frozenset()
LeaseKey = tuple[str, str]  # (consumer, event name)


class ConsumerState:
    """Reads for consumers, acks, leases, deliveries, seeks and lag of one stream.

    Invariant: a consumer's position for a name only moves over a contiguous run of
    acknowledged events of that name, so no unacknowledged event is ever skipped (SPEC §1.3),
    and every change is saved through the checkpoint's group commit before an ack returns.
    Event-loop only: a read and the lease it records happen without an await in between.
    """

    def __init__(self, log: StreamLog, checkpoint: ConsumerCheckpoint) -> None:
        self._log = log
        self._names: NameIndex = log.names
        self.checkpoint = checkpoint
        self._leases: dict[LeaseKey, dict[int, float]] = {}  # -> sequence: lease end (monotonic)
        self._deliveries: dict[LeaseKey, dict[int, int]] = {}  # -> sequence: deliveries so far

    # ---- reads ------------------------------------------------------------------------------

    def read(self, event_name: str, consumer_id: str, limit: int) -> bytes:
        """The next `limit` unacknowledged events of that name as a JSON array, from stored bytes."""
        sequences = self._names.sequences(event_name)
        if not sequences:
            return b"[]"
        entry = self.checkpoint.get(consumer_id, event_name)
        if entry is None or not entry.acked:
            # No out-of-order acks to skip: the events are a slice of the name's sequences.
            start = bisect_right(sequences, entry.position if entry else 0)
            end = bisect_left(sequences, self._log.visible_end, start)
            wanted = sequences[start : min(start + limit, end)]
        else:
            wanted = array("Q", islice(self._unacked(sequences, entry.position, entry.acked), limit))
        if not wanted:
            return b"[]"
        return json_array(self._log.event_members(wanted))  # type: ignore[arg-type]

    def read_leased(
        self, event_name: str, consumer_id: str, limit: int, ack_wait: float, max_deliveries: int
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """Read as a shared consumer: returned events are leased to this call for `ack_wait` seconds.

        Concurrent callers with the same consumer id get disjoint events; an unacked event
        comes back when its lease ends. Each event carries its `deliveryCount`. Events that
        would exceed `max_deliveries` (0: no limit) are returned separately as
        (sequence, deliveries) for the dead-letter stream instead of being delivered.
        """
        sequences = self._names.sequences(event_name)
        if not sequences:
            return b"[]", []
        entry = self.checkpoint.get(consumer_id, event_name)
        after, acked = (entry.position, entry.acked) if entry else (0, _NO_ACKS)
        lease_key = (consumer_id, event_name)
        leases = self._leases.setdefault(lease_key, {})
        deliveries = self._deliveries.setdefault(lease_key, {})
        now = time.monotonic()
        members: list[bytes | memoryview] = []
        dead: list[tuple[int, int]] = []
        for sequence in self._unacked(sequences, after, acked):
            if len(members) >= limit:
                break
            if leases.get(sequence, 0.0) > now:
                continue  # leased to another reader
            count = deliveries.get(sequence, 0) + 1
            if max_deliveries and count > max_deliveries:
                dead.append((sequence, count - 1))
                leases[sequence] = now + ack_wait  # not handed out again while it moves
                continue
            line = self._log.read_line(sequence)
            deliveries[sequence] = count
            leases[sequence] = now + ack_wait
            members.append(b'"deliveryCount":%d,%b' % (count, bytes(event_members(line))))
        return json_array(members), dead

    def _unacked(self, sequences: array[int], after: int, acked: set[int] | frozenset[int]) -> Iterator[int]:
        """The name's readable sequences above `after` that are not in `acked`."""
        end = self._log.visible_end
        for i in range(bisect_right(sequences, after), len(sequences)):
            sequence = sequences[i]
            if sequence >= end:
                return
            if sequence not in acked:
                yield sequence

    def in_flight(self, consumer_id: str, event_name: str) -> int:
        """Events leased to that consumer now and not acknowledged."""
        now = time.monotonic()
        return sum(1 for end in self._leases.get((consumer_id, event_name), {}).values() if end > now)

    # ---- acks -------------------------------------------------------------------------------

    async def ack(self, consumer_id: str, sequences: list[int]) -> None:
        """Record acknowledgements of readable sequences; idempotent; durable when it returns.

        One checkpoint write covers them all, whatever their names.
        """
        commit = self.checkpoint.commit
        changed = False
        for sequence in sequences:
            changed |= self._record_ack(consumer_id, sequence)
        # A repeated ack waits for the first one's write, which may still be in flight.
        await commit.wait(commit.request() if changed else commit.requested)

    def _record_ack(self, consumer_id: str, sequence: int) -> bool:
        """Mark one ack in memory; True if it changed anything to save."""
        event_name = self._log.event_name(sequence)
        lease_key = (consumer_id, event_name)
        if lease_key in self._leases:
            self._leases[lease_key].pop(sequence, None)
            self._deliveries[lease_key].pop(sequence, None)
        entry = self.checkpoint.get_or_create(consumer_id, event_name)
        if sequence <= entry.position or sequence in entry.acked:
            return False
        entry.acked.add(sequence)
        self._advance(entry, event_name)
        self.checkpoint.changed(consumer_id, event_name)
        return True

    def _advance(self, entry: ConsumerPosition, event_name: str) -> None:
        """Move the position over the acknowledged events that now follow it without a gap."""
        sequences = self._names.sequences(event_name)
        i = bisect_right(sequences, entry.position)
        while i < len(sequences) and sequences[i] in entry.acked:
            entry.acked.remove(sequences[i])
            entry.position = sequences[i]
            i += 1

    def release(self, consumer_id: str, sequence: int) -> None:
        """NACK: end this consumer's lease on the event, so the next read redelivers it."""
        leases = self._leases.get((consumer_id, self._log.event_name(sequence)))
        if leases is not None:
            leases.pop(sequence, None)

    # ---- seeking and lag --------------------------------------------------------------------

    async def seek(self, consumer_id: str, next_sequence: int, event_name: str | None) -> int:
        """Deliver from `next_sequence` on (replay or skip): acks above the new position are forgotten.

        Applies to one event name, or to every name of the stream. Returns the new position.
        """
        log = self._log
        position = min(max(next_sequence, log.first_sequence), log.visible_end) - 1
        names = [event_name] if event_name is not None else list(self._names)
        for name in names:
            entry = self.checkpoint.get_or_create(consumer_id, name)
            entry.position = position
            entry.acked.clear()
            self.checkpoint.changed(consumer_id, name)
        await self.checkpoint.commit.wait(self.checkpoint.commit.request())
        return position

    def lag(self) -> list[ConsumerLag]:
        """Per consumer and event name: where it is and how far behind (the reference server's view).

        A consumer that has only taken leases (nothing acknowledged yet) is listed too, at 0.
        """
        rows: list[ConsumerLag] = []
        end = self._log.visible_end
        positions = self.checkpoint.positions
        keys = {(c, n) for c, names in positions.items() for n in names} | self._deliveries.keys()
        for consumer, event_name in sorted(keys):
            entry = positions.get(consumer, {}).get(event_name) or ConsumerPosition()
            sequences = self._names.sequences(event_name)
            total = bisect_left(sequences, end)
            acknowledged = bisect_right(sequences, entry.position) + len(entry.acked)
            rows.append(
                {
                    "consumer": consumer,
                    "eventName": event_name,
                    "position": entry.position,
                    "acknowledged": acknowledged,
                    "acknowledgedOutOfOrder": len(entry.acked),
                    "behind": total - acknowledged,
                    "consumedPercentage": round(100.0 * acknowledged / total, 2) if total else 100.0,
                    "inFlight": self.in_flight(consumer, event_name),
                }
            )
        return rows
