"""EventStore: the data directory as a set of streams; the only storage API the HTTP layer sees.

Layout: `<data>/streams/<encoded name>/` per stream (see names.py). A stream is
created complete or not at all: its directory is built under a temporary name
(metadata, first segment), fsynced and renamed into place. A stream whose log
is damaged before its tail is kept as a `CorruptStream`: the server runs, that
stream answers StreamCorrupt until `logserver check --repair`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .atomic_file import fsync_directory, make_directories
from .config import FsyncPolicy, StorageConfig
from .errors import DataDirInUse, SequenceMismatch, StorageError, StreamCorrupt, StreamLocked, StreamNotFound
from .metadata import StreamMetadata
from .names import check_name, check_stream_name, stream_dir_name, stream_name_from_dir
from .record import SERVER_FIELDS, event_json
from .segment import SealedSegmentFiles, segment_file_name, storage_error
from .stream_log import StreamLog, utc_now_rfc3339

log = logging.getLogger("logserver.storage")

STREAMS_DIR = "streams"
DEAD_LETTER_PRODUCER = "logserver-dead-letter"
LOCK_FILE = ".lock"
_CREATING = ".creating-"


@dataclass(frozen=True)
class CorruptStream:
    name: str
    reason: str


class EventStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.streams_dir = config.data_dir / STREAMS_DIR
        self._streams: dict[str, StreamLog | CorruptStream] = {}
        self._create_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._sealed_files = SealedSegmentFiles(config.max_open_sealed_segments)

    @classmethod
    async def open(cls, config: StorageConfig) -> EventStore:
        """Open (and recover) every stream; returns when the store can serve."""
        store = cls(config)
        make_directories(store.streams_dir)
        store._lock_fd = lock_data_dir(config.data_dir)
        for entry in sorted(store.streams_dir.iterdir()):
            if entry.name.startswith("."):
                if entry.name.startswith(_CREATING):  # an interrupted creation: never answered
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            if entry.is_dir():
                store._open_stream(entry)
        if config.fsync is FsyncPolicy.INTERVAL:
            store._sync_task = asyncio.create_task(store._sync_every_interval())
        store._retention_task = asyncio.create_task(store._retain_periodically())
        return store

    def _open_stream(self, directory: Path) -> None:
        try:
            stream = StreamLog.open(directory, self.config, self._sealed_files)
        except StreamCorrupt as exc:
            name = _name_of_damaged(directory)
            if name is None:
                log.error("stream directory %s is unreadable and its name unknown: %s", directory, exc)
                return
            log.error("stream %r refused: %s", name, exc)
            self._streams[name] = CorruptStream(name, str(exc))
            return
        self._streams[stream.name] = stream

    async def close(self) -> None:
        for task in (self._sync_task, self._retention_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for stream in self._streams.values():
            if isinstance(stream, StreamLog):
                try:
                    await stream.close()
                except Exception:
                    log.exception("stream %r did not close cleanly", stream.name)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def _sync_every_interval(self) -> None:
        interval = self.config.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for stream in list(self._streams.values()):
                if isinstance(stream, StreamLog):
                    try:
                        await stream.sync()
                    except OSError as exc:
                        log.error("stream %r: interval fsync failed: %s", stream.name, exc)

    async def _retain_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_check_seconds)
            try:
                await self.apply_retention()
            except Exception:
                log.exception("retention pass failed")

    async def apply_retention(self) -> int:
        """One retention pass over every stream; returns the number of segments deleted."""
        removed = 0
        for stream in list(self._streams.values()):
            if isinstance(stream, StreamLog) and stream.damage is None:
                removed += await stream.apply_retention(
                    self.config.retention_max_age_seconds, self.config.retention_max_bytes
                )
        return removed

    async def set_retention(self, stream: str, max_age_seconds: float | None, max_bytes: int | None) -> None:
        """A stream's own limits (None for both: follow the server-wide ones)."""
        target = self.stream(stream)
        limits: dict[str, float] = {}
        if max_age_seconds is not None:
            limits["maxAgeSeconds"] = max_age_seconds
        if max_bytes is not None:
            limits["maxBytes"] = max_bytes
        target.metadata.retention = limits or None
        try:
            await asyncio.to_thread(target.metadata.save, target.directory)
        except OSError as exc:
            raise storage_error(exc, "metadata write") from exc

    def describe_streams(self) -> list[dict[str, Any]]:
        """Every stream's facts, damaged ones included (flagged, with the reason)."""
        out: list[dict[str, Any]] = []
        for name in sorted(self._streams):
            found = self._streams[name]
            if isinstance(found, CorruptStream):
                out.append({"name": name, "damaged": found.reason})
            elif found.damage is not None:
                out.append({"name": name, "damaged": found.damage})
            else:
                out.append(found.describe())
        return out

    # ---- the three operations ------------------------------------------------------------------

    def stream(self, name: str) -> StreamLog:
        """The open stream called `name`; StreamNotFound or StreamCorrupt otherwise."""
        found = self._streams.get(name)
        if found is None:
            raise StreamNotFound(f"stream '{name}' does not exist")
        if isinstance(found, CorruptStream):
            raise StreamCorrupt(f"stream '{name}' is damaged: {found.reason}")
        if found.damage is not None:
            raise StreamCorrupt(f"stream '{name}' is damaged: {found.damage}")
        return found

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: dict[str, Any],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> str:
        """Append one event. `expected_last` (0 = the stream must not exist) guards against races;
        a `key` seen within the idempotency window returns the first attempt's id instead."""
        target = self._writable(stream, producer_id, [body], key)
        if target is None:
            target = await self._created(stream, producer_id, [body], expected_last, key)
        return await target.append(producer_id, body, expected_last, key)

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[dict[str, Any]],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        """Append all of `bodies` or none, in one durable step."""
        target = self._writable(stream, producer_id, bodies, key)
        if target is None:
            target = await self._created(stream, producer_id, bodies, expected_last, key)
        return await target.append_batch(producer_id, bodies, expected_last, key)

    def _writable(
        self, stream: str, producer_id: str, bodies: list[dict[str, Any]], key: str | None
    ) -> StreamLog | None:
        """The stream to append to after checking names and owner; None if it does not exist yet."""
        known = self._streams.get(stream)
        # Names already stored passed these checks once; on the hot path only new ones pay.
        if known is None:
            check_stream_name(stream)
        for body in bodies:
            name = body["event"]["name"]
            if not (isinstance(known, StreamLog) and known.has_event_name(name)):
                check_name(name, "event name")
        if key is not None:
            check_name(key, "idempotency key")
        if known is None:
            return None
        log = self.stream(stream)  # refuses a damaged stream
        if log.owner != producer_id:
            raise StreamLocked("Second writers not allowed")
        return log

    async def _created(
        self,
        stream: str,
        producer_id: str,
        bodies: list[dict[str, Any]],
        expected_last: int | None,
        key: str | None,
    ) -> StreamLog:
        if expected_last not in (None, 0):
            raise SequenceMismatch(expected_last, 0)  # nothing is created for a failed guard
        await self._create(stream, producer_id)  # a racing first append may win: that one is used
        target = self._writable(stream, producer_id, bodies, key)
        assert target is not None
        return target

    async def wait_for_events(self, stream: str, event_name: str, timeout: float) -> bool:
        """Long-poll: True once an event of that name is appended (and readable) within `timeout`."""
        return await self.stream(stream).wait_for_events(event_name, timeout)

    async def read(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        return self.stream(stream).read(event_name, consumer_id, limit)

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        await self.stream(stream).ack(consumer_id, event_id)

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        self.stream(stream).release(consumer_id, event_id)

    async def read_leased(
        self,
        stream: str,
        event_name: str,
        consumer_id: str,
        limit: int,
        ack_wait: float,
        max_deliveries: int,
    ) -> bytes:
        """A shared-consumer read (see StreamLog.read_leased); over-delivered events are moved
        to the stream `<stream>.dlq` and acknowledged for this consumer."""
        source = self.stream(stream)
        body, dead = source.read_leased(event_name, consumer_id, limit, ack_wait, max_deliveries)
        for sequence, deliveries in dead:
            await self._dead_letter(source, consumer_id, sequence, deliveries)
        return body

    async def _dead_letter(self, source: StreamLog, consumer_id: str, sequence: int, deliveries: int) -> None:
        original = orjson.loads(event_json(source.read_line(sequence)))
        body = {k: v for k, v in original.items() if k not in SERVER_FIELDS}
        body["deadLetter"] = {
            "stream": source.name,
            "eventId": original["eventId"],
            "sequence": sequence,
            "producerId": original["producerId"],
            "receivedAt": original["receivedAt"],
            "consumer": consumer_id,
            "deliveries": deliveries,
        }
        try:
            await self.append(dead_letter_stream(source.name), DEAD_LETTER_PRODUCER, body)
        except StorageError as exc:
            log.error("stream %r: event %d not dead-lettered (%s); it stays", source.name, sequence, exc)
            return
        await source.ack_sequence(consumer_id, sequence)

    def stream_count(self) -> int:
        return len(self._streams)

    def stream_names(self) -> list[str]:
        return sorted(self._streams)

    # ---- creation --------------------------------------------------------------------------------

    async def _create(self, name: str, owner: str) -> StreamLog | CorruptStream:
        async with self._create_lock:  # concurrent first appends: exactly one creates
            found = self._streams.get(name)
            if found is not None:
                return found
            directory = self.streams_dir / stream_dir_name(name)
            metadata = StreamMetadata(name, owner, utc_now_rfc3339())
            try:
                await asyncio.to_thread(self._build_stream_dir, directory, metadata)
                stream = await asyncio.to_thread(StreamLog.open, directory, self.config, self._sealed_files)
            except OSError as exc:
                raise storage_error(exc, "stream creation") from exc
            self._streams[name] = stream
            log.info("stream %r created by producer %r", name, owner)
            return stream

    def _build_stream_dir(self, directory: Path, metadata: StreamMetadata) -> None:
        staging = self.streams_dir / f"{_CREATING}{secrets.token_hex(8)}"
        staging.mkdir()
        try:
            metadata.save(staging)
            os.close(os.open(staging / segment_file_name(1), os.O_WRONLY | os.O_CREAT, 0o644))
            fsync_directory(staging)
            os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_directory(self.streams_dir)


def dead_letter_stream(name: str) -> str:
    return f"{name}.dlq"


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive flock on `<data>/.lock`: two writers on one data dir would corrupt it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(f"data directory {data_dir} is in use by another logserver process") from None
    return fd


def _name_of_damaged(directory: Path) -> str | None:
    try:
        return StreamMetadata.load(directory).name
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return stream_name_from_dir(directory.name)
        except UnicodeDecodeError:
            return None
