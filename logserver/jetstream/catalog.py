"""StreamCatalog: which logserver streams exist, who owns each, and their creation (create-only)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
from datetime import UTC, datetime

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from logserver.engine import (
    EngineUnavailable,
    SequenceMismatch,
    StreamLimitReached,
    StreamLocked,
    StreamNotFound,
    check_stream_name,
    refuse_client_dead_letters,
)

from .connection import Cluster
from .js_streams import JetStreamStreams
from .names import STREAMS_BUCKET, digest
from .records import StreamRecord
from .retry import RETRY_PAUSE_SECONDS, cluster_errors

log = logging.getLogger("logserver.jetstream")


class StreamCatalog:
    """The streams bucket: one create-only key per stream, read through a per-gateway cache.

    Owns the cache of records (owners and id prefixes never change; retention is re-read
    where it is reported) and the `--max-streams` rule. Invariant: of producers racing to
    create one stream, in any gateways, exactly one record is written and every racer gets
    that one; a stream's JetStream stream exists before anything is appended to it.
    Concurrency: shared state changes only by create-only and compare-and-swap writes, so any
    call may run beside any other, here and in other gateways. Event loop only.
    """

    def __init__(self, cluster: Cluster, streams: JetStreamStreams) -> None:
        self._cluster = cluster
        self._bucket = cluster.streams
        self._streams = streams
        self._max_streams = cluster.settings.limits.max_streams
        self._records: dict[str, StreamRecord] = {}

    async def record(self, stream: str) -> StreamRecord | None:
        """The stream's record (cached once seen: it is written once), or None if none exists."""
        known = self._records.get(stream)
        if known is not None:
            return known
        check_stream_name(stream)
        with cluster_errors(f"reading stream {stream!r}"):
            try:
                entry = await self._cluster.retrying(
                    lambda: self._bucket.get(digest(stream)), "reading a stream"
                )
            except KeyNotFoundError:
                return None
        assert entry.value is not None
        record = StreamRecord.decode(entry.value)
        self._records[stream] = record
        return record

    async def readable(self, stream: str) -> StreamRecord:
        """The stream's record; StreamNotFound if there is none."""
        record = await self.record(stream)
        if record is None:
            raise StreamNotFound(f"stream '{stream}' does not exist")
        return record

    async def writable(
        self, stream: str, producer_id: str, expected_last: int | None, server: bool = False
    ) -> StreamRecord:
        """The stream to append to, created by this producer if it does not exist yet.

        Dead-letter streams take only the engine's own appends (`server`), whatever producer id
        a client sends.
        """
        if not server:
            refuse_client_dead_letters(stream)
        record = await self.record(stream)
        if record is None:
            if expected_last not in (None, 0):
                raise SequenceMismatch(expected_last, 0)  # nothing is created for a failed guard
            record = await self._create(stream, producer_id)
        if record.owner != producer_id:
            raise StreamLocked("Second writers not allowed")
        await self._streams.ensure(record)
        return record

    async def _create(self, stream: str, producer_id: str) -> StreamRecord:
        """Create the stream's record create-only: of racing first producers exactly one wins."""
        with cluster_errors(f"creating stream {stream!r}"):
            if await self._count() >= self._max_streams:
                raise StreamLimitReached(self._max_streams)
            record = StreamRecord(stream, producer_id, utc_now(), secrets.randbits(64))
            try:
                revision = await self._cluster.retrying(
                    lambda: self._bucket.create(digest(stream), record.encode()), "creating"
                )
                await self._refuse_beyond_limit(stream, revision)
                log.info("stream %r created by producer %r", stream, producer_id)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another producer (or gateway) created it first: theirs is the record. While
                # its write is still being applied, the key reads as missing for a moment.
                pass
        deadline = asyncio.get_running_loop().time() + self._cluster.settings.publish_timeout_seconds
        while (found := await self.record(stream)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {stream!r}: its creation did not become visible")
            await asyncio.sleep(RETRY_PAUSE_SECONDS / 10)
        return found

    async def _count(self) -> int:
        """How many records the streams bucket holds (its leader's message count)."""
        info = await self._cluster.retrying(
            lambda: self._cluster.js.stream_info(f"KV_{STREAMS_BUCKET}"), "counting streams"
        )
        return int(info.state.messages)

    async def _refuse_beyond_limit(self, stream: str, revision: int) -> None:
        """Of creators racing past --max-streams (each counted before the others' records were
        written), the records written first keep their streams; a later one takes its record
        back and is refused, as the file engine refuses it (409).

        The record is removed by purging its message, which leaves no tombstone to be counted.
        Records are ranked by revision; a stream whose retention changed (a newer revision)
        during such a race ranks after the creators, so that rare race may admit one too many.
        """
        if await self._count() <= self._max_streams:
            return
        earlier = 0
        for key in await self._cluster.bucket_keys(STREAMS_BUCKET, ">"):
            try:
                entry = await self._cluster.retrying(
                    functools.partial(self._bucket.get, key), "counting streams"
                )
            except KeyNotFoundError:
                continue  # another refused creator took its record back
            if entry.revision is not None and entry.revision < revision:
                earlier += 1
        if earlier < self._max_streams:
            return
        # KV buckets deny message deletes; a subject purge below the next revision removes this
        # record only (never a later one of the same name) and writes no marker.
        bucket = f"KV_{STREAMS_BUCKET}"
        subject = f"$KV.{STREAMS_BUCKET}.{digest(stream)}"
        await self._cluster.retrying(
            lambda: self._cluster.js.purge_stream(bucket, seq=revision + 1, subject=subject),
            "refusing a stream",
        )
        log.info("stream %r refused: %d streams were created before it", stream, earlier)
        raise StreamLimitReached(self._max_streams)

    async def all_records(self) -> list[StreamRecord]:
        """Every stream's record, by name (from the bucket's leader)."""
        found = []
        for key in await self._cluster.bucket_keys(STREAMS_BUCKET, ">"):
            with cluster_errors("listing streams"):
                try:
                    entry = await self._cluster.retrying(
                        functools.partial(self._bucket.get, key), "listing streams"
                    )
                except KeyNotFoundError:
                    continue
            if entry.value:
                found.append(StreamRecord.decode(entry.value))
        for record in found:
            self._records.setdefault(record.name, record)
        return sorted(found, key=lambda r: r.name)

    async def fresh(self, record: StreamRecord) -> StreamRecord:
        """The record read again: its retention is the one field that changes (set_retention)."""
        with cluster_errors(f"reading stream {record.name!r}"):
            entry = await self._bucket.get(digest(record.name))
        assert entry.value is not None
        self._records[record.name] = StreamRecord.decode(entry.value)
        return self._records[record.name]

    async def set_retention(self, stream: str, limits: dict[str, float] | None) -> StreamRecord:
        """Store the limits in the stream's record (CAS) and in its JetStream stream's config,
        which applies them itself."""
        await self.readable(stream)
        key = digest(stream)
        with cluster_errors(f"setting retention of {stream!r}"):
            while True:
                entry = await self._bucket.get(key)
                assert entry.value is not None
                changed = dataclasses.replace(StreamRecord.decode(entry.value), retention=limits)
                try:
                    await self._bucket.update(key, changed.encode(), last=entry.revision)
                    break
                except KeyWrongLastSequenceError:
                    continue
            self._records[stream] = changed
            await self._streams.ensure(changed)
            await self._streams.configure(self._streams.config(changed), create=False)
        return changed


def utc_now() -> str:
    """Now, as the API's RFC 3339 UTC timestamp with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
