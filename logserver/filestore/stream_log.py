"""StreamLog: one stream's segments and its serialised writer (append, group commit, roll).

Appends are taken in memory and written by the group commit: one pwrite on the event loop
for every record taken since the last (no thread hop per write: measured, a hop per small
write cost more than the write), so every mode hands the bytes to the OS before answering.
In `always` mode the commit then fsyncs in a thread; records become readable only once
written (and, in `always`, synced), like Kafka's high watermark. A
failed fsync is never retried as if nothing happened (PostgreSQL's fsyncgate): the waiting
appends fail and the next append first cuts the log back to its durable end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Any, NoReturn

import orjson

from logserver.engine import (
    MAX_SEQUENCE,
    EngineError,
    EventNotFound,
    InvalidRequest,
    SequenceMismatch,
    StreamCorrupt,
)

from .atomic_file import fsync_directory, replace_atomically
from .config import FsyncPolicy
from .errors import storage_error
from .event_id import EventIdFormatter, format_event_id, parse_event_id
from .exclusive import Exclusive
from .group_commit import GroupCommit
from .idempotency import IdempotencyKeys
from .manifest import Manifest, SegmentEntry
from .metadata import Epoch, StreamMetadata
from .name_index import NameIndex
from .record import MAX_BATCH, encode_record, server_members, utc_now_rfc3339
from .segment import INDEX_SUFFIX, SealedSegmentFiles, Segment, create_segment_file
from .segment_index import encode_index
from .segment_list import SegmentList
from .waiters import ReadWaiters

log = logging.getLogger("logserver.filestore")


class StreamLog:
    """One stream's records: its segments, name index, idempotency keys and writer.

    Invariants: the segments are ascending; each starts where the previous ends, or above it
    when a repair skipped the sequences between (a gap: never served, never reused);
    `visible_end <= durable_end <= next_sequence`, and only sequences in
    [first_sequence, visible_end) are ever served or acknowledged.

    Concurrency (event loop only): **nothing awaits between the check and the write** —
    `_put` checks the expected sequence, the idempotency key and the segment's room and takes
    the records with no await in between, so no other append can slip in. Operations that
    change the segments (roll, epoch start, rollback, retention, close) run one at a time
    under `_lock`, with the gate closed so no record is written meanwhile. Appends only pass
    the gate: opening it lets every held append go on at once, where a lock let one through
    per event-loop iteration (appends waited seconds behind a roll at 256 connections).
    """

    def __init__(
        self,
        directory: Path,
        metadata: StreamMetadata,
        segments: list[Segment],
        names: NameIndex,
        keys: IdempotencyKeys,
        policy: FsyncPolicy,
        segment_bytes: int,
        sealed_files: SealedSegmentFiles,
        manifest: Manifest,
    ) -> None:
        self.directory = directory
        self.manifest = manifest  # as last saved: its active entry is what is known durable
        self.metadata = metadata
        self.names = names
        self.keys = keys
        self.waiters = ReadWaiters()
        self.segment_list = SegmentList(segments)
        self._sealed_files = sealed_files
        self._policy = policy
        self._segment_bytes = segment_bytes
        self._lock = asyncio.Lock()
        self._gate = asyncio.Event()
        self._gate.set()
        self.commit = GroupCommit(self._commit_records)
        self._epoch: Epoch | None = None  # set when this process first appends
        self._format_id: EventIdFormatter | None = None
        self._stream_json = orjson.dumps(metadata.name)  # encoded once for every record's head
        self._producer_json = ("", b'""')  # the last producer id and its JSON: the owner, in practice
        self.next_sequence = segments[-1].end_sequence
        self.visible_end = self.next_sequence  # sequences below it may be read and acked
        self._durable_end = self.next_sequence
        self._failure: EngineError | None = None
        self.unsynced = False  # written since the last fsync (interval mode)
        self.last_append_at: str | None = None
        self.damage: str | None = None  # set when a read finds a bad record: the stream is refused
        self._interval_fsync: asyncio.Future[None] | None = None  # the interval tick's, in flight
        self._unannounced: set[str] = set()  # names appended since the last commit began
        self.fsync_count = 0  # fsyncs of records, for /metrics
        self.fsync_seconds = 0.0

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def segments(self) -> list[Segment]:
        return self.segment_list.segments

    @property
    def first_sequence(self) -> int:
        return self.segment_list.first_sequence

    @property
    def size(self) -> int:
        """Bytes of all segments."""
        return self.segment_list.size

    # ---- appending ----------------------------------------------------------------------------

    async def append(
        self, producer_id: str, body: dict[str, Any], expected_last: int | None, key: str | None
    ) -> str:
        """Append one event; returns its id once it is as durable as the fsync policy promises."""
        if key is not None or not self._gate.is_set() or not self._ready_to_write():
            return (await self.append_batch(producer_id, [body], expected_last, key, batch=False))[0]
        # The usual case, without append_batch's loop and a second coroutine per append.
        ids, ticket = self._put(producer_id, [body], False, expected_last, None)
        await self.commit.wait(ticket)
        return ids[0]

    async def append_batch(
        self,
        producer_id: str,
        bodies: list[dict[str, Any]],
        expected_last: int | None,
        key: str | None,
        batch: bool = True,
    ) -> list[str]:
        """Append events all or nothing: one write, one durable step, cut whole if a crash tears it.

        `batch=False` (one event) writes it without the batch member.
        """
        while True:
            while not self._gate.is_set():
                await self._gate.wait()
            if not self._ready_to_write():
                await self._prepare_to_write()
                continue  # the gate may have closed again meanwhile
            # No await from here to _put: a retry with the same key can't slip in between.
            seen = self.keys.get(key) if key is not None else None
            if seen is not None:  # a retry: answer what the first attempt appended, append nothing
                last = seen.first_sequence + seen.count - 1
                ids = [self.event_id(s) for s in range(seen.first_sequence, last + 1)]
                ticket = self.commit.requested if last >= self.visible_end else 0
            else:
                ids, ticket = self._put(producer_id, bodies, batch, expected_last, key)
            break
        await self.commit.wait(ticket)  # 0 (a retry of readable records) returns at once
        return ids

    async def _prepare_to_write(self) -> None:
        """Roll back after a failed fsync, start this process's epoch, roll a full segment."""
        async with self.exclusive():
            if self._failure is not None:
                await self._roll_back_to_durable()
            if self._epoch is None:
                await self._start_epoch()
            if self.segment_list.active.size >= self._segment_bytes:
                await self._roll()

    def exclusive(self) -> Exclusive:
        """One of the operations that change the segments, with no record written meanwhile."""
        return Exclusive(self._lock, self._gate)

    def _ready_to_write(self) -> bool:
        """Whether `_put` may run now, without `_prepare_to_write` first."""
        return (
            self._failure is None
            and self._format_id is not None
            and self.segment_list.active.size < self._segment_bytes
        )

    def _put(
        self,
        producer_id: str,
        bodies: list[dict[str, Any]],
        batch: bool,
        expected_last: int | None,
        key: str | None,
    ) -> tuple[list[str], int]:
        """Take the records for the next group commit (no await: nothing else writes meanwhile);
        returns their ids and the ticket of the commit that writes them."""
        if expected_last is not None and expected_last != self.next_sequence - 1:
            raise SequenceMismatch(expected_last, self.next_sequence - 1)
        assert self._format_id is not None
        first, count = self.next_sequence, len(bodies)
        if count > MAX_BATCH:
            raise InvalidRequest(f"a batch holds at most {MAX_BATCH} events")
        if first + count - 1 > MAX_SEQUENCE:
            raise EngineError("stream is full: sequence space exhausted")
        received_at = utc_now_rfc3339()
        if producer_id != self._producer_json[0]:
            self._producer_json = (producer_id, orjson.dumps(producer_id))
        producer_json = self._producer_json[1]
        format_id, stream_json = self._format_id, self._stream_json
        ids, lines = [], []
        for k, body in enumerate(bodies):
            event_id = format_id(first + k)
            head = server_members(event_id, stream_json, first + k, producer_json, received_at, key)
            lines.append(encode_record(head, body, count - 1 - k if batch else None))
            ids.append(event_id)
        self.segment_list.active.append(lines)
        names = [body["event"]["name"] for body in bodies]
        self.names.add(names, first)
        self.next_sequence = first + count
        self.last_append_at = received_at
        if key is not None:
            self.keys.add(key, first, count, received_at)
        self._unannounced.update(names)
        return ids, self.commit.request()

    async def _commit_records(self) -> None:
        """The group commit's flush: write every record taken since the last one in one pwrite,
        fsync it in `always` mode, then make the records readable.

        The appends of one event-loop turn (and, in `always`, those taken while the previous
        fsync ran) share the write: one pwrite per batch instead of one per event.
        """
        active, end = self.segment_list.active, self.next_sequence
        names, self._unannounced = self._unannounced, set()
        try:
            active.write_pending()
        except EngineError as write_error:
            self._fail(write_error, "write")
        if self._policy is FsyncPolicy.ALWAYS:
            try:
                await self._fsync(active)
            except OSError as fsync_error:
                self._fail(storage_error(fsync_error, "fsync"), "fsync")
        else:
            self.unsynced = True
        self._durable_end = max(self._durable_end, end)
        self.visible_end = self._durable_end
        self.waiters.announce(names)

    async def _fsync(self, segment: Segment) -> None:
        """fsync a segment in a thread, counted for /metrics."""
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, segment.fsync)
        finally:
            self.fsync_count += 1
            self.fsync_seconds += time.perf_counter() - started

    def _fail(self, error: EngineError, what: str) -> NoReturn:
        """A failed write or fsync: the waiting appends fail, the next append rolls back first."""
        self._failure = error
        log.error("stream %r: %s failed (%s); failing pending appends", self.name, what, error)
        raise error

    async def _roll_back_to_durable(self) -> None:
        """After a failed fsync: forget every record not known durable, then fsync the cut."""
        active = self.segment_list.active
        lost = self.next_sequence - self._durable_end
        active.truncate_records(self._durable_end - active.base)
        self.names.forget_from(self._durable_end)
        self.next_sequence = self._durable_end
        self.keys.forget_from(self._durable_end)
        try:
            await asyncio.get_running_loop().run_in_executor(None, active.fsync)
        except OSError as exc:
            raise storage_error(exc, "fsync after rollback") from exc
        log.warning("stream %r: rolled back %d unconfirmed records after fsync failure", self.name, lost)
        self._failure = None

    async def _start_epoch(self) -> None:
        """A new random id prefix for this process's appends, saved before the first one."""
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
        await self.commit.drain()  # its last records written (and synced, in always mode)
        old = self.segment_list.active
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, old.fsync)
            # Named in the manifest before it exists: a crash between leaves an empty one to create.
            entries = [*_entries(self.segment_list.segments), SegmentEntry(self.next_sequence, 0, 0)]
            await self._save_manifest(entries)
            new = create_segment_file(self.directory, self.next_sequence)
            await loop.run_in_executor(None, fsync_directory, self.directory)
        except OSError as exc:
            raise storage_error(exc, "segment roll") from exc
        self.segment_list.append(new)
        await self._interval_fsync_done()  # from here on a tick fsyncs the new segment
        old.seal(self._sealed_files)  # its last fsync is done: the descriptor may go
        try:
            await asyncio.to_thread(replace_atomically, old.path.with_suffix(INDEX_SUFFIX), self._index(old))
        except OSError as index_error:
            log.warning(
                "stream %r: index of %s not written (%s); rebuilt at start",
                self.name,
                old.path.name,
                index_error,
            )

    async def _save_manifest(self, entries: list[SegmentEntry], clean: bool = False) -> None:
        """Replace the manifest (call it holding `exclusive()`); OSError if it could not be."""
        manifest = Manifest(entries, clean)
        await asyncio.to_thread(manifest.save, self.directory)
        self.manifest = manifest

    async def record_dropped(self) -> None:
        """Save the manifest after `drop_oldest`, before the files go (holding `exclusive()`)."""
        try:
            await self._save_manifest([*_entries(self.segment_list.segments[:-1]), self.manifest.active])
        except OSError as exc:
            raise storage_error(exc, "manifest write") from exc

    def _index(self, segment: Segment) -> bytes:
        return encode_index(
            segment, self.names.by_name, self.keys.in_range(segment.base, segment.end_sequence)
        )

    def drop_oldest(self, count: int) -> list[Segment]:
        """Forget the `count` oldest segments (retention; never the active one); call it holding
        `exclusive()`. Returns them for the caller to delete."""
        gone = self.segment_list.drop_oldest(count)
        self.names.forget_before(self.first_sequence)
        return gone

    # ---- reading ------------------------------------------------------------------------------

    def read_line(self, sequence: int) -> bytes:
        """The stored line of `sequence`, checksum verified (bit rot is caught here, not served)."""
        if not self.first_sequence <= sequence < self.visible_end:
            # Not durable yet (always mode) or gone: never served, and never mistaken for damage.
            raise EventNotFound(f"sequence {sequence} is not readable in stream '{self.name}'")
        segment = self.segment_list.holding(sequence)
        if sequence >= segment.end_sequence:
            raise EventNotFound(f"sequence {sequence} was lost to damage in stream '{self.name}'")
        line = segment.read_line(sequence - segment.base)
        if line is None:
            self._refuse(sequence, segment)
        return line

    def event_members(self, wanted: array[int]) -> list[memoryview]:
        """The stored members of each of `wanted` (ascending, readable sequences), one read per
        run of nearby records in a segment (see Segment.event_views)."""
        views: list[memoryview] = []
        i, count = 0, len(wanted)
        while i < count:
            segment = self.segment_list.holding(wanted[i])
            j = bisect_left(wanted, segment.end_sequence, i)
            bad = segment.event_views(wanted, i, j, views)
            if bad is not None:
                self._refuse(bad, segment)
            i = j
        return views

    def _refuse(self, sequence: int, segment: Segment) -> NoReturn:
        """Bit rot found by a read: refuse the stream until `logserver check --repair`."""
        self.damage = f"record {sequence} in {segment.path.name} fails its checksum"
        log.error("stream %r: %s; refusing the stream until repaired", self.name, self.damage)
        raise StreamCorrupt(f"stream '{self.name}' is damaged: {self.damage}; run 'logserver check --repair'")

    def resolve(self, event_id: str) -> int:
        """The sequence an event id of this stream names, if readable; EventNotFound otherwise."""
        parsed = parse_event_id(event_id)
        if parsed is not None:
            prefix, sequence = parsed
            bounds = self.metadata.epoch_range(prefix)
            if bounds is not None:
                first = max(bounds[0], self.first_sequence)
                readable = first <= sequence < min(bounds[1], self.visible_end)
                if readable and self.segment_list.holds(sequence):
                    return sequence
        raise EventNotFound(f"event '{event_id}' does not exist in stream '{self.name}'")

    def event_id(self, sequence: int) -> str:
        """The id of a stored event: its sequence under the epoch it was appended in."""
        epoch = next(e for e in reversed(self.metadata.epochs) if e.first_sequence <= sequence)
        return format_event_id(epoch.prefix, sequence)

    def event_name(self, sequence: int) -> str:
        """The name of a readable event: from the name index, or from its record."""
        found = self.names.name_of(sequence)
        if found is None:
            found = orjson.loads(self.read_line(sequence))["event"]["name"]
        return found

    # ---- syncing and closing ------------------------------------------------------------------

    async def sync(self) -> None:
        """fsync what was written without one (interval mode's tick)."""
        if self.unsynced:
            self.unsynced = False
            self._interval_fsync = asyncio.ensure_future(self._fsync(self.segment_list.active))
            await self._interval_fsync

    async def _interval_fsync_done(self) -> None:
        """Before closing a descriptor: the interval tick may be fsyncing it in a thread."""
        if self._interval_fsync is not None and not self._interval_fsync.done():
            with contextlib.suppress(OSError):  # the tick logs its own failure
                await asyncio.shield(self._interval_fsync)

    async def close(self) -> None:
        """Flush, persist the active segment's index and its end in the manifest (the clean-stop
        record: no later start may cut below it) and close the files.

        Call it holding `exclusive()`.
        """
        await self.commit.drain()
        active = self.segment_list.active
        try:
            await asyncio.get_running_loop().run_in_executor(None, active.fsync)
            if active.count:
                index_path = active.path.with_suffix(INDEX_SUFFIX)
                await asyncio.to_thread(replace_atomically, index_path, self._index(active))
            if active.count != self.manifest.active.count or not self.manifest.clean:  # clean-stop record
                await self._save_manifest(_entries(self.segment_list.segments), clean=True)
        finally:
            await self._interval_fsync_done()
            for segment in self.segment_list.segments:
                segment.close()


def _entries(segments: list[Segment]) -> list[SegmentEntry]:
    """The manifest entries of segments as they are now (all synced)."""
    return [SegmentEntry(s.base, s.count, s.size) for s in segments]
