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

Nothing a request needs is kept only in one gateway: the caches below hold facts that never
change once written (owners, id prefixes) or only speed a gateway up (the highest sequence
it has seen per stream, for completing reads a lagging replica answered short).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nats
import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from logserver.engine import (
    DEAD_LETTER_PRODUCER,
    MAX_SEQUENCE,
    Body,
    Bound,
    CommitFigures,
    ConsumerLag,
    EngineError,
    EngineHealth,
    EngineLimits,
    EngineUnavailable,
    EventNotFound,
    HistoryPage,
    HistoryQuery,
    InvalidRequest,
    RetentionResult,
    SequenceMismatch,
    StreamFigures,
    StreamInfo,
    StreamLimitReached,
    StreamLocked,
    StreamNotFound,
    check_name,
    check_stream_name,
    dead_letter_stream,
    refuse_client_dead_letters,
)

from .consumers import ConsumerRecord, ConsumerStore, now
from .names import (
    BATCH_KEYS_BUCKET,
    CONSUMERS_BUCKET,
    STREAMS_BUCKET,
    StreamNames,
    digest,
    event_name_of_subject,
    format_event_id,
    name_from_token,
    parse_event_id,
)
from .preflight import check_servers
from .reads import MessageReader, StoredMessage, received_at
from .retry import RETRY_PAUSE_SECONDS, through_elections

log = logging.getLogger("logserver.jetstream")

SERVER_FIELDS = frozenset(
    ("_crc", "_more", "eventId", "stream", "sequence", "producerId", "receivedAt", "idempotencyKey")
)
MAX_ATOMIC_BATCH = 1000  # the server's limit of messages in one atomic batch
READ_PAGE = 256  # messages per batched direct get
WRONG_LAST_SEQUENCE = 10071
BATCH_DUPLICATE_MESSAGE_ID = 10201
INSUFFICIENT_RESOURCES = 10047  # "insufficient storage resources available"
PUBLISH_ATTEMPT_SECONDS = 2.0
INTERNAL_MSG_ID_PREFIX = "logserver-append-"
T = TypeVar("T")
_CURRENT_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")


@dataclass(frozen=True)
class JetStreamSettings:
    """Where the cluster is and how the engine uses it."""

    servers: list[str]
    monitor_urls: list[str]
    replicas: int = 3
    limits: EngineLimits = field(default_factory=EngineLimits)
    retention_max_age_seconds: float | None = None  # the server-wide defaults of a stream
    retention_max_bytes: int | None = None
    publish_timeout_seconds: float = 15.0  # appends retry this long through a leader election
    connect_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class StreamRecord:
    """One stream's entry of the streams bucket: written once by its creator."""

    name: str
    owner: str
    created_at: str
    prefix: int
    retention: dict[str, float] | None = None

    @property
    def names(self) -> StreamNames:
        return StreamNames(self.name)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "owner": self.owner,
                "createdAt": self.created_at,
                "prefix": self.prefix,
                "retention": self.retention,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamRecord:
        raw = orjson.loads(data)
        return cls(raw["name"], raw["owner"], raw["createdAt"], int(raw["prefix"]), raw.get("retention"))


@contextlib.contextmanager
def cluster_errors(what: str) -> Iterator[None]:
    """Turn the NATS client's errors (timeouts, no responders, lost connection) into EngineUnavailable."""
    try:
        yield
    except EngineError:
        raise
    except (NatsError, TimeoutError) as exc:
        raise EngineUnavailable(f"{what}: {exc!r}") from exc


def stored_body(producer_id: str, key: str | None, body: Body) -> bytes:
    """The message data: producerId (and idempotencyKey) first, then the body without server fields."""
    members: dict[str, Any] = {"producerId": producer_id}
    if key is not None:
        members["idempotencyKey"] = key
    members.update((k, v) for k, v in body.items() if k not in SERVER_FIELDS)
    return orjson.dumps(members)


