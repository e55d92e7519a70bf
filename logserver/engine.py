"""The engine interface: every operation the HTTP API needs, its result types and its errors.

The HTTP layer speaks to an `Engine` and imports nothing else of an engine's package;
`logserver.server` picks the engine (the file engine in `logserver.filestore` by default).
An engine knows nothing of HTTP: it takes names, ids and parsed bodies, and answers bytes
(stored JSON passed through), plain dicts or the small types below. It owns streams: their
creation, the stream limit, the single-writer rule and the name rules, which it checks once.

Errors are `EngineError` subclasses, each one status code in the HTTP layer (see
`logserver.http.dispatch`). Every operation is async: an engine may wait on a disk or a
network (a clustered engine does for every call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, TypedDict

# ---- name rules (the API's, for every engine) ---------------------------------------------------

MAX_NAME_CHARS = 255
# The largest sequence any engine hands out: event ids carry 58 bits of it (filestore.event_id).
MAX_SEQUENCE = (1 << 58) - 1
DEAD_LETTER_SUFFIX = ".dlq"
DEAD_LETTER_PRODUCER = "logserver-dead-letter"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(name: str, what: str, max_chars: int = MAX_NAME_CHARS) -> None:
    """Raise InvalidName unless `name` is 1 to `max_chars` characters of non-control text.

    `what` is how the caller's request names the field ("event.name", "eventName").
    """
    if not 1 <= len(name) <= max_chars:
        raise InvalidName(f"{what} must be 1 to {max_chars} characters")
    if _CONTROL.search(name):
        raise InvalidName(f"{what} must not contain control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"{what} must be valid Unicode text") from None


def check_stream_name(name: str) -> None:
    """The stream-name rule: a name, and no '/' (it is one path segment of the API)."""
    check_name(name, "stream name")
    if "/" in name:
        raise InvalidName("stream name must not contain '/'")


def refuse_client_dead_letters(stream: str) -> None:
    """Dead-letter streams take only the engine's own appends, whatever producer id a client sends."""
    if stream.endswith(DEAD_LETTER_SUFFIX):
        check_stream_name(stream)
        raise ReservedStream(f"stream '{stream}' holds dead letters: only the server appends to it")


def dead_letter_stream(name: str) -> str:
    """Where events of `name` go after too many deliveries without an ack."""
    return f"{name}{DEAD_LETTER_SUFFIX}"


# ---- errors --------------------------------------------------------------------------------------


class EngineError(Exception):
    """Base class: something the caller may report but must not retry blindly."""


class StreamNotFound(EngineError):
    """The stream does not exist (no successful append created it yet)."""


class EventNotFound(EngineError):
    """The event id does not name a readable event of this stream."""


class StreamLocked(EngineError):
    """The stream is owned by another producer (single-writer rule)."""


class ReservedStream(EngineError):
    """Only the server appends to this stream (a dead-letter stream)."""


class StreamCorrupt(EngineError):
    """The stream is damaged: refused until repaired (`logserver check --repair`)."""


class StreamLimitReached(EngineError):
    """Creating the stream would exceed the engine's maximum number of streams."""

    def __init__(self, maximum: int) -> None:
        super().__init__(f"the server already holds its maximum of {maximum} streams")
        self.maximum = maximum


class StorageFull(EngineError):
    """The disk is full (ENOSPC); the failed write was rolled back."""


class StorageIOError(EngineError):
    """A write or fsync failed; the affected appends failed and the log was rolled back."""


class EngineUnavailable(EngineError):
    """The engine cannot answer now (a cluster without quorum, a server that went away)."""


class InvalidName(EngineError, ValueError):
    """A stream or event name breaks the naming rules (length, control characters, '/')."""


class InvalidRequest(EngineError, ValueError):
    """An argument the engine cannot take (a batch too large, a sequence out of range)."""


class SequenceMismatch(EngineError):
    """An append's expected last sequence is not the stream's (optimistic concurrency)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected sequence {expected}, stream is at {current}")
        self.expected = expected
        self.current = current


# ---- results and arguments -------------------------------------------------------------------------


class StreamInfo(TypedDict, total=False):
    """One stream's facts as GET /api/v1/streams lists them (a damaged one: name and damaged)."""

    name: str
    owner: str
    createdAt: str
    eventCount: int
    bytes: int
    segments: int
    firstSequence: int
    lastSequence: int
    lastAppendAt: str | None
    consumers: int
    retention: dict[str, float]
    eventNames: dict[str, int]  # describe_stream only: events per name
    damaged: str


class ConsumerLag(TypedDict):
    """Where one consumer stands for one event name."""

    consumer: str
    eventName: str
    position: int
    acknowledged: int
    acknowledgedOutOfOrder: int
    behind: int
    consumedPercentage: float
    inFlight: int  # events leased (ackWait) and not yet acknowledged


