"""Stream: one open stream — its log, its consumers — and the read-only views of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

import orjson

from logserver.engine import DEAD_LETTER_SUFFIX, Bound, HistoryPage, HistoryQuery, StreamFigures, StreamInfo

from .consumers import ConsumerState
from .record import event_json, event_members, json_array, rfc3339
from .stream_log import StreamLog


class Stream:
    """A loaded stream: the log and the consumer state over it, and the browsing views.

    Owns nothing the parts don't: the log owns the records, `consumers` the positions.
    Event-loop only.
    """

    def __init__(self, log: StreamLog, consumers: ConsumerState) -> None:
        self.log = log
        self.consumers = consumers
        # A dead-letter stream: only the server appends to it (checked on every append).
        self.reserved = log.name.endswith(DEAD_LETTER_SUFFIX)

    @property
    def name(self) -> str:
        return self.log.name

    @property
    def owner(self) -> str:
        return self.log.metadata.owner

    @property
    def damage(self) -> str | None:
        return self.log.damage

    # ---- looking things up --------------------------------------------------------------------

    def get_event(self, event_id: str) -> bytes:
        """One stored event as JSON."""
        return event_json(self.log.read_line(self.log.resolve(event_id)))

    def received_at(self, sequence: int) -> str:
        value: str = orjson.loads(self.log.read_line(sequence))["receivedAt"]
        return value

    def sequence_at_time(self, when: datetime) -> int:
        """The first sequence received at or after `when` (binary search: receivedAt is monotonic
        except across a clock step back, where the answer is approximate)."""
        target = rfc3339(when)
        lo, hi = self.log.first_sequence, self.log.visible_end
        while lo < hi:
            mid = (lo + hi) // 2
            probe = self.log.segment_list.next_held(mid)  # a sequence lost to damage has no time
            if probe < hi and self.received_at(probe) < target:
                lo = probe + 1
            else:
                hi = mid
        return lo

    def sequence_at(self, bound: Bound) -> int:
        """The first sequence a bound names (a sequence, a time, or an edge of the stream)."""
        if bound.time is not None:
            return self.sequence_at_time(bound.time)
        if bound.edge == "start":
            return self.log.first_sequence
        if bound.edge == "end":
            return self.log.visible_end
        assert bound.sequence is not None
        return bound.sequence

    def history(self, query: HistoryQuery) -> HistoryPage:
        """Events from `query.start` on, touching no consumer; the page and the next start."""
        log = self.log
        end = log.visible_end
        if query.stop is not None:  # inclusive: a time stop names the first event after it
            stop = self.sequence_at(query.stop)
            end = min(end, stop if query.stop.time is not None else stop + 1)
        start = max(self.sequence_at(query.start), log.first_sequence)
        sequences: Iterable[int]
        if query.event_name is None:
            sequences = range(start, end)
            if log.segment_list.skipped_count:
                sequences = filter(log.segment_list.holds, sequences)
        else:
            sequences = log.names.between(query.event_name, start, end)
        members: list[bytes | memoryview] = []
        for sequence in sequences:
            if len(members) >= query.limit:
                return HistoryPage(json_array(members), sequence)  # a full page: the next one's start
            members.append(event_members(log.read_line(sequence)))
        return HistoryPage(json_array(members), None)

    # ---- facts --------------------------------------------------------------------------------

    def describe(self, per_name: bool = False) -> StreamInfo:
        log = self.log
        first, end = log.first_sequence, log.visible_end
        last_append = log.last_append_at
        if last_append is None and end > first:
            last_append = self.received_at(end - 1)
        info: StreamInfo = {
            "name": self.name,
            "owner": self.owner,
            "createdAt": log.metadata.created_at,
            "eventCount": end - first - log.segment_list.skipped_count,
            "bytes": log.size,
            "segments": len(log.segments),
            "firstSequence": first,
            "lastSequence": end - 1,
            "lastAppendAt": last_append,
            "consumers": len(self.consumers.checkpoint.positions),
        }
        if log.metadata.retention:
            info["retention"] = log.metadata.retention
        if per_name:
            info["eventNames"] = log.names.counts_below(end)
        return info

    def figures(self) -> StreamFigures:
        log = self.log
        return StreamFigures(
            name=self.name,
            last_sequence=log.visible_end - 1,
            events=log.visible_end - log.first_sequence - log.segment_list.skipped_count,
            bytes=log.size,
            waiting_readers=log.waiters.count,
            fsyncs=log.fsync_count,
            fsync_seconds=log.fsync_seconds,
            appends=log.commit.figures(),
            consumers=self.consumers.lag(),
        )

    # ---- syncing and closing ------------------------------------------------------------------

    async def sync(self) -> None:
        """fsync the log and the ack log where something was written without one (interval mode)."""
        await self.log.sync()
        checkpoint = self.consumers.checkpoint
        if checkpoint.unsynced:
            await asyncio.get_running_loop().run_in_executor(None, checkpoint.sync)

    async def close(self) -> None:
        """Flush everything and close the files: the segments first, then the checkpoint."""
        async with self.log.exclusive():
            checkpoint = self.consumers.checkpoint
            await checkpoint.commit.drain()
            await self.log.close()
            # Last: a checkpoint that fails to compact (disk full) leaves the segments synced.
            await checkpoint.close()
            await asyncio.get_running_loop().run_in_executor(None, checkpoint.sync)