class JetStreamEngine:
    """The engine over one NATS connection. Owns that connection and the per-gateway caches.

    Concurrency: every method may run concurrently with any other, here and in other gateways;
    shared state is changed only in JetStream (create-only keys, expected sequences, CAS).
    """

    def __init__(
        self,
        settings: JetStreamSettings,
        connection: Client,
        js: JetStreamContext,
        streams: KeyValue,
        consumers: KeyValue,
        batch_keys: KeyValue,
    ) -> None:
        self._settings = settings
        self._limits = settings.limits
        self._nc = connection
        self._js = js
        self._streams = streams
        self._consumers = ConsumerStore(consumers, settings.publish_timeout_seconds)
        self._batch_keys = batch_keys
        self._reader = MessageReader(connection)
        self._records: dict[str, StreamRecord] = {}  # owners and prefixes never change
        self._created: set[str] = set()  # JetStream streams known to exist
        self._last_seen: dict[str, int] = {}  # the highest sequence this gateway saw, per stream
        self._waiting: dict[str, int] = {}  # long-poll readers waiting here, per stream
        # Per (stream, subject): how far this gateway's reads of that subject have looked; a
        # long-poll that starts later first asks the leader for anything after it (appended
        # between a consume and the wait's subscription, which a wake-up would have missed).
        self._covered: dict[tuple[str, str], int] = {}

    # ---- opening and closing ----------------------------------------------------------------

    @classmethod
    async def open(cls, settings: JetStreamSettings) -> JetStreamEngine:
        """Check every node (preflight), connect, and open (or create) the three buckets."""
        await check_servers(settings.monitor_urls)
        try:
            connection = await nats.connect(
                servers=settings.servers,
                connect_timeout=settings.connect_timeout_seconds,
                max_reconnect_attempts=-1,
                name="logserver",
            )
        except (NatsError, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot connect to NATS at {settings.servers}: {exc!r}") from exc
        js = connection.jetstream(timeout=PUBLISH_ATTEMPT_SECONDS * 2)
        deadline = asyncio.get_running_loop().time() + settings.publish_timeout_seconds
        keys_ttl = settings.limits.idempotency_window_seconds
        try:
            while True:  # a bucket without a leader yet (an election) answers after a few seconds
                try:
                    streams = await _bucket(js, STREAMS_BUCKET, settings.replicas, None)
                    consumers = await _bucket(js, CONSUMERS_BUCKET, settings.replicas, None)
                    batch_keys = await _bucket(js, BATCH_KEYS_BUCKET, settings.replicas, keys_ttl)
                    break
                except (NatsError, TimeoutError) as exc:
                    if asyncio.get_running_loop().time() > deadline:
                        raise EngineUnavailable(f"opening the logserver buckets: {exc!r}") from exc
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
        except BaseException:
            await connection.close()
            raise
        log.info("JetStream engine connected to %s", connection.connected_url)
        return cls(settings, connection, js, streams, consumers, batch_keys)

    async def close(self) -> None:
        with contextlib.suppress(NatsError, TimeoutError):
            await self._nc.drain()

    # ---- streams ------------------------------------------------------------------------------

    async def _record(self, stream: str) -> StreamRecord | None:
        """The stream's record (cached once seen: it is written once), or None if none exists."""
        known = self._records.get(stream)
        if known is not None:
            return known
        check_stream_name(stream)
        with cluster_errors(f"reading stream {stream!r}"):
            try:
                entry = await self._retrying(lambda: self._streams.get(digest(stream)), "reading a stream")
            except KeyNotFoundError:
                return None
        assert entry.value is not None
        record = StreamRecord.decode(entry.value)
        self._records[stream] = record
        return record

    async def _readable(self, stream: str) -> StreamRecord:
        record = await self._record(stream)
        if record is None:
            raise StreamNotFound(f"stream '{stream}' does not exist")
        return record

    async def _writable(
        self, stream: str, producer_id: str, expected_last: int | None, server: bool = False
    ) -> StreamRecord:
        """The stream to append to, created by this producer if it does not exist yet.

        Dead-letter streams take only the engine's own appends (`server`), whatever producer id
        a client sends.
        """
        if not server:
            refuse_client_dead_letters(stream)
        record = await self._record(stream)
        if record is None:
            if expected_last not in (None, 0):
                raise SequenceMismatch(expected_last, 0)  # nothing is created for a failed guard
            record = await self._create(stream, producer_id)
        if record.owner != producer_id:
            raise StreamLocked("Second writers not allowed")
        await self._ensure_js_stream(record)
        return record

    async def _create(self, stream: str, producer_id: str) -> StreamRecord:
        """Create the stream's record create-only: of racing first producers exactly one wins."""
        with cluster_errors(f"creating stream {stream!r}"):
            info = await self._retrying(
                lambda: self._js.stream_info(f"KV_{STREAMS_BUCKET}"), "counting streams"
            )
            if info.state.messages >= self._limits.max_streams:
                raise StreamLimitReached(self._limits.max_streams)
            record = StreamRecord(stream, producer_id, _utc_now(), secrets.randbits(64))
            try:
                revision = await self._retrying(
                    lambda: self._streams.create(digest(stream), record.encode()), "creating"
                )
                await self._refuse_beyond_limit(stream, revision)
                log.info("stream %r created by producer %r", stream, producer_id)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another producer (or gateway) created it first: theirs is the record. While
                # its write is still being applied, the key reads as missing for a moment.
                pass
        deadline = asyncio.get_running_loop().time() + self._settings.publish_timeout_seconds
        while (found := await self._record(stream)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {stream!r}: its creation did not become visible")
            await asyncio.sleep(RETRY_PAUSE_SECONDS / 10)
        return found

    async def _refuse_beyond_limit(self, stream: str, revision: int) -> None:
        """Of creators racing past --max-streams (each counted before the others' records were
        written), the records written first keep their streams; a later one takes its record
        back and is refused, as the file engine refuses it (409).

        The record is removed by purging its message, which leaves no tombstone to be counted.
        Records are ranked by revision; a stream whose retention changed (a newer revision)
        during such a race ranks after the creators, so that rare race may admit one too many.
        """
        bucket = f"KV_{STREAMS_BUCKET}"
        info = await self._retrying(lambda: self._js.stream_info(bucket), "counting streams")
        if info.state.messages <= self._limits.max_streams:
            return
        earlier = 0
        for key in await self._bucket_keys(STREAMS_BUCKET, ">"):
            try:
                entry = await self._retrying(functools.partial(self._streams.get, key), "counting streams")
            except KeyNotFoundError:
                continue  # another refused creator took its record back
            if entry.revision is not None and entry.revision < revision:
                earlier += 1
        if earlier < self._limits.max_streams:
            return
        # KV buckets deny message deletes; a subject purge below the next revision removes this
        # record only (never a later one of the same name) and writes no marker.
        subject = f"$KV.{STREAMS_BUCKET}.{digest(stream)}"
        await self._retrying(
            lambda: self._js.purge_stream(bucket, seq=revision + 1, subject=subject), "refusing a stream"
        )
        log.info("stream %r refused: %d streams were created before it", stream, earlier)
        raise StreamLimitReached(self._limits.max_streams)

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """`operation` retried through a leader election (for repeatable operations only)."""
        return await through_elections(operation, self._settings.publish_timeout_seconds, what)

    def _stream_config(self, record: StreamRecord) -> StreamConfig:
        own = record.retention or {}
        max_age = own.get("maxAgeSeconds", self._settings.retention_max_age_seconds)
        max_bytes = own.get("maxBytes", self._settings.retention_max_bytes)
        names = record.names
        return StreamConfig(
            name=names.js_stream,
            description=f"logserver stream {record.name}",
            subjects=[names.all_events],
            num_replicas=self._settings.replicas,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            allow_atomic=True,
            # JetStream refuses a duplicate window longer than the stream's max age
            duplicate_window=min(self._limits.idempotency_window_seconds, max_age or float("inf")),
            max_age=max_age if max_age is not None else 0,
            max_bytes=int(max_bytes) if max_bytes is not None else -1,
        )

    async def _ensure_js_stream(self, record: StreamRecord) -> None:
        """Create the JetStream stream of a record unless it exists (a creator may have died between)."""
        if record.name in self._created:
            return
        names = record.names

        async def create() -> None:
            try:
                await self._js.stream_info(names.js_stream)
            except NotFoundError:
                await self._configure(self._stream_config(record), create=True)

        with cluster_errors(f"creating stream {record.name!r}"):
            await self._retrying(create, "creating a stream")
        self._created.add(record.name)

    async def _configure(self, config: StreamConfig, create: bool) -> None:
        """Add or update a JetStream stream.

        JetStream reserves a stream's max_bytes on every replica's disk up front, and refuses a
        limit it cannot reserve (insufficient storage resources). Such a limit is more than the
        disks hold beside the other streams' reservations, so the stream cannot reach it: it is
        then configured without a byte limit, while logserver keeps and reports the one asked
        for, as the file engine accepts any limit up to 2^62 bytes.
        """
        put = self._js.add_stream if create else self._js.update_stream
        try:
            await put(config)
        except APIError as exc:
            if exc.err_code != INSUFFICIENT_RESOURCES or config.max_bytes in (None, -1):
                raise
            log.info(
                "stream %s: max_bytes %s is more than JetStream can reserve", config.name, config.max_bytes
            )
            await put(dataclasses.replace(config, max_bytes=-1))

    async def _state(self, record: StreamRecord, per_subject: bool = False) -> dict[str, Any]:
        """STREAM.INFO's state of the stream (per-subject counts when asked), from the leader."""
        request: dict[str, Any] = {"subjects_filter": record.names.all_events} if per_subject else {}
        with cluster_errors(f"reading stream {record.name!r}"):
            reply = await self._retrying(
                lambda: self._nc.request(
                    f"$JS.API.STREAM.INFO.{record.names.js_stream}",
                    orjson.dumps(request),
                    PUBLISH_ATTEMPT_SECONDS,
                ),
                "reading a stream's state",
            )
        answer = orjson.loads(reply.data)
        if "error" in answer:
            if answer["error"].get("code") == 404:
                return {"messages": 0, "bytes": 0, "first_seq": 1, "last_seq": 0}
            raise EngineUnavailable(f"stream {record.name!r}: {answer['error'].get('description')}")
        state: dict[str, Any] = answer["state"]
        if not state.get("messages"):
            state["first_seq"] = state.get("last_seq", 0) + 1
        self._saw(record.name, int(state.get("last_seq", 0)))
        return state

    # ---- appending ----------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None = None,
        key: str | None = None,
    ) -> str:
        return await self._append(stream, producer_id, body, expected_last, key, server=False)

    async def _append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None,
        key: str | None,
        server: bool,
    ) -> str:
        """One append; `server` for the engine's own (dead letters), which reserved streams take."""
        record = await self._writable(stream, producer_id, expected_last, server)
        event_name = body["event"]["name"]
        check_name(event_name, "event.name", self._limits.max_event_name_chars)
        if key is not None:
            check_name(key, "idempotency key")
        headers = {"Nats-Msg-Id": key if key is not None else _internal_msg_id()}
        if expected_last is not None:
            headers["Nats-Expected-Last-Sequence"] = str(expected_last)
        data = stored_body(producer_id, key, body)
        subject = record.names.subject(event_name)
        sequence = await self._publish(record, subject, data, headers)
        await self._announce(record, {event_name: sequence})
        return format_event_id(record.prefix, sequence)

    async def _publish(self, record: StreamRecord, subject: str, data: bytes, headers: dict[str, str]) -> int:
        """Publish and wait for the stream's acknowledgement, retrying through leader elections.

        Every attempt carries the same Nats-Msg-Id, so a retry of an append that was stored
        answers the stored one (the issue's probe: exactly once through a leader kill).
        """
        deadline = asyncio.get_running_loop().time() + self._settings.publish_timeout_seconds
        while True:
            try:
                reply = await self._nc.request(subject, data, PUBLISH_ATTEMPT_SECONDS, headers=headers)
                answer = orjson.loads(reply.data) if reply.data else {}
            except (NatsError, TimeoutError) as exc:
                failure: str = repr(exc)
            else:
                error = answer.get("error")
                if error is None and "seq" in answer:
                    sequence = int(answer["seq"])
                    self._saw(record.name, sequence)
                    return sequence
                failure = self._refusal(error or {}, headers)
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {record.name!r} did not acknowledge the append: {failure}")
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    def _refusal(self, error: dict[str, Any], headers: dict[str, str]) -> str:
        """Raise for an answer a retry cannot change; return the text of one that may pass."""
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            found = _CURRENT_SEQUENCE.search(str(error.get("description", "")))
            expected = int(headers.get("Nats-Expected-Last-Sequence", "0"))
            raise SequenceMismatch(expected, int(found[1]) if found else 0)
        if error.get("code") == 400:
            raise InvalidRequest(str(error.get("description", "refused by the stream")))
        return str(error.get("description", error))  # 503 and the like: no leader yet

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        if not 1 <= len(bodies) <= min(self._limits.max_batch, MAX_ATOMIC_BATCH):
            raise InvalidRequest(f"a batch holds 1 to {min(self._limits.max_batch, MAX_ATOMIC_BATCH)} events")
        record = await self._writable(stream, producer_id, expected_last)
        for index, body in enumerate(bodies):
            check_name(
                body["event"]["name"], f"events[{index}].event.name", self._limits.max_event_name_chars
            )
        if key is not None:
            check_name(key, "idempotency key")
        msg_id = key if key is not None else _internal_msg_id()
        first, count = await self._publish_batch(record, producer_id, bodies, expected_last, key, msg_id)
        last_by_name: dict[str, int] = {}
        for offset, body in enumerate(bodies[:count]):
            last_by_name[body["event"]["name"]] = first + offset
        await self._announce(record, last_by_name)
        return [format_event_id(record.prefix, first + k) for k in range(count)]

    async def _publish_batch(
        self,
        record: StreamRecord,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None,
        key: str | None,
        msg_id: str,
    ) -> tuple[int, int]:
        """One atomic batch publish (raw Nats-Batch-* headers: nats-py has no helper); returns
        (first sequence, count). A batch whose Nats-Msg-Id was stored before (a retried
        request, or a retry after a lost commit answer) answers that batch's sequences."""
        deadline = asyncio.get_running_loop().time() + self._settings.publish_timeout_seconds
        names = record.names
        payloads = [(names.subject(b["event"]["name"]), stored_body(producer_id, key, b)) for b in bodies]
        while True:
            try:
                answer = await self._send_batch(payloads, expected_last, msg_id)
            except (NatsError, TimeoutError) as exc:
                failure = repr(exc)
            else:
                error = answer.get("error")
                if error is None and "seq" in answer:
                    last, count = int(answer["seq"]), int(answer.get("count", len(bodies)))
                    self._saw(record.name, last)
                    if key is not None:
                        await self._remember_batch(record, key, last - count + 1, count)
                    return last - count + 1, count
                if (error or {}).get("err_code") == BATCH_DUPLICATE_MESSAGE_ID:
                    return await self._stored_batch(record, key, msg_id)
                failure = self._refusal(error or {}, {"Nats-Expected-Last-Sequence": str(expected_last or 0)})
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {record.name!r} did not commit the batch: {failure}")
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _send_batch(
        self, payloads: list[tuple[str, bytes]], expected_last: int | None, msg_id: str
    ) -> dict[str, Any]:
        """The messages of one batch attempt; the commit's answer (a pub ack or an error)."""
        batch_id = secrets.token_hex(16)
        last = len(payloads)
        for number, (subject, data) in enumerate(payloads, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number == 1:
                headers["Nats-Msg-Id"] = msg_id
                if expected_last is not None:
                    headers["Nats-Expected-Last-Sequence"] = str(expected_last)
            if number == last:
                headers["Nats-Batch-Commit"] = "1"
            if number == 1 or number == last:  # the first is confirmed (an early refusal), the last commits
                reply = await self._nc.request(subject, data, PUBLISH_ATTEMPT_SECONDS, headers=headers)
                if reply.data:
                    answer: dict[str, Any] = orjson.loads(reply.data)
                    if number == last or "error" in answer:
                        return answer
            else:
                await self._nc.publish(subject, data, headers=headers)
        raise EngineUnavailable("the batch commit was not answered")

    async def _remember_batch(self, record: StreamRecord, key: str, first: int, count: int) -> None:
        """Keep a keyed batch's sequences for the idempotency window (a repeat answers them)."""
        with cluster_errors("recording the batch's idempotency key"):
            await self._batch_keys.put(
                f"{record.names.key}.{digest(key)}", orjson.dumps({"first": first, "count": count})
            )

    async def _stored_batch(self, record: StreamRecord, key: str | None, msg_id: str) -> tuple[int, int]:
        """The (first, count) of the stored batch whose first message carries `msg_id`."""
        if key is not None:
            with cluster_errors("reading the batch's idempotency key"):
                try:
                    entry = await self._batch_keys.get(f"{record.names.key}.{digest(key)}")
                except KeyNotFoundError:
                    entry = None
            if entry is not None and entry.value:
                seen = orjson.loads(entry.value)
                return int(seen["first"]), int(seen["count"])
        return await self._scan_for_batch(record, msg_id)

    async def _scan_for_batch(self, record: StreamRecord, msg_id: str) -> tuple[int, int]:
        """Find a batch by its first message's Nats-Msg-Id in the idempotency window (the rare
        path: the commit was stored but its answer lost, or its key record not yet written)."""
        since = datetime.now(UTC) - timedelta(seconds=self._limits.idempotency_window_seconds + 5)
        js_stream = record.names.js_stream
        page = await self._reader.batch_from_time(js_stream, since, READ_PAGE)
        first: int | None = None
        while page:
            for message in page:
                if first is None and message.headers.get("Nats-Msg-Id") == msg_id:
                    first = message.sequence
                if first is not None and message.headers.get("Nats-Batch-Commit"):
                    return first, message.sequence - first + 1
            page = await self._reader.batch(js_stream, page[-1].sequence + 1, None, READ_PAGE)
        raise EngineUnavailable(f"stream {record.name!r}: a stored batch was not found again")

    async def _announce(self, record: StreamRecord, last_by_name: dict[str, int]) -> None:
        """Wake long-poll readers (in every gateway) of the names just stored."""
        with contextlib.suppress(NatsError):
            for event_name, sequence in last_by_name.items():
                await self._nc.publish(record.names.notify_subject(event_name), b"%d" % sequence)

    def _cover(self, stream: str, subject: str, sequence: int) -> None:
        key = (stream, subject)
        if sequence > self._covered.get(key, 0):
            self._covered[key] = sequence

    def _saw(self, stream: str, sequence: int) -> None:
        if sequence > self._last_seen.get(stream, 0):
            self._last_seen[stream] = sequence

    # ---- reading --------------------------------------------------------------------------------

    async def _scan(
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
        found: list[StoredMessage] = []
        cursor = max(start, 1)
        if subject is not None:
            self._cover(record.name, subject, cursor - 1)
        # Ask for what is still wanted, doubling while `wanted` refuses some: every message
        # costs the gateway its header parsing, so a page of 256 for limit=100 cost 2.5x.
        size = min(limit, READ_PAGE)
        with cluster_errors(f"reading stream {record.name!r}"):
            while len(found) < limit and (until is None or cursor < until):
                page = await self._reader.batch(js_stream, cursor, subject, size)
                highest = page[-1].sequence if page else cursor - 1
                if len(page) < size and self._last_seen.get(record.name, 0) > highest:
                    confirmed = await self._reader.leader_next(js_stream, highest, subject)
                    if confirmed is not None:
                        page.append(confirmed)
                for message in page:
                    if until is not None and message.sequence >= until:
                        return found
                    self._saw(record.name, message.sequence)
                    if subject is not None:
                        self._cover(record.name, subject, message.sequence)
                    if wanted(message):
                        found.append(message)
                        if len(found) == limit:
                            return found
                if not page or (len(page) < size and page[-1].sequence <= highest):
                    return found
                cursor = page[-1].sequence + 1
                size = min(max(limit - len(found), size * 2), READ_PAGE)
        return found

    def _render(self, record: StreamRecord, message: StoredMessage, deliveries: int | None = None) -> bytes:
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

    async def consume(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        record = await self._readable(stream)
        check_name(event_name, "eventName")
        names = record.names
        state, _ = await self._load_consumer(record, consumer_id, event_name)
        messages = await self._scan(
            record,
            names.subject(event_name),
            state.position + 1,
            lambda m: not state.is_acked(m.sequence),
            limit,
        )
        return _json_array([self._render(record, m) for m in messages])

    async def _load_consumer(
        self, record: StreamRecord, consumer_id: str, event_name: str
    ) -> tuple[ConsumerRecord, int]:
        with cluster_errors(f"reading consumer {consumer_id!r}"):
            return await self._consumers.load(
                record.names.consumer_key(consumer_id, event_name), consumer_id, event_name
            )

    async def consume_leased(
        self, stream: str, event_name: str, consumer_id: str, limit: int, ack_wait: float
    ) -> bytes:
        record = await self._readable(stream)
        check_name(event_name, "eventName")
        subject = record.names.subject(event_name)
        max_deliveries = self._limits.max_deliveries
        delivered: list[tuple[StoredMessage, int]] = []
        dead: list[tuple[StoredMessage, int]] = []

        async def lease(state: ConsumerRecord) -> bool:
            delivered.clear()
            dead.clear()
            moment = now()
            state.forget_expired_leases(moment)

            def deliverable(message: StoredMessage) -> bool:
                sequence = message.sequence
                if state.is_acked(sequence) or state.leases.get(sequence, 0.0) > moment:
                    return False
                count = state.deliveries.get(sequence, 0) + 1
                if max_deliveries and count > max_deliveries:
                    dead.append((message, count - 1))
                    state.leases[sequence] = moment + ack_wait  # not handed out again while it moves
                    return False
                return True

            for message in await self._scan(record, subject, state.position + 1, deliverable, limit):
                count = state.deliveries.get(message.sequence, 0) + 1
                state.deliveries[message.sequence] = count
                state.leases[message.sequence] = moment + ack_wait
                delivered.append((message, count))
            return bool(delivered or dead)

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"leasing for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, lease)
        for message, deliveries in dead:
            await self._dead_letter(record, consumer_id, event_name, message, deliveries)
        return _json_array([self._render(record, m, n) for m, n in delivered])

    async def _dead_letter(
        self, source: StreamRecord, consumer_id: str, event_name: str, message: StoredMessage, deliveries: int
    ) -> None:
        """Append the event to `<stream>.dlq` (once, keyed), then acknowledge it for the consumer."""
        original = orjson.loads(self._render(source, message))
        body = {k: v for k, v in original.items() if k not in SERVER_FIELDS}
        body["deadLetter"] = {
            "stream": source.name,
            "eventId": original["eventId"],
            "sequence": message.sequence,
            "producerId": original["producerId"],
            "receivedAt": original["receivedAt"],
            "consumer": consumer_id,
            "deliveries": deliveries,
        }
        where = "\n".join((source.name, consumer_id, str(message.sequence)))
        key = f"dead-letter-{digest(where)}"
        try:
            dead_letters = dead_letter_stream(source.name)
            await self._append(dead_letters, DEAD_LETTER_PRODUCER, body, None, key, server=True)
        except EngineError as exc:
            log.error(
                "stream %r: event %d not dead-lettered (%s); it stays", source.name, message.sequence, exc
            )
            return
        await self._ack_sequences(source, consumer_id, event_name, [message.sequence])

    async def wait_for_events(self, stream: str, event_name: str | None, timeout: float) -> bool:
        record = await self._readable(stream)
        names = record.names
        subject = names.notify_subject(event_name) if event_name is not None else names.all_notifications
        events = names.subject(event_name) if event_name is not None else None
        if events is not None:
            looked = self._covered.get((stream, events), 0)
        else:
            looked = self._last_seen.get(stream, 0)
        self._waiting[stream] = self._waiting.get(stream, 0) + 1
        try:
            with cluster_errors("waiting for events"):
                subscription = await self._nc.subscribe(subject, max_msgs=1)
                try:
                    if await self._reader.leader_next(names.js_stream, looked, events) is not None:
                        return True  # stored before the subscription began
                    message = await subscription.next_msg(timeout=timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    return False
                finally:
                    with contextlib.suppress(NatsError):
                        await subscription.unsubscribe()
            with contextlib.suppress(ValueError):
                self._saw(stream, int(message.data))
            return True
        finally:
            self._waiting[stream] -= 1

    # ---- acknowledging ----------------------------------------------------------------------------

    def _sequence_of(self, record: StreamRecord, event_id: str) -> int:
        parsed = parse_event_id(event_id)
        if parsed is None or parsed[0] != record.prefix or not 1 <= parsed[1] <= MAX_SEQUENCE:
            raise EventNotFound(f"event '{event_id}' does not exist in stream '{record.name}'")
        return parsed[1]

    async def _stored(self, record: StreamRecord, event_id: str) -> StoredMessage:
        """The stored message an event id names (the leader is asked if a replica lacks it)."""
        sequence = self._sequence_of(record, event_id)
        with cluster_errors(f"reading stream {record.name!r}"):
            message = await self._reader.one(record.names.js_stream, sequence)
        if message is None:
            raise EventNotFound(f"event '{event_id}' does not exist in stream '{record.name}'")
        return message

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        record = await self._readable(stream)
        message = await self._stored(record, event_id)
        await self._ack_sequences(
            record, consumer_id, event_name_of_subject(message.subject), [message.sequence]
        )

    async def ack_many(self, stream: str, consumer_id: str, event_ids: list[str]) -> list[bool]:
        record = await self._readable(stream)
        found: list[bool] = []
        by_name: dict[str, list[int]] = {}
        for event_id in event_ids:
            try:
                message = await self._stored(record, event_id)
            except EventNotFound:
                found.append(False)
                continue
            found.append(True)
            by_name.setdefault(event_name_of_subject(message.subject), []).append(message.sequence)
        for event_name, sequences in by_name.items():
            await self._ack_sequences(record, consumer_id, event_name, sequences)
        return found

    async def _ack_sequences(
        self, record: StreamRecord, consumer_id: str, event_name: str, sequences: list[int]
    ) -> None:
        """Record acknowledgements in one compare-and-swap write; durable when it returns."""
        subject = record.names.subject(event_name)

        async def acknowledge(state: ConsumerRecord) -> bool:
            changed = False
            for sequence in sequences:
                changed |= state.leases.pop(sequence, None) is not None
                changed |= state.deliveries.pop(sequence, None) is not None
                if not state.is_acked(sequence):
                    state.acked.add(sequence)
                    changed = True
            return changed

        async def advance(state: ConsumerRecord) -> bool:
            await self._advance(record, subject, state)
            return True

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"acknowledging for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, acknowledge, settle=advance)

    async def _advance(self, record: StreamRecord, subject: str, state: ConsumerRecord) -> None:
        """Move the position over the acknowledged events that follow it without a gap.

        Acknowledged sequences below the first stored event of the name are gone (retention)
        and dropped. A lagging replica only stops the walk early, it never skips an event.
        """
        js_stream = record.names.js_stream
        size = 1  # usually the next event is not acknowledged yet: read one, more only while they are
        while state.acked:
            page = await self._reader.batch(
                js_stream, state.position + 1, subject, min(size, len(state.acked))
            )
            if not page:
                return
            state.acked = {s for s in state.acked if s >= page[0].sequence}
            for message in page:
                if message.sequence not in state.acked:
                    return
                state.acked.remove(message.sequence)
                state.position = message.sequence
            size = min(size * 2, READ_PAGE)

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        record = await self._readable(stream)
        message = await self._stored(record, event_id)
        event_name = event_name_of_subject(message.subject)

        async def release(state: ConsumerRecord) -> bool:
            return state.leases.pop(message.sequence, None) is not None

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"releasing for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, release)

    # ---- browsing -----------------------------------------------------------------------------

    async def get_event(self, stream: str, event_id: str) -> bytes:
        record = await self._readable(stream)
        return self._render(record, await self._stored(record, event_id))

    async def _sequence_at(self, record: StreamRecord, bound: Bound) -> int:
        """The first sequence a bound names (a sequence, the first event at or after a time, an edge)."""
        if bound.time is not None:
            with cluster_errors(f"reading stream {record.name!r}"):
                found = await self._reader.batch_from_time(record.names.js_stream, bound.time, 1)
            if found:
                return found[0].sequence
            return int((await self._state(record))["last_seq"]) + 1
        if bound.edge is not None:
            state = await self._state(record)
            return int(state["first_seq"]) if bound.edge == "start" else int(state["last_seq"]) + 1
        assert bound.sequence is not None
        return bound.sequence

    async def history(self, stream: str, query: HistoryQuery) -> HistoryPage:
        record = await self._readable(stream)
        if query.event_name is not None:
            check_name(query.event_name, "eventName")
        until: int | None = None
        if query.stop is not None:  # inclusive: a time stop names the first event after it
            stop = await self._sequence_at(record, query.stop)
            until = stop if query.stop.time is not None else stop + 1
        start = await self._sequence_at(record, query.start)
        subject = record.names.subject(query.event_name) if query.event_name is not None else None
        messages = await self._scan(record, subject, start, lambda m: True, query.limit + 1, until)
        following = messages[query.limit].sequence if len(messages) > query.limit else None
        return HistoryPage(_json_array([self._render(record, m) for m in messages[: query.limit]]), following)

    async def _bucket_keys(self, bucket: str, key_filter: str) -> list[str]:
        """The keys of a bucket matching the filter, as its leader knows them (KV watches read
        a replica, which may not hold a key written a moment ago)."""
        prefix = f"$KV.{bucket}."
        with cluster_errors(f"listing {bucket}"):
            counts = await self._retrying(
                lambda: self._reader.subject_counts(f"KV_{bucket}", f"{prefix}{key_filter}"), "listing"
            )
        return [subject.removeprefix(prefix) for subject in counts]

    async def _consumer_records(self, record: StreamRecord) -> list[ConsumerRecord]:
        keys = await self._bucket_keys(CONSUMERS_BUCKET, record.names.consumer_keys)
        with cluster_errors("listing consumers"):
            return await self._consumers.records(keys)

    async def _all_records(self) -> list[StreamRecord]:
        found = []
        for key in await self._bucket_keys(STREAMS_BUCKET, ">"):
            with cluster_errors("listing streams"):
                try:
                    entry = await self._retrying(functools.partial(self._streams.get, key), "listing streams")
                except KeyNotFoundError:
                    continue
            if entry.value:
                found.append(StreamRecord.decode(entry.value))
        for record in found:
            self._records.setdefault(record.name, record)
        return sorted(found, key=lambda r: r.name)

    async def _describe(self, record: StreamRecord, per_name: bool) -> StreamInfo:
        state = await self._state(record, per_subject=per_name)
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

    async def list_streams(self) -> list[StreamInfo]:
        return [await self._describe(record, False) for record in await self._all_records()]

    async def describe_stream(self, stream: str) -> StreamInfo:
        record = await self._readable(stream)
        await self._fresh_retention(record)
        return await self._describe(self._records[stream], True)

    async def _fresh_retention(self, record: StreamRecord) -> None:
        """Re-read the record: its retention is the one field that changes (set_retention)."""
        with cluster_errors(f"reading stream {record.name!r}"):
            entry = await self._streams.get(digest(record.name))
        assert entry.value is not None
        self._records[record.name] = StreamRecord.decode(entry.value)

    async def consumer_lag(self, stream: str) -> list[ConsumerLag]:
        record = await self._readable(stream)
        return await self._lag(record)

    async def _lag(self, record: StreamRecord) -> list[ConsumerLag]:
        state = await self._state(record, per_subject=True)
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
            page = await self._reader.batch(record.names.js_stream, position + 1, subject, 1)
        if not page:
            return 0
        return int(page[0].headers.get("Nats-Num-Pending", "0")) + 1

    async def seek(self, stream: str, consumer_id: str, target: Bound, event_name: str | None) -> int:
        record = await self._readable(stream)
        if event_name is not None:
            check_name(event_name, "eventName")
        state = await self._state(record, per_subject=event_name is None)
        first, end = int(state["first_seq"]), int(state["last_seq"]) + 1
        position = min(max(await self._sequence_at(record, target), first), end) - 1
        if event_name is not None:
            names = [event_name]
        else:
            names = [name_from_token(s.rsplit(".", 1)[1]) for s in (state.get("subjects") or {})]

        async def move(entry: ConsumerRecord) -> bool:
            entry.position = position
            entry.acked.clear()
            return True

        with cluster_errors(f"moving consumer {consumer_id!r}"):
            for name in names:
                await self._consumers.change(
                    record.names.consumer_key(consumer_id, name), consumer_id, name, move
                )
        return position

    # ---- retention ------------------------------------------------------------------------------

    async def set_retention(
        self, stream: str, max_age_seconds: float | None, max_bytes: int | None
    ) -> RetentionResult:
        """Store the limits in the stream's record (CAS) and in the JetStream stream's config,
        which applies them itself (it removes messages, not segments: 0 segments removed)."""
        await self._readable(stream)
        limits: dict[str, float] = {}
        if max_age_seconds is not None:
            limits["maxAgeSeconds"] = max_age_seconds
        if max_bytes is not None:
            limits["maxBytes"] = max_bytes
        key = digest(stream)
        with cluster_errors(f"setting retention of {stream!r}"):
            while True:
                entry = await self._streams.get(key)
                assert entry.value is not None
                changed = dataclasses.replace(StreamRecord.decode(entry.value), retention=limits or None)
                try:
                    await self._streams.update(key, changed.encode(), last=entry.revision)
                    break
                except KeyWrongLastSequenceError:
                    continue
            self._records[stream] = changed
            await self._ensure_js_stream(changed)
            await self._configure(self._stream_config(changed), create=False)
        return RetentionResult(await self._describe(changed, False), 0)

    # ---- figures ----------------------------------------------------------------------------------

    async def figures(self) -> list[StreamFigures]:
        out = []
        for record in await self._all_records():
            state = await self._state(record)
            out.append(
                StreamFigures(
                    name=record.name,
                    last_sequence=int(state["last_seq"]),
                    events=int(state.get("messages", 0)),
                    bytes=int(state.get("bytes", 0)),
                    waiting_readers=self._waiting.get(record.name, 0),
                    fsyncs=0,  # the NATS servers fsync (sync_interval: always), not the gateway
                    fsync_seconds=0.0,
                    appends=CommitFigures(),  # JetStream commits; the gateway has no group commit
                    consumers=await self._lag(record),
                )
            )
        return out

    async def health(self) -> EngineHealth:
        with cluster_errors("reading the streams bucket"):
            info = await self._js.stream_info(f"KV_{STREAMS_BUCKET}")
        return EngineHealth(int(info.state.messages), [])


async def _bucket(js: JetStreamContext, bucket: str, replicas: int, ttl: float | None) -> KeyValue:
    """Open a KV bucket, creating it (replicated, leader reads only) if it does not exist."""
    try:
        return await js.key_value(bucket)
    except NotFoundError:
        config = KeyValueConfig(bucket=bucket, history=1, replicas=replicas, direct=False, ttl=ttl)
        return await js.create_key_value(config)


def _internal_msg_id() -> str:
    """A Nats-Msg-Id for an append without Idempotency-Key, so that its retries store it once."""
    return f"{INTERNAL_MSG_ID_PREFIX}{secrets.token_hex(16)}"


def _json_array(members: list[bytes]) -> bytes:
    return b"[" + b",".join(members) + b"]"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