class HistoryPage(NamedTuple):
    """A page of stored events (a JSON array) and where the next page starts (None: last page)."""

    body: bytes
    next_sequence: int | None


@dataclass(frozen=True)
class Bound:
    """One end of a history range or a seek target: a sequence, a time, or an end of the stream."""

    sequence: int | None = None
    time: datetime | None = None
    edge: Literal["start", "end"] | None = None


@dataclass(frozen=True)
class HistoryQuery:
    """GET …/history: events from `start` (inclusive) to `stop` (inclusive), at most `limit`."""

    start: Bound
    limit: int
    stop: Bound | None = None
    event_name: str | None = None


@dataclass(frozen=True)
class CommitFigures:
    """A group commit's counters: flushes, time in them, and how many requests each covered."""

    flushes: int = 0
    seconds: float = 0.0
    requests: int = 0
    batch_sizes: dict[float, int] = field(default_factory=dict)  # cumulative, by upper bound


@dataclass(frozen=True)
class StreamFigures:
    """What /metrics shows of one healthy stream, read at scrape time."""

    name: str
    last_sequence: int
    events: int
    bytes: int
    waiting_readers: int
    fsyncs: int  # of its records (group commits in `always`, interval ticks)
    fsync_seconds: float
    appends: CommitFigures  # group commits: one write of records each
    consumers: list[ConsumerLag]


@dataclass(frozen=True)
class EngineLimits:
    """The API's limits that every engine enforces the same way."""

    max_streams: int = 10_000
    max_event_name_chars: int = MAX_NAME_CHARS  # for appends; reads accept any valid name
    max_batch: int = 1000
    max_deliveries: int = 5  # leased deliveries before the dead-letter stream; 0: no limit
    idempotency_window_seconds: float = 120.0  # how long an Idempotency-Key is remembered


class EngineHealth(NamedTuple):
    """For GET /health: how many streams, and the names of the damaged ones."""

    streams: int
    damaged: list[str]


class RetentionResult(NamedTuple):
    """After PUT …/retention: the stream as it now is, and how many segments went."""

    stream: StreamInfo
    segments_removed: int


Body = dict[str, Any]


class Engine(Protocol):
    """What the HTTP API needs of a storage engine. Every name argument is checked by the engine.

    An engine is opened by its own module (`FileStore.open`, …) and closed with `close`.
    """

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None = None,
        key: str | None = None,
    ) -> str:
        """Append one event; creates the stream on its first append. Returns the event id."""
        ...

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None = None,
        key: str | None = None,
    ) -> list[str]:
        """Append all of `bodies` or none, in one durable step."""
        ...

    async def consume(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        """The consumer's next `limit` unacknowledged events of that name, as a JSON array."""
        ...

    async def consume_leased(
        self, stream: str, event_name: str, consumer_id: str, limit: int, ack_wait: float
    ) -> bytes:
        """Like consume, but the events are leased to this call for `ack_wait` seconds."""
        ...

    async def wait_for_events(self, stream: str, event_name: str | None, timeout: float) -> bool:
        """Long-poll: True once an event of that name (None: any) becomes readable in time."""
        ...

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        """Acknowledge one event for the consumer; idempotent; durable when it returns."""
        ...

    async def ack_many(self, stream: str, consumer_id: str, event_ids: list[str]) -> list[bool]:
        """Acknowledge several events in one durable write; per id, whether it exists."""
        ...

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        """End the consumer's lease on the event, so the next leased read redelivers it."""
        ...

    async def get_event(self, stream: str, event_id: str) -> bytes:
        """One stored event as JSON."""
        ...

    async def history(self, stream: str, query: HistoryQuery) -> HistoryPage:
        """A page of stored events; moves no consumer."""
        ...

    async def list_streams(self) -> list[StreamInfo]:
        """Every stream, damaged ones included (flagged), sorted by name."""
        ...

    async def describe_stream(self, stream: str) -> StreamInfo:
        """One stream's facts, with per-name counts."""
        ...

    async def consumer_lag(self, stream: str) -> list[ConsumerLag]:
        """Per consumer and event name of the stream: position, acknowledged, behind."""
        ...

    async def seek(self, stream: str, consumer_id: str, target: Bound, event_name: str | None) -> int:
        """Deliver from `target` on (replay or skip) for one name or all; returns the new position."""
        ...

    async def set_retention(
        self, stream: str, max_age_seconds: float | None, max_bytes: int | None
    ) -> RetentionResult:
        """Set the stream's own retention limits (None for both: the server's) and apply them."""
        ...

    async def figures(self) -> list[StreamFigures]:
        """Every healthy stream's figures for /metrics."""
        ...

    async def health(self) -> EngineHealth:
        """How many streams there are, and which are damaged."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release everything; nothing is called after it."""
        ...
