"""EventScanner: walking a stream's messages (of one subject or all), and rendering them as events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import orjson

from logserver.engine import MAX_SEQUENCE, Bound, EventNotFound

from .connection import Cluster
from .js_streams import JetStreamStreams
from .names import format_event_id, parse_event_id
from .reads import READ_PAGE, StoredMessage, received_at
from .records import StreamRecord
from .retry import cluster_errors
from .sightings import Sightings


class EventScanner:
    """Reads of stored messages for every read path (history, consumers, look-ups by id).

    Owns no state; notes what it sees in the gateway's Sightings. Invariant: a scan returns
    messages in sequence order without a gap a replica's lag could make (a short page while
    later sequences are known is completed from the stream leader). Concurrency: stateless,
    any number of scans at once. Event loop only.
    """

    def __init__(self, cluster: Cluster, streams: JetStreamStreams, sightings: Sightings) -> None:
        self._reader = cluster.reader
        self._streams = streams
        self._sightings = sightings

    async def scan(
        self,
        record: StreamRecord,
        subject: str | None,
        start: int,
        wanted: Callable[[StoredMessage], bool],
        limit: int,
        until: int | None = None,
    ) -> list[StoredMessage]:
        """Up to `limit` messages from `start` on (below `until`) that `wanted` accepts.

        A batch that comes back short while this gateway knows of later sequences may come
        from a lagging replica: the stream leader is asked for the next message then.
        """
        js_stream = record.names.js_stream
        seen = self._sightings
        found: list[StoredMessage] = []
        cursor = max(start, 1)
        if subject is not None:
            seen.cover(record.name, subject, cursor - 1)
        # Ask for what is still wanted, doubling while `wanted` refuses some: every message
        # costs the gateway its header parsing, so a page of 256 for limit=100 cost 2.5x.
        size = min(limit, READ_PAGE)
        with cluster_errors(f"reading stream {record.name!r}"):
            while len(found) < limit and (until is None or cursor < until):
                page = await self._reader.batch(js_stream, cursor, subject, size)
                highest = page[-1].sequence if page else cursor - 1
                if len(page) < size and seen.last_seen(record.name) > highest:
                    confirmed = await self._reader.leader_next(js_stream, highest, subject)
                    if confirmed is not None:
                        page.append(confirmed)
                for message in page:
                    if until is not None and message.sequence >= until:
                        return found
                    seen.saw(record.name, message.sequence)
                    if subject is not None:
                        seen.cover(record.name, subject, message.sequence)
                    if wanted(message):
                        found.append(message)
                        if len(found) == limit:
                            return found
                if not page or (len(page) < size and page[-1].sequence <= highest):
                    return found
                cursor = page[-1].sequence + 1
                size = min(max(limit - len(found), size * 2), READ_PAGE)
        return found

    async def stored(self, record: StreamRecord, event_id: str) -> StoredMessage:
        """The stored message an event id names (the leader is asked if a replica lacks it)."""
        sequence = sequence_of(record, event_id)
        with cluster_errors(f"reading stream {record.name!r}"):
            message = await self._reader.one(record.names.js_stream, sequence)
        if message is None:
            raise EventNotFound(f"event '{event_id}' does not exist in stream '{record.name}'")
        return message

    async def sequence_at(self, record: StreamRecord, bound: Bound) -> int:
        """The first sequence a bound names (a sequence, the first event at or after a time, an edge)."""
        if bound.time is not None:
            return await self._sequence_at_time(record, bound.time)
        if bound.edge is not None:
            state = await self._streams.state(record)
            return int(state["first_seq"]) if bound.edge == "start" else int(state["last_seq"]) + 1
        assert bound.sequence is not None
        return bound.sequence

    async def _sequence_at_time(self, record: StreamRecord, moment: datetime) -> int:
        """The first sequence stored at or after `moment`, else the end of the stream.

        A replica that lags holds none of the latest events, so "none at or after" is asked of
        the leader again before it is believed; the end is read before that question, so an
        event appended meanwhile is after it, not skipped.
        """
        js_stream = record.names.js_stream
        with cluster_errors(f"reading stream {record.name!r}"):
            found = await self._reader.batch_from_time(js_stream, moment, 1)
        if found:
            return found[0].sequence
        end = int((await self._streams.state(record))["last_seq"]) + 1
        with cluster_errors(f"reading stream {record.name!r}"):
            first = await self._reader.leader_from_time(js_stream, moment)
        return first.sequence if first is not None else end


def sequence_of(record: StreamRecord, event_id: str) -> int:
    """The sequence an event id of this stream names; EventNotFound for any other id."""
    parsed = parse_event_id(event_id)
    if parsed is None or parsed[0] != record.prefix or not 1 <= parsed[1] <= MAX_SEQUENCE:
        raise EventNotFound(f"event '{event_id}' does not exist in stream '{record.name}'")
    return parsed[1]


def render(record: StreamRecord, message: StoredMessage, deliveries: int | None = None) -> bytes:
    """The event as the API serves it: server fields, then the stored producer and body."""
    head = b'{"eventId":"%s","stream":%s,"sequence":%d,"receivedAt":"%s",' % (
        format_event_id(record.prefix, message.sequence).encode(),
        orjson.dumps(record.name),
        message.sequence,
        received_at(message.timestamp).encode(),
    )
    if deliveries is not None:
        head = b'{"deliveryCount":%d,%s' % (deliveries, head[1:])
    return head + message.data[1:]


def json_array(members: list[bytes]) -> bytes:
    """Rendered events as one JSON array."""
    return b"[" + b",".join(members) + b"]"
