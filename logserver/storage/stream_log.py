"""StreamLog: one stream's segments, in-memory index, serialised writer and consumers.

Appends are written with pwrite on the event loop (no thread hop per record),
so every mode hands the bytes to the OS before answering. In `always` mode the
append then waits for a group-commit fsync that runs in a thread; records
become readable only once durable, like Kafka's high watermark. A failed fsync
is never retried as if nothing happened (PostgreSQL's fsyncgate): the waiting
appends fail and the next append first cuts the log back to its durable end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

import orjson

from .atomic_file import fsync_directory, remove_temp_files, replace_atomically
from .checkpoint import CHECKPOINT_FILE, ConsumerCheckpoint, ConsumerPosition
from .config import FsyncPolicy, StorageConfig
from .errors import EventNotFound, SequenceMismatch, StorageError, StreamCorrupt
from .event_id import MAX_SEQUENCE, EventIdFormatter, format_event_id, parse_event_id
from .group_commit import GroupCommit
from .idempotency import IdempotencyKeys
from .metadata import Epoch, StreamMetadata
from .record import MAX_BATCH, UtcClock, check_line, encode_record, event_start, rfc3339, server_members
from .segment import (
    INDEX_SUFFIX,
    SealedSegmentFiles,
    Segment,
    base_of,
    scan_records,
    segment_file_name,
    storage_error,
)
from .segment_index import IndexUnusable, LoadedIndex, decode_index, encode_index

log = logging.getLogger("logserver.storage")

_NO_ACKS: frozenset[int] = frozenset()
# Up to this many event names, an ack finds its event's name by binary searches, not a read.
NAME_SEARCH_LIMIT = 32


utc_clock = UtcClock()


def utc_now_rfc3339() -> str:
    return utc_clock.now()


def _json_array(parts: list[bytes | memoryview]) -> bytes:
    """Join `,{`-prefixed event parts into one JSON array."""
    if not parts:
        return b"[]"
    parts[0] = b"[" + bytes(parts[0][1:])
    parts.append(b"]")
    return b"".join(parts)


def create_segment_file(directory: Path, base: int) -> Segment:
    path = directory / segment_file_name(base)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))  # no O_EXCL: a failed roll may be retried
    return Segment(path, base)


class StreamLog:
    def __init__(
        self,
        directory: Path,
        metadata: StreamMetadata,
        segments: list[Segment],
        name_sequences: dict[str, array[int]],
        checkpoint: ConsumerCheckpoint,
        keys: IdempotencyKeys,
        config: StorageConfig,
        sealed_files: SealedSegmentFiles,
    ) -> None:
        self.directory = directory
        self._sealed_files = sealed_files
        self.keys = keys
        self.metadata = metadata
        self.checkpoint = checkpoint
        self._segments = segments
        self._bases = [s.base for s in segments]
        self._name_sequences = name_sequences
        self._policy = config.fsync
        self._segment_bytes = config.segment_bytes
        # Roll, epoch start, rollback, retention and close run one at a time (the lock), and no
        # record is written while one runs (the gate, closed meanwhile). Appends only pass the
        # gate: opening it lets every held append go on at once, where a lock let one through
        # per event-loop iteration (appends waited seconds behind a roll at 256 connections).
        self._lock = asyncio.Lock()
        self._gate = asyncio.Event()
        self._gate.set()
        self._commit = GroupCommit(self._fsync_active)
        self._epoch: Epoch | None = None  # set when this process first appends
        self._format_id: EventIdFormatter | None = None
        self._stream_json = orjson.dumps(metadata.name)  # encoded once for every record's head
        self._producer_json = ("", b'""')  # the last producer id and its JSON: the owner, in practice
        self.next_sequence = segments[-1].end_sequence
        self.visible_end = self.next_sequence  # sequences below it may be read and acked
        self._durable_end = self.next_sequence
        self._failure: StorageError | None = None
        self.unsynced = False  # written since the last fsync (interval mode)
        self.last_append_at: str | None = None
        self.damage: str | None = None  # set when a read finds a bad record: the stream is refused
        self._interval_fsync: asyncio.Future[None] | None = None  # the interval tick's, in flight
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}  # long-poll readers by event name
        self._unannounced: set[str] = set()  # names appended since the last fsync began
        # Shared-consumer state, in memory only: a restart just redelivers (at-least-once).
        self._leases: dict[tuple[str, str], dict[int, float]] = {}  # -> sequence: lease end
        self._deliveries: dict[tuple[str, str], dict[int, int]] = {}  # -> sequence: deliveries

    # ---- opening and recovery -------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, config: StorageConfig, sealed_files: SealedSegmentFiles | None = None
    ) -> StreamLog:
        """Load a stream, verifying what start-up must: raises StreamCorrupt on mid-log damage."""
        try:
            metadata = StreamMetadata.load(directory)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StreamCorrupt(f"metadata unreadable: {exc}") from None
        for leftover in remove_temp_files(directory):
            log.warning("stream %r: removed leftover temp file %s", metadata.name, leftover.name)
        paths = sorted((b, p) for p in directory.iterdir() if (b := base_of(p)) is not None)
        if not paths:
            create_segment_file(directory, 1)
            fsync_directory(directory)
            paths = [(1, directory / segment_file_name(1))]
        segments: list[Segment] = []
        name_sequences: dict[str, array[int]] = {}
        keys = IdempotencyKeys(config.idempotency_window_seconds)
        for i, (base, path) in enumerate(paths):
            if segments and base != segments[-1].end_sequence:
                raise StreamCorrupt(
                    f"segment {path.name} starts at {base}, "
                    f"expected {segments[-1].end_sequence}: records are missing"
                )
            segment = Segment(path, base)
            _load_segment(segment, name_sequences, keys, is_last=i == len(paths) - 1, name=metadata.name)
            segments.append(segment)
        checkpoint = ConsumerCheckpoint.load(directory / CHECKPOINT_FILE, config.fsync is FsyncPolicy.ALWAYS)
        keys.expire()
        sealed_files = sealed_files if sealed_files is not None else SealedSegmentFiles()
        for sealed in segments[:-1]:
            sealed.seal(sealed_files)
        stream = cls(directory, metadata, segments, name_sequences, checkpoint, keys, config, sealed_files)
        moved = checkpoint.clamp(stream.next_sequence - 1)
        if moved:
            log.warning("stream %r: %d consumer positions clamped to the log end", metadata.name, moved)
            # Saved now: new appends reuse the cut sequences, and a crash before the next ack
            # must not bring back positions that would count them as acknowledged.
            try:
                checkpoint.compact_now()
            except StorageError as exc:  # the next save retries it; refusing to start helps nobody
                log.error("stream %r: clamped positions not saved yet: %s", metadata.name, exc)
        return stream

    # ---- appending ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def owner(self) -> str:
        return self.metadata.owner

    async def append(
        self, producer_id: str, body: dict[str, Any], expected_last: int | None = None, key: str | None = None
    ) -> str:
        """Append one event; returns its id once it is as durable as the fsync policy promises."""
        if not self._gate.is_set() or not self._ready_to_write() or key is not None:
            return (await self._append(producer_id, [body], False, expected_last, key))[0]
        # The usual case, without _append's loop and coroutine.
        ids, ticket = self._put(producer_id, [body], False, expected_last, None)
        if ticket:
            await self._commit.wait(ticket)
        return ids[0]

    async def append_batch(
        self,
        producer_id: str,
        bodies: list[dict[str, Any]],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        """Append events all or nothing: one write, one durable step, cut whole if a crash tears it."""
        if not 1 <= len(bodies) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} events")
        return await self._append(producer_id, bodies, True, expected_last, key)

    async def _append(
        self,
        producer_id: str,
        bodies: list[dict[str, Any]],
        batch: bool,
        expected_last: int | None,
        key: str | None,
    ) -> list[str]:
        while True:
            while not self._gate.is_set():
                await self._gate.wait()
            if not self._ready_to_write():
                await self._prepare_to_write()
                continue  # the gate may have closed again meanwhile
            # No await from here to _put: a retry with a key can't slip in between.
            seen = self.keys.get(key) if key is not None else None
            if seen is not None:  # a retry: answer what the first attempt appended, append nothing
                last = seen.first_sequence + seen.count - 1
                ids = [self.event_id(s) for s in range(seen.first_sequence, last + 1)]
                ticket = self._commit.requested if last >= self.visible_end else 0
            else:
                ids, ticket = self._put(producer_id, bodies, batch, expected_last, key)
            break
        await self._commit.wait(ticket)  # 0 (lazy modes, durable retries) returns at once
        return ids

    async def _prepare_to_write(self) -> None:
        """Roll back after a failed fsync, start this process's epoch, roll a full segment."""
        async with self._exclusive():
            if self._failure is not None:
                await self._roll_back_to_durable()
            if self._epoch is None:
                await self._start_epoch()
            if self._segments[-1].size >= self._segment_bytes:
                await self._roll()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """One of the operations that change the segments, with no record written meanwhile."""
        async with self._lock:
            self._gate.clear()
            try:
                yield
            finally:
                self._gate.set()

    def _ready_to_write(self) -> bool:
        """Whether `_put` may run now, without `_prepare_to_write` first."""
        return (
            self._failure is None
            and self._format_id is not None
            and self._segments[-1].size < self._segment_bytes
        )

    def _put(
        self,
        producer_id: str,
        bodies: list[dict[str, Any]],
        batch: bool,
        expected_last: int | None,
        key: str | None,
    ) -> tuple[list[str], int]:
        """Write the records (no await: nothing else writes meanwhile); returns their ids and the
        group-commit ticket to wait for (0: nothing to wait for in this fsync mode)."""
        if expected_last is not None and expected_last != self.next_sequence - 1:
            raise SequenceMismatch(expected_last, self.next_sequence - 1)
        assert self._format_id is not None
        first = self.next_sequence
        if first + len(bodies) - 1 > MAX_SEQUENCE:
            raise StorageError("stream is full: sequence space exhausted")
        received_at = utc_now_rfc3339()
        if producer_id != self._producer_json[0]:
            self._producer_json = (producer_id, orjson.dumps(producer_id))
        producer_json = self._producer_json[1]
        format_id, stream_json, count = self._format_id, self._stream_json, len(bodies)
        ids, lines = [], []
        for k, body in enumerate(bodies):
            event_id = format_id(first + k)
            head = server_members(event_id, stream_json, first + k, producer_json, received_at, key)
            lines.append(encode_record(head, body, count - 1 - k if batch else None))
            ids.append(event_id)
        self._segments[-1].append(lines)
        names = [body["event"]["name"] for body in bodies]
        name_sequences = self._name_sequences
        for k, event_name in enumerate(names):
            sequences = name_sequences.get(event_name)
            if sequences is None:
                sequences = name_sequences[event_name] = array("Q")
            sequences.append(first + k)
        self.next_sequence = first + count
        self.last_append_at = received_at
        if key is not None:
            self.keys.add(key, first, count, received_at)
        if self._policy is not FsyncPolicy.ALWAYS:
            self.visible_end = self._durable_end = self.next_sequence
            self.unsynced = True
            if self._waiters:
                self._announce(names)
            return ids, 0
        self._unannounced.update(names)
        return ids, self._commit.request()

    def _announce(self, names: Iterable[str]) -> None:
        """Wake long-poll readers waiting for events of these names."""
        for event_name in names:
            for waiter in self._waiters.pop(event_name, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_for_events(self, event_name: str, timeout: float) -> bool:
        """Wait until an event of that name becomes readable; False when `timeout` passes first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(event_name, set())
        waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(event_name) is waiters:
                del self._waiters[event_name]

    @property
    def waiting_readers(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def _fsync_active(self) -> None:
        active, end = self._segments[-1], self.next_sequence
        names, self._unannounced = self._unannounced, set()
        try:
            await asyncio.get_running_loop().run_in_executor(None, active.fsync)
        except OSError as exc:
            self._failure = storage_error(exc, "fsync")
            log.error("stream %r: fsync failed (%s); failing pending appends", self.name, exc)
            raise self._failure from exc
        self._durable_end = max(self._durable_end, end)
        self.visible_end = self._durable_end
        self._announce(names)

    async def _roll_back_to_durable(self) -> None:
        """After a failed fsync: forget every record not known durable, then fsync the cut."""
        active = self._segments[-1]
        lost = self.next_sequence - self._durable_end
        active.truncate_records(self._durable_end - active.base)
        for sequences in self._name_sequences.values():
            while sequences and sequences[-1] >= self._durable_end:
                sequences.pop()
        self.next_sequence = self._durable_end
        self.keys.forget_from(self._durable_end)
        try:
            await asyncio.get_running_loop().run_in_executor(None, active.fsync)
        except OSError as exc:
            raise storage_error(exc, "fsync after rollback") from exc
        log.warning("stream %r: rolled back %d unconfirmed records after fsync failure", self.name, lost)
        self._failure = None

    async def _start_epoch(self) -> None:
        used = {e.prefix for e in self.metadata.epochs}
        prefix = secrets.randbits(64)
        while prefix in used:
            prefix = secrets.randbits(64)
        epoch = Epoch(prefix, self.next_sequence)
        self.metadata.epochs.append(epoch)
        try:
            await asyncio.to_thread(self.metadata.save, self.directory)
        except OSError as exc:
            self.metadata.epochs.pop()
            raise storage_error(exc, "metadata write") from exc
        self._epoch = epoch
        self._format_id = EventIdFormatter(prefix)

    async def _roll(self) -> None:
        """Seal the active segment (fsync, persist its index) and start a new one."""
        if self._policy is FsyncPolicy.ALWAYS:
            await self._commit.drain()
        old = self._segments[-1]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, old.fsync)
            new = create_segment_file(self.directory, self.next_sequence)
            await loop.run_in_executor(None, fsync_directory, self.directory)
        except OSError as exc:
            raise storage_error(exc, "segment roll") from exc
        self._segments.append(new)
        self._bases.append(new.base)
        await self._interval_fsync_done()  # from here on a tick fsyncs the new segment
        old.seal(self._sealed_files)  # its last fsync is done: the descriptor may go
        index = encode_index(old, self._name_sequences, self.keys.in_range(old.base, old.end_sequence))
        try:
            await asyncio.to_thread(replace_atomically, old.path.with_suffix(INDEX_SUFFIX), index)
        except OSError as exc:
            log.warning(
                "stream %r: index of %s not written (%s); rebuilt at start", self.name, old.path.name, exc
            )

    # ---- reading and acknowledging ------------------------------------------------------------

    def _segment_for(self, sequence: int) -> Segment:
        return self._segments[bisect_right(self._bases, sequence) - 1]

    def read_line(self, sequence: int) -> bytes:
        """The stored line of `sequence`, checksum verified (bit rot is caught here, not served)."""
        if not self.first_sequence <= sequence < self.visible_end:
            # Not durable yet (always mode) or gone: never served, and never mistaken for damage.
            raise EventNotFound(f"sequence {sequence} is not readable in stream '{self.name}'")
        segment = self._segment_for(sequence)
        line = segment.read_line(sequence - segment.base)
        self._verify(sequence, segment, memoryview(line))
        return line

    def _verify(self, sequence: int, segment: Segment, line: memoryview) -> None:
        if not check_line(line[:-1]):
            self._refuse(sequence, segment)

    def _refuse(self, sequence: int, segment: Segment) -> NoReturn:
        """Bit rot found by a read: refuse the stream until `logserver check --repair`."""
        self.damage = f"record {sequence} in {segment.path.name} fails its checksum"
        log.error("stream %r: %s; refusing the stream until repaired", self.name, self.damage)
        raise StreamCorrupt(f"stream '{self.name}' is damaged: {self.damage}; run 'logserver check --repair'")

    def read(self, event_name: str, consumer_id: str, limit: int) -> bytes:
        """The next `limit` unacknowledged events of that name as a JSON array, from stored bytes."""
        sequences = self._name_sequences.get(event_name)
        if not sequences:
            return b"[]"
        entry = self.checkpoint.get(consumer_id, event_name)
        if entry is None or not entry.acked:
            # No out-of-order acks to skip: the events are a slice of the name's sequences.
            start = bisect_right(sequences, entry.position if entry else 0)
            wanted = sequences[start : min(start + limit, bisect_left(sequences, self.visible_end, start))]
        else:
            wanted = array("Q", islice(self._unacked(sequences, entry.position, entry.acked), limit))
        if not wanted:
            return b"[]"
        views: list[memoryview] = []
        i, count = 0, len(wanted)
        while i < count:
            segment = self._segment_for(wanted[i])
            j = bisect_left(wanted, segment.end_sequence, i)
            bad = segment.event_views(wanted, i, j, views)
            if bad is not None:
                self._refuse(bad, segment)
            i = j
        return b"".join((b"[{", b",{".join(views), b"]"))

    def _unacked(self, sequences: array[int], after: int, acked: set[int] | frozenset[int]) -> Iterator[int]:
        end = self.visible_end
        for i in range(bisect_right(sequences, after), len(sequences)):
            sequence = sequences[i]
            if sequence >= end:
                return
            if sequence not in acked:
                yield sequence

    def resolve(self, event_id: str) -> int:
        """The sequence an event id of this stream names; EventNotFound otherwise."""
        parsed = parse_event_id(event_id)
        if parsed is not None:
            prefix, sequence = parsed
            bounds = self.metadata.epoch_range(prefix)
            first = max(bounds[0], self._segments[0].base) if bounds else 0
            if bounds is not None and first <= sequence < min(bounds[1], self.visible_end):
                return sequence
        raise EventNotFound(f"event '{event_id}' does not exist in stream '{self.name}'")

    def event_id(self, sequence: int) -> str:
        """The id of a stored event: its sequence under the epoch it was appended in."""
        epoch = next(e for e in reversed(self.metadata.epochs) if e.first_sequence <= sequence)
        return format_event_id(epoch.prefix, sequence)

    def event_name(self, sequence: int) -> str:
        """Which name's sequences hold `sequence`: a few binary searches when the stream has few
        names, else read from the record (a per-event name array would cost bytes per event)."""
        if len(self._name_sequences) <= NAME_SEARCH_LIMIT:
            for name, sequences in self._name_sequences.items():
                i = bisect_left(sequences, sequence)
                if i < len(sequences) and sequences[i] == sequence:
                    return name
        found: str = orjson.loads(self.read_line(sequence))["event"]["name"]
        return found

    async def ack(self, consumer_id: str, event_id: str) -> None:
        """Record an acknowledgement; idempotent, and durable per the policy when it returns."""
        await self.ack_sequence(consumer_id, self.resolve(event_id))

    async def ack_sequence(self, consumer_id: str, sequence: int) -> None:
        event_name = self.event_name(sequence)
        lease_key = (consumer_id, event_name)
        if lease_key in self._leases:
            self._leases[lease_key].pop(sequence, None)
            self._deliveries[lease_key].pop(sequence, None)
        entry = self.checkpoint.get_or_create(consumer_id, event_name)
        commit = self.checkpoint.commit
        if sequence > entry.position and sequence not in entry.acked:
            entry.acked.add(sequence)
            self._advance(entry, event_name)
            self.checkpoint.changed(consumer_id, event_name)
            ticket = commit.request()
        else:
            ticket = commit.requested  # a repeated ack waits for the first one's write
        await commit.wait(ticket)

    def read_leased(
        self, event_name: str, consumer_id: str, limit: int, ack_wait: float, max_deliveries: int
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """Read as a shared consumer: returned events are leased to this call for `ack_wait` seconds.

        Concurrent callers with the same consumer id get disjoint events; an unacked event
        comes back when its lease ends. Each event carries its `deliveryCount`. Events that
        would exceed `max_deliveries` (0: no limit) are returned separately as
        (sequence, deliveries) for the dead-letter stream instead of being delivered.
        """
        sequences = self._name_sequences.get(event_name)
        if not sequences:
            return b"[]", []
        entry = self.checkpoint.get(consumer_id, event_name)
        after, acked = (entry.position, entry.acked) if entry else (0, _NO_ACKS)
        lease_key = (consumer_id, event_name)
        leases = self._leases.setdefault(lease_key, {})
        deliveries = self._deliveries.setdefault(lease_key, {})
        now = time.monotonic()
        parts: list[bytes | memoryview] = []
        dead: list[tuple[int, int]] = []
        for sequence in self._unacked(sequences, after, acked):
            if len(parts) >= 2 * limit:
                break
            if leases.get(sequence, 0.0) > now:
                continue  # leased to another reader
            count = deliveries.get(sequence, 0) + 1
            if max_deliveries and count > max_deliveries:
                dead.append((sequence, count - 1))
                leases[sequence] = now + ack_wait  # not handed out again while it moves
                continue
            line = self.read_line(sequence)
            deliveries[sequence] = count
            leases[sequence] = now + ack_wait
            parts.append(b',{"deliveryCount":%d,' % count)
            parts.append(memoryview(line)[event_start(line) : -1])
        return _json_array(parts), dead

    def release(self, consumer_id: str, event_id: str) -> None:
        """NACK: end this consumer's lease on the event, so the next read redelivers it."""
        sequence = self.resolve(event_id)
        leases = self._leases.get((consumer_id, self.event_name(sequence)))
        if leases is not None:
            leases.pop(sequence, None)

    def _advance(self, entry: ConsumerPosition, event_name: str) -> None:
        sequences = self._name_sequences[event_name]
        i = bisect_right(sequences, entry.position)
        while i < len(sequences) and sequences[i] in entry.acked:
            entry.acked.remove(sequences[i])
            entry.position = sequences[i]
            i += 1

    # ---- browsing, listing, seeking ---------------------------------------------------------

    def history(
        self, from_sequence: int, limit: int, event_name: str | None = None, to_sequence: int | None = None
    ) -> tuple[bytes, int | None]:
        """Events from `from_sequence` on, touching no consumer; returns the page and the next start."""
        end = self.visible_end if to_sequence is None else min(self.visible_end, to_sequence + 1)
        start = max(from_sequence, self.first_sequence)
        if event_name is None:
            sequences: Iterable[int] = range(start, end)
        else:
            named = self._name_sequences.get(event_name, array("Q"))
            sequences = (named[i] for i in range(bisect_left(named, start), bisect_left(named, end)))
        parts: list[bytes | memoryview] = []
        for sequence in sequences:
            if len(parts) >= 2 * limit:
                return _json_array(parts), sequence  # a full page: where the next one starts
            line = self.read_line(sequence)
            parts.append(b",{")
            parts.append(memoryview(line)[event_start(line) : -1])
        return _json_array(parts), None

    def received_at(self, sequence: int) -> str:
        value: str = orjson.loads(self.read_line(sequence))["receivedAt"]
        return value

    def sequence_at_time(self, when: datetime) -> int:
        """The first sequence received at or after `when` (binary search: receivedAt is monotonic
        except across a clock step back, where the answer is approximate)."""
        target = rfc3339(when)
        lo, hi = self.first_sequence, self.visible_end
        while lo < hi:
            mid = (lo + hi) // 2
            if self.received_at(mid) < target:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @property
    def first_sequence(self) -> int:
        return self._segments[0].base

    def describe(self, per_name: bool = False) -> dict[str, Any]:
        first, end = self.first_sequence, self.visible_end
        last_append = self.last_append_at
        if last_append is None and end > first:
            last_append = self.received_at(end - 1)
        info: dict[str, Any] = {
            "name": self.name,
            "owner": self.owner,
            "createdAt": self.metadata.created_at,
            "eventCount": end - first,
            "bytes": sum(segment.size for segment in self._segments),
            "segments": len(self._segments),
            "firstSequence": first,
            "lastSequence": end - 1,
            "lastAppendAt": last_append,
            "consumers": len(self.checkpoint.positions),
        }
        if self.metadata.retention:
            info["retention"] = self.metadata.retention
        if per_name:
            info["eventNames"] = {
                name: n
                for name, seqs in sorted(self._name_sequences.items())
                if (n := bisect_left(seqs, end))
            }
        return info

    def consumer_lag(self) -> list[dict[str, Any]]:
        """Per consumer and event name: where it is and how far behind (the reference server's view)."""
        rows = []
        for consumer, names in sorted(self.checkpoint.positions.items()):
            for event_name, entry in sorted(names.items()):
                sequences = self._name_sequences.get(event_name, array("Q"))
                total = bisect_left(sequences, self.visible_end)
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
                    }
                )
        return rows

    async def seek(self, consumer_id: str, next_sequence: int, event_name: str | None = None) -> int:
        """Deliver from `next_sequence` on (replay or skip): acks above the new position are forgotten.

        Applies to one event name, or to every name of the stream. Returns the new position.
        """
        position = min(max(next_sequence, self.first_sequence), self.visible_end) - 1
        names = [event_name] if event_name is not None else list(self._name_sequences)
        for name in names:
            entry = self.checkpoint.get_or_create(consumer_id, name)
            entry.position = position
            entry.acked.clear()
            self.checkpoint.changed(consumer_id, name)
        await self.checkpoint.commit.wait(self.checkpoint.commit.request())
        return position

    # ---- retention ------------------------------------------------------------------------------

    async def apply_retention(self, max_age_seconds: float | None, max_bytes: int | None) -> int:
        """Delete whole sealed segments that fall out of the limits; returns how many went.

        The stream's own limits (metadata) win over the server-wide ones passed in.
        Consumers positioned before the new first sequence move to it.
        """
        own = self.metadata.retention or {}
        age_limit = own.get("maxAgeSeconds", max_age_seconds)
        size_limit = own.get("maxBytes", max_bytes)
        if age_limit is None and size_limit is None:
            return 0
        async with self._exclusive():
            cutoff = None
            if age_limit is not None:
                cutoff = rfc3339(datetime.now(UTC) - timedelta(seconds=age_limit))
            total = sum(segment.size for segment in self._segments)
            drop = 0
            for segment in self._segments[:-1]:  # never the active segment
                too_big = size_limit is not None and total > size_limit
                too_old = cutoff is not None and self.received_at(segment.end_sequence - 1) < cutoff
                if not (too_big or too_old):
                    break
                drop += 1
                total -= segment.size
            if not drop:
                return 0
            gone = self._segments[:drop]
            del self._segments[:drop]
            del self._bases[:drop]
            first = self.first_sequence
            for sequences in self._name_sequences.values():
                del sequences[: bisect_left(sequences, first)]
            moved = self.checkpoint.move_to_start(first)
            for segment in gone:  # oldest first: a crash midway leaves a contiguous log
                segment.close()
                segment.path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
                segment.path.unlink()
            await asyncio.to_thread(fsync_directory, self.directory)
            log.info(
                "stream %r: retention removed %d segments; first sequence is now %d", self.name, drop, first
            )
        if moved:
            await self.checkpoint.commit.wait(self.checkpoint.commit.request())
        return drop

    # ---- syncing and closing ------------------------------------------------------------------

    async def sync(self) -> None:
        """fsync what was written without one (interval mode's tick)."""
        loop = asyncio.get_running_loop()
        if self.unsynced:
            self.unsynced = False
            self._interval_fsync = loop.run_in_executor(None, self._segments[-1].fsync)
            await self._interval_fsync
        if self.checkpoint.unsynced:
            await loop.run_in_executor(None, self.checkpoint.sync)

    async def _interval_fsync_done(self) -> None:
        """Before closing a descriptor: the interval tick may be fsyncing it in a thread."""
        if self._interval_fsync is not None and not self._interval_fsync.done():
            with contextlib.suppress(OSError):
                await asyncio.shield(self._interval_fsync)

    async def close(self) -> None:
        """Flush everything, persist the active segment's index (a clean-shutdown hint), close files."""
        async with self._exclusive():
            await self._commit.drain()
            await self.checkpoint.commit.drain()
            active = self._segments[-1]
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, active.fsync)
                if active.count:
                    keys = self.keys.in_range(active.base, active.end_sequence)
                    index = encode_index(active, self._name_sequences, keys)
                    await asyncio.to_thread(replace_atomically, active.path.with_suffix(INDEX_SUFFIX), index)
                # Last: a checkpoint that fails to compact (disk full) leaves the segments synced.
                await self.checkpoint.close()
                await loop.run_in_executor(None, self.checkpoint.sync)
            finally:
                await self._interval_fsync_done()
                for segment in self._segments:
                    segment.close()

    # ---- facts for listings and tests ---------------------------------------------------------

    @property
    def segments(self) -> list[Segment]:
        return self._segments

    def has_event_name(self, event_name: str) -> bool:
        """Whether the stream already stores events of that name (so the name is valid)."""
        return event_name in self._name_sequences

    @property
    def fsync_count(self) -> int:
        return self._commit.flushes

    @property
    def append_commit(self) -> GroupCommit:
        """The appends' group commit (its counters feed /metrics)."""
        return self._commit

    def event_count(self) -> int:
        return self.next_sequence - self._segments[0].base


