"""Retention: delete a stream's oldest sealed segments once they fall out of its limits.

Whole segments only, oldest first, never the active one (Kafka's and JetStream's file
stores do the same): the manifest forgets them first, so a crash midway leaves files below
its first entry, which the next start deletes. Consumers positioned before the
new first sequence move to it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from .atomic_file import fsync_directory
from .record import rfc3339
from .segment import INDEX_SUFFIX
from .stream import Stream

log = logging.getLogger("logserver.filestore")


class RetentionLimits:
    """The limits that apply to one stream: its own (meta.json) over the server's."""

    __slots__ = ("max_age_seconds", "max_bytes")

    def __init__(self, stream: Stream, max_age_seconds: float | None, max_bytes: int | None) -> None:
        own = stream.log.metadata.retention or {}
        self.max_age_seconds = own.get("maxAgeSeconds", max_age_seconds)
        limit = own.get("maxBytes", max_bytes)
        self.max_bytes = int(limit) if limit is not None else None

    def __bool__(self) -> bool:
        return self.max_age_seconds is not None or self.max_bytes is not None


def segments_out_of_limits(stream: Stream, limits: RetentionLimits) -> int:
    """How many of the oldest sealed segments fall out of the limits."""
    cutoff = None
    if limits.max_age_seconds is not None:
        cutoff = rfc3339(datetime.now(UTC) - timedelta(seconds=limits.max_age_seconds))
    segments = stream.log.segments
    total = stream.log.size
    drop = 0
    for segment in segments[:-1]:  # never the active segment
        too_big = limits.max_bytes is not None and total > limits.max_bytes
        too_old = cutoff is not None and stream.received_at(segment.end_sequence - 1) < cutoff
        if not (too_big or too_old):
            break
        drop += 1
        total -= segment.size
    return drop


async def apply_retention(stream: Stream, max_age_seconds: float | None, max_bytes: int | None) -> int:
    """Apply the stream's limits (its own over these server-wide ones); returns segments removed."""
    limits = RetentionLimits(stream, max_age_seconds, max_bytes)
    if not limits:
        return 0
    checkpoint = stream.consumers.checkpoint
    async with stream.log.exclusive():
        drop = segments_out_of_limits(stream, limits)
        if not drop:
            return 0
        gone = stream.log.drop_oldest(drop)
        await stream.log.record_dropped()  # forgotten before deleted: never read as missing
        first = stream.log.first_sequence
        moved = checkpoint.move_to_start(first)
        for segment in gone:  # oldest first: a crash midway leaves a contiguous log
            segment.close()
            segment.path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
            segment.path.unlink()
        await asyncio.to_thread(fsync_directory, stream.log.directory)
        log.info(
            "stream %r: retention removed %d segments; first sequence is now %d", stream.name, drop, first
        )
    if moved:
        await checkpoint.commit.wait(checkpoint.commit.request())
    return drop
