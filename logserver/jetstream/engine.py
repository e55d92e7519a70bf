"""JetStreamEngine: the engine interface on a NATS JetStream cluster, for stateless gateways.

What maps to what (docs/operations.md "JetStream engine" has the reasons):
- a logserver stream is one JetStream stream `LS_<digest of the name>`, subjects
  `ls.<digest>.<base64url event name>`; the JetStream sequence is the event's sequence;
- the stream's owner, creation time, id prefix and own retention are one key of the
  `logserver-streams` KV bucket, created with create-only (exactly one first producer wins);
- an event id is a UUIDv8 of the stream's random 64-bit prefix and the sequence;
- Idempotency-Key is `Nats-Msg-Id` (the stream's duplicate window is the idempotency window),
  X-Expected-Sequence is `Nats-Expected-Last-Sequence`, a batch is an atomic batch publish;
- consumer positions, acknowledged sets, leases and delivery counts are keys of the
  `logserver-consumers` bucket, changed by compare-and-swap (consumers.py);
- long-poll waits on a core subscription to `lsn.<digest>.<name>`, where the gateway that
  appended announces each stored event's sequence after JetStream acknowledged it.

Nothing a request needs is kept only in one gateway: its caches hold facts that never change
once written (StreamCatalog's owners and id prefixes) or only speed a gateway up (Sightings:
the highest sequence it has seen per stream, for completing reads a lagging replica answered
short).
"""

from __future__ import annotations

from logserver.engine import (
    Body,
    Bound,
    ConsumerLag,
    EngineHealth,
    HistoryPage,
    HistoryQuery,
    RetentionResult,
    StreamFigures,
    StreamInfo,
)

from .acknowledging import Acknowledgements
from .appends import Appender
from .batches import BatchAppender
from .browsing import Browsing
from .catalog import StreamCatalog
from .connection import Cluster
from .consumers import ConsumerStore
from .consuming import Consumption
from .js_streams import JetStreamStreams
from .listings import Listings
from .scanning import EventScanner
from .settings import JetStreamSettings
from .sightings import Sightings


class JetStreamEngine:
    """The Engine on one NATS connection: each call is handed to the part that owns its job.

    Owns the Cluster (its connection, closed by `close`) and the parts built on it: the
    catalog of streams, appends, batches, reads, consumers, acknowledgements, listings.
    Invariant: nothing a request needs is kept only in this gateway (see the module's
    docstring). Concurrency: every method may run concurrently with any other, here and in
    other gateways; shared state is changed only in JetStream (create-only keys, expected
    sequences, CAS). Event loop only.
    """

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        sightings = Sightings()
        consumers = ConsumerStore(cluster.consumers, cluster.settings.publish_timeout_seconds)
        streams = JetStreamStreams(cluster, sightings)
        self._catalog = StreamCatalog(cluster, streams)
        scanner = EventScanner(cluster, streams, sightings)
        self._appender = Appender(cluster, self._catalog, sightings)
        self._batches = BatchAppender(cluster, self._catalog, sightings)
        self._browsing = Browsing(cluster, self._catalog, scanner, sightings)
        self._acks = Acknowledgements(self._catalog, streams, scanner, consumers, cluster.reader)
        max_deliveries = cluster.settings.limits.max_deliveries
        self._consumption = Consumption(
            self._catalog, scanner, consumers, self._appender, self._acks, max_deliveries
        )
        self._listings = Listings(cluster, self._catalog, streams, consumers, sightings)

    @classmethod
    async def open(cls, settings: JetStreamSettings) -> JetStreamEngine:
        """Check every node (preflight), connect, and open (or create) the three buckets."""
        return cls(await Cluster.open(settings))

    async def close(self) -> None:
        await self._cluster.close()

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None = None,
        key: str | None = None,
    ) -> str:
        return await self._appender.append(stream, producer_id, body, expected_last, key)

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        return await self._batches.append_batch(stream, producer_id, bodies, expected_last, key)

    async def consume(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        return await self._consumption.consume(stream, event_name, consumer_id, limit)

    async def consume_leased(
        self, stream: str, event_name: str, consumer_id: str, limit: int, ack_wait: float
    ) -> bytes:
        return await self._consumption.consume_leased(stream, event_name, consumer_id, limit, ack_wait)

    async def wait_for_events(self, stream: str, event_name: str | None, timeout: float) -> bool:
        return await self._browsing.wait_for_events(stream, event_name, timeout)

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        await self._acks.ack(stream, consumer_id, event_id)

    async def ack_many(self, stream: str, consumer_id: str, event_ids: list[str]) -> list[bool]:
        return await self._acks.ack_many(stream, consumer_id, event_ids)

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        await self._acks.nack(stream, consumer_id, event_id)

    async def seek(self, stream: str, consumer_id: str, target: Bound, event_name: str | None) -> int:
        return await self._acks.seek(stream, consumer_id, target, event_name)

    async def get_event(self, stream: str, event_id: str) -> bytes:
        return await self._browsing.get_event(stream, event_id)

    async def history(self, stream: str, query: HistoryQuery) -> HistoryPage:
        return await self._browsing.history(stream, query)

    async def list_streams(self) -> list[StreamInfo]:
        return await self._listings.list_streams()

    async def describe_stream(self, stream: str) -> StreamInfo:
        return await self._listings.describe_stream(stream)

    async def consumer_lag(self, stream: str) -> list[ConsumerLag]:
        return await self._listings.consumer_lag(stream)

    async def set_retention(
        self, stream: str, max_age_seconds: float | None, max_bytes: int | None
    ) -> RetentionResult:
        """Store the limits in the stream's record and its JetStream config, which applies them
        itself (it removes messages, not segments: 0 segments removed)."""
        limits: dict[str, float] = {}
        if max_age_seconds is not None:
            limits["maxAgeSeconds"] = max_age_seconds
        if max_bytes is not None:
            limits["maxBytes"] = max_bytes
        changed = await self._catalog.set_retention(stream, limits or None)
        return RetentionResult(await self._listings.describe(changed, False), 0)

    async def figures(self) -> list[StreamFigures]:
        return await self._listings.figures()

    async def health(self) -> EngineHealth:
        return await self._listings.health()
