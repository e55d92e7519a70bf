"""FileStore: the file engine. The data directory as a set of streams, behind `logserver.engine`.

Layout: `<data>/streams/<encoded name>/` per stream (see names.py). A stream is created
complete or not at all: its directory is built under a temporary name (metadata, first
segment), fsynced and renamed into place. A stream whose log is damaged before its tail is
kept as a `DamagedStream`: the server runs, that stream answers StreamCorrupt until
`logserver check --repair`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from logserver.engine import (
    DEAD_LETTER_PRODUCER,
    Bound,
    ConsumerLag,
    EngineError,
    EngineHealth,
    EventNotFound,
    HistoryPage,
    HistoryQuery,
    RetentionResult,
    StreamCorrupt,
    StreamFigures,
    StreamInfo,
    StreamLocked,
    StreamNotFound,
    check_name,
    check_stream_name,
    dead_letter_stream,
    refuse_client_dead_letters,
)

from .atomic_file import make_directories
from .config import FsyncPolicy, StorageConfig
from .creation import DamagedStream, StreamCreator, name_of_damaged
from .errors import DataDirInUse, storage_error
from .loader import LogLoader
from .record import SERVER_FIELDS, event_json
from .retention import apply_retention
from .segment import SealedSegmentFiles
from .stream import Stream

log = logging.getLogger("logserver.filestore")

STREAMS_DIR = "streams"
LOCK_FILE = ".lock"
Body = dict[str, Any]


class FileStore:
    """The file engine: every stream of one data directory, opened and recovered at start.

    Owns the data directory (an exclusive flock while open), the streams by name, their
    creation (see StreamCreator) and the background tasks (interval fsync, retention).
    Event-loop only. Names are checked here, once: a name already stored passed the rules
    when it was first stored, so on the hot path only new names pay.
    """

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.streams_dir = config.data_dir / STREAMS_DIR
        self._streams: dict[str, Stream | DamagedStream] = {}
        self._sealed_files = SealedSegmentFiles(config.max_open_sealed_segments)
        self._creator = StreamCreator(self.streams_dir, self._streams, self._load, config.limits.max_streams)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_fd: int | None = None

    @classmethod
    async def open(cls, config: StorageConfig) -> FileStore:
        """Open (and recover) every stream; returns when the store can serve."""
        store = cls(config)
        make_directories(store.streams_dir)
        store._lock_fd = lock_data_dir(config.data_dir)
        for directory in store._creator.stream_directories():
            store._open_stream(directory)
        if config.fsync is FsyncPolicy.INTERVAL:
            store._tasks.append(asyncio.create_task(store._sync_every_interval()))
        store._tasks.append(asyncio.create_task(store._retain_periodically()))
        return store

    def _load(self, directory: Path) -> Stream:
        return LogLoader(directory, self.config, self._sealed_files).load()

    def _open_stream(self, directory: Path) -> None:
        try:
            stream = self._load(directory)
        except Exception as exc:  # whatever went wrong, only this stream is refused
            name = name_of_damaged(directory)
            if name is None:
                log.error("stream directory %s is unreadable and its name unknown: %s", directory, exc)
                return
            reason = f"{exc} (refused until 'logserver check --repair' keeps what is intact)"
            log.error("stream %r: %s", name, reason)
            self._streams[name] = DamagedStream(name, reason)
            return
        self._streams[stream.name] = stream

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self._healthy():
            try:
                await stream.close()
            except Exception:
                log.exception("stream %r did not close cleanly", stream.name)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ---- finding streams --------------------------------------------------------------------

    def stream(self, name: str) -> Stream:
        """The open stream called `name`; StreamNotFound, InvalidName or StreamCorrupt otherwise."""
        found = self._streams.get(name)
        if type(found) is Stream and found.log.damage is None:
            return found
        if found is None:
            check_stream_name(name)  # a bad name is the client's mistake, not a missing stream
            raise StreamNotFound(f"stream '{name}' does not exist")
        reason = found.reason if isinstance(found, DamagedStream) else found.log.damage
        raise StreamCorrupt(f"stream '{name}' is damaged: {reason}")

    def _healthy(self) -> list[Stream]:
        return [s for s in self._streams.values() if isinstance(s, Stream)]

    # ---- appending ----------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None = None,
        key: str | None = None,
    ) -> str:
        target = self._streams.get(stream)
        if type(target) is not Stream or target.owner != producer_id or target.reserved or target.damage:
            target = await self._writable(stream, producer_id, expected_last)
        name = body["event"]["name"]
        if name not in target.log.names:
            check_name(name, "event.name", self.config.limits.max_event_name_chars)
        return await target.log.append(producer_id, body, expected_last, key)

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        target = await self._writable(stream, producer_id, expected_last)
        known, limit = target.log.names, self.config.limits.max_event_name_chars
        for index, body in enumerate(bodies):
            if (name := body["event"]["name"]) not in known:
                check_name(name, f"events[{index}].event.name", limit)
        return await target.log.append_batch(producer_id, bodies, expected_last, key)

    async def _writable(
        self, stream: str, producer_id: str, expected_last: int | None, server: bool = False
    ) -> Stream:
        """The stream to append to, created by this producer if it does not exist yet.

        Dead-letter streams take only the server's own appends (`server`), whatever producer id
        a client sends.
        """
        if not server:
            refuse_client_dead_letters(stream)
        if stream not in self._streams:
            await self._creator.create(stream, producer_id, expected_last)
        target = self.stream(stream)
        if target.owner != producer_id:
            raise StreamLocked("Second writers not allowed")
        return target

    # ---- consuming ----------------------------------------------------------------------------

    async def consume(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        target = self.stream(stream)
        if event_name not in target.log.names:
            check_name(event_name, "eventName")
            return b"[]"
        return target.consumers.read(event_name, consumer_id, limit)

    async def consume_leased(
        self, stream: str, event_name: str, consumer_id: str, limit: int, ack_wait: float
    ) -> bytes:
        """A shared-consumer read; over-delivered events move to `<stream>.dlq` and are
        acknowledged for this consumer."""
        source = self.stream(stream)
        if event_name not in source.log.names:
            check_name(event_name, "eventName")
            return b"[]"
        max_deliveries = self.config.limits.max_deliveries
        body, dead = source.consumers.read_leased(event_name, consumer_id, limit, ack_wait, max_deliveries)
        for sequence, deliveries in dead:
            await self._dead_letter(source, consumer_id, sequence, deliveries)
        return body

    async def _dead_letter(self, source: Stream, consumer_id: str, sequence: int, deliveries: int) -> None:
        original = orjson.loads(event_json(source.log.read_line(sequence)))
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
            target = await self._writable(
                dead_letter_stream(source.name), DEAD_LETTER_PRODUCER, None, server=True
            )
            await target.log.append(DEAD_LETTER_PRODUCER, body, None, None)
        except EngineError as exc:
            log.error("stream %r: event %d not dead-lettered (%s); it stays", source.name, sequence, exc)
            return
        await source.consumers.ack(consumer_id, [sequence])

    async def wait_for_events(self, stream: str, event_name: str | None, timeout: float) -> bool:
        return await self.stream(stream).log.waiters.wait(event_name, timeout)

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        target = self.stream(stream)
        await target.consumers.ack(consumer_id, [target.log.resolve(event_id)])

    async def ack_many(self, stream: str, consumer_id: str, event_ids: list[str]) -> list[bool]:
        target = self.stream(stream)
        found: list[bool] = []
        sequences: list[int] = []
        for event_id in event_ids:
            try:
                sequences.append(target.log.resolve(event_id))
            except EventNotFound:
                found.append(False)
            else:
                found.append(True)
        await target.consumers.ack(consumer_id, sequences)
        return found

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        target = self.stream(stream)
        target.consumers.release(consumer_id, target.log.resolve(event_id))

    # ---- browsing -----------------------------------------------------------------------------

    async def get_event(self, stream: str, event_id: str) -> bytes:
        return self.stream(stream).get_event(event_id)

    async def history(self, stream: str, query: HistoryQuery) -> HistoryPage:
        target = self.stream(stream)
        if query.event_name is not None and query.event_name not in target.log.names:
            check_name(query.event_name, "eventName")
        return target.history(query)

    async def list_streams(self) -> list[StreamInfo]:
        out: list[StreamInfo] = []
        for name in sorted(self._streams):
            found = self._streams[name]
            if isinstance(found, DamagedStream):
                out.append({"name": name, "damaged": found.reason})
            elif found.damage is not None:
                out.append({"name": name, "damaged": found.damage})
            else:
                out.append(found.describe())
        return out

    async def describe_stream(self, stream: str) -> StreamInfo:
        return self.stream(stream).describe(per_name=True)

    async def consumer_lag(self, stream: str) -> list[ConsumerLag]:
        return self.stream(stream).consumers.lag()

    async def seek(self, stream: str, consumer_id: str, target: Bound, event_name: str | None) -> int:
        found = self.stream(stream)
        if event_name is not None and event_name not in found.log.names:
            check_name(event_name, "eventName")
        return await found.consumers.seek(consumer_id, found.sequence_at(target), event_name)

    # ---- retention ----------------------------------------------------------------------------

    async def set_retention(
        self, stream: str, max_age_seconds: float | None, max_bytes: int | None
    ) -> RetentionResult:
        target = self.stream(stream)
        limits: dict[str, float] = {}
        if max_age_seconds is not None:
            limits["maxAgeSeconds"] = max_age_seconds
        if max_bytes is not None:
            limits["maxBytes"] = max_bytes
        metadata = target.log.metadata
        metadata.retention = limits or None
        try:
            await asyncio.to_thread(metadata.save, target.log.directory)
        except OSError as exc:
            raise storage_error(exc, "metadata write") from exc
        removed = await apply_retention(target, None, None)
        return RetentionResult(target.describe(), removed)

    async def apply_retention(self) -> int:
        """One retention pass over every stream; returns the number of segments deleted."""
        removed = 0
        for stream in self._healthy():
            if stream.damage is None:
                removed += await apply_retention(
                    stream, self.config.retention_max_age_seconds, self.config.retention_max_bytes
                )
        return removed

    async def _retain_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_check_seconds)
            try:
                await self.apply_retention()
            except Exception:
                log.exception("retention pass failed")

    async def _sync_every_interval(self) -> None:
        interval = self.config.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for stream in self._healthy():
                try:
                    await stream.sync()
                except OSError as exc:
                    log.error("stream %r: interval fsync failed: %s", stream.name, exc)

    # ---- figures ------------------------------------------------------------------------------

    async def figures(self) -> list[StreamFigures]:
        return [s.figures() for s in sorted(self._healthy(), key=lambda s: s.name) if s.damage is None]

    async def health(self) -> EngineHealth:
        damaged = sorted(
            name for name, s in self._streams.items() if isinstance(s, DamagedStream) or s.damage is not None
        )
        return EngineHealth(len(self._streams), damaged)


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive flock on `<data>/.lock`: two writers on one data dir would corrupt it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(f"data directory {data_dir} is in use by another logserver process") from None
    return fd