def _load_segment(
    segment: Segment, name_sequences: dict[str, array[int]], keys: IdempotencyKeys, is_last: bool, name: str
) -> None:
    """Fill a segment's arrays from its persisted index, scanning only what the index lacks.

    A sealed segment must match its index or scan clean; the last segment may
    have a torn tail, which is cut away and logged.
    """
    file_size = segment.path.stat().st_size
    index = _try_index(segment)
    if index is not None and (index.size == file_size or (is_last and index.size < file_size)):
        segment.offsets, segment.size = index.offsets, index.size
        for event_name, sequences in zip(index.names, index.name_sequences, strict=True):
            name_sequences.setdefault(event_name, array("Q")).extend(sequences)
        for key, first, count, received_at in index.keys:
            keys.add(str(key), int(first), int(count), str(received_at))  # type: ignore[call-overload]
        start = index.size
    else:
        start = 0
    if start == file_size:
        return
    with open(segment.path, "rb") as f:
        f.seek(start)
        data = f.read()
    result = scan_records(segment, data, start, name_sequences, keys)
    if result.damage is None:
        if not is_last:
            _write_index(segment, name_sequences, keys, name)
        return
    where = f"{segment.path.name} at byte {result.valid_end}"
    if not is_last or not result.damage_is_tail:
        raise StreamCorrupt(
            f"damage before the end of the log in {where}: {result.damage}; "
            "run 'logserver check --repair' to truncate it"
        )
    dropped = file_size - result.valid_end
    log.warning("stream %r: cut torn tail of %s: %s (%d bytes dropped)", name, where, result.damage, dropped)
    os.truncate(segment.path, result.valid_end)
    fd = os.open(segment.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_index(segment: Segment) -> LoadedIndex | None:
    path = segment.path.with_suffix(INDEX_SUFFIX)
    try:
        return decode_index(path.read_bytes(), segment.base)
    except FileNotFoundError:
        return None
    except (IndexUnusable, ValueError, KeyError, TypeError, OSError) as exc:
        log.warning("index %s unusable (%s); rescanning the segment", path, exc)
        return None


def _write_index(
    segment: Segment, name_sequences: dict[str, array[int]], keys: IdempotencyKeys, name: str
) -> None:
    index = encode_index(segment, name_sequences, keys.in_range(segment.base, segment.end_sequence))
    try:
        replace_atomically(segment.path.with_suffix(INDEX_SUFFIX), index)
    except OSError as exc:
        log.warning("stream %r: could not write index of %s: %s", name, segment.path.name, exc)
