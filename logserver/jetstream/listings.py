"""Listings: stream descriptions, consumer lag, the metrics figures and health, from the cluster's state."""

from __future__ import annotations

from logserver.engine import CommitFigures, ConsumerLag, EngineHealth, StreamFigures, StreamInfo

from .catalog import StreamCatalog
from .connection import Cluster
from .consumers import ConsumerRecord, ConsumerStore, now
from .js_streams import JetStreamStreams
from .names import CONSUMERS_BUCKET, STREAMS_BUCKET, name_from_token
from .reads import received_at
from .records import StreamRecord
from .retry import cluster_errors
from .sightings import Sightings


class Listings:
    """What the admin and metrics routes report: streams, their event names, consumers and lag.

    Owns no state: every figure is read from the stream leaders (STREAM.INFO) and the buckets
    when asked, except the waiting readers, which are this gateway's (Sightings). Invariant:
    counts are the cluster's at the moment of the read. Concurrency: read-only, any number at
    once. Event loop only.
    """

    def __init__(
        self,
        cluster: Cluster,
        catalog: StreamCatalog,
        streams: JetStreamStreams,
        consumers: ConsumerStore,
        sightings: Sightings,
    ) -> None:
        self._cluster = cluster
        self._catalog = catalog
        self._streams = streams
        self._consumers = consumers
        self._sightings = sightings

    async def list_streams(self) -> list[StreamInfo]:
        """Every stream's description, without per-name counts."""
        return [await self.describe(record, False) for record in await self._catalog.all_records()]

    async def describe_stream(self, stream: str) -> StreamInfo:
        """One stream's description with its per-name counts and its current retention."""
        record = await self._catalog.readable(stream)
        return await self.describe(await self._catalog.fresh(record), True)

    async def describe(self, record: StreamRecord, per_name: bool) -> StreamInfo:
        """The stream's description from its leader's state and its consumer records."""
        state = await self._streams.state(record, per_subject=per_name)
        consumers = await self._consumer_records(record)
        info: StreamInfo = {
            "name": record.name,
            "owner": record.owner,
            "createdAt": record.created_at,
            "eventCount": int(state.get("messages", 0)),
            "bytes": int(state.get("bytes", 0)),
            "firstSequence": int(state["first_seq"]),
            "lastSequence": int(state["last_seq"]),
            "lastAppendAt": received_at(state["last_ts"]) if state.get("messages") else None,
            "consumers": len({c.consumer for c in consumers}),
        }
        if record.retention:
            info["retention"] = record.retention
        if per_name:
            subjects: dict[str, int] = state.get("subjects") or {}
            info["eventNames"] = dict(
                sorted((name_from_token(s.rsplit(".", 1)[1]), n) for s, n in subjects.items())
            )
        return info

    async def _consumer_records(self, record: StreamRecord) -> list[ConsumerRecord]:
        keys = await self._cluster.bucket_keys(CONSUMERS_BUCKET, record.names.consumer_keys)
        with cluster_errors("listing consumers"):
            return await self._consumers.records(keys)

    async def consumer_lag(self, stream: str) -> list[ConsumerLag]:
        """Each consumer's position, acknowledged counts and lag per event name."""
        return await self._lag(await self._catalog.readable(stream))

    async def _lag(self, record: StreamRecord) -> list[ConsumerLag]:
        state = await self._streams.state(record, per_subject=True)
        totals: dict[str, int] = state.get("subjects") or {}
        consumers = await self._consumer_records(record)
        moment = now()
        rows: list[ConsumerLag] = []
        for entry in sorted(consumers, key=lambda c: (c.consumer, c.event_name)):
            subject = record.names.subject(entry.event_name)
            total = int(totals.get(subject, 0))
            after = await self._count_after(record, subject, entry.position)
            acknowledged = total - after + len(entry.acked)
            rows.append(
                {
                    "consumer": entry.consumer,
                    "eventName": entry.event_name,
                    "position": entry.position,
                    "acknowledged": acknowledged,
                    "acknowledgedOutOfOrder": len(entry.acked),
                    "behind": total - acknowledged,
                    "consumedPercentage": round(100.0 * acknowledged / total, 2) if total else 100.0,
                    "inFlight": entry.leased(moment),
                }
            )
        return rows

    async def _count_after(self, record: StreamRecord, subject: str, position: int) -> int:
        """How many events of the subject follow `position` (the server's pending count)."""
        with cluster_errors(f"reading stream {record.name!r}"):
            page = await self._cluster.reader.batch(record.names.js_stream, position + 1, subject, 1)
        if not page:
            return 0
        return int(page[0].headers.get("Nats-Num-Pending", "0")) + 1

    async def figures(self) -> list[StreamFigures]:
        """Per stream, the figures /metrics and the console show."""
        out = []
        for record in await self._catalog.all_records():
            state = await self._streams.state(record)
            out.append(
                StreamFigures(
                    name=record.name,
                    last_sequence=int(state["last_seq"]),
                    events=int(state.get("messages", 0)),
                    bytes=int(state.get("bytes", 0)),
                    waiting_readers=self._sightings.waiting_readers(record.name),
                    fsyncs=0,  # the NATS servers fsync (sync_interval: always), not the gateway
                    fsync_seconds=0.0,
                    appends=CommitFigures(),  # JetStream commits; the gateway has no group commit
                    consumers=await self._lag(record),
                )
            )
        return out

    async def health(self) -> EngineHealth:
        """How many streams exist (the streams bucket's count); none is ever damaged here."""
        with cluster_errors("reading the streams bucket"):
            info = await self._cluster.js.stream_info(f"KV_{STREAMS_BUCKET}")
        return EngineHealth(int(info.state.messages), [])
