"""The I/O-free parts of the long-lived iterators both clients share: the Server-Sent Events
parser of a live follow, and the ledger of what a subscription delivered and may ack."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from .core import OnError
from .model import Event


class SseParser:
    """Turns the lines of a text/event-stream answer into events (the `data` of each `event`
    block; heartbeat comments and other fields are skipped). One per connection, one thread."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._kind = "message"

    def feed(self, line: str) -> Event | None:
        """Take one line (without its newline); the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._kind = value
        return None

    def _dispatch(self) -> Event | None:
        """The block just ended by a blank line, as an event when it is one."""
        data, kind = self._data, self._kind
        self._data, self._kind = [], "message"
        if not data or kind != "event":
            return None
        return Event(orjson.loads("\n".join(data)))


@dataclass
class FollowCursor:
    """Where a follow goes on after the events it yielded (a reconnect asks from there), and
    whether the server offers the live (SSE) follow. Owned by one iterator."""

    next_sequence: int
    live: bool = True

    def passed(self, event: Event) -> None:
        """Record that `event` was handed out."""
        self.next_sequence = max(self.next_sequence, event.sequence + 1)


@dataclass(frozen=True)
class SubscribeOptions:
    """How a subscription polls and acks.

    batch: events per consume request; wait: long-poll seconds per request; ack_wait: seconds
    of lease per event (leased consume) or None; on_error: "leave" the event whose loop body
    raised unacked (delivered again) or "nack" it (leased only: redelivered at once);
    stop_when_idle: end the iteration at the first empty answer instead of polling on;
    ack_interval: the longest that finished events wait for their batched ack.
    """

    batch: int = 100
    wait: float = 30.0
    ack_wait: float | None = None
    on_error: OnError = "leave"
    stop_when_idle: bool = False
    ack_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.on_error == "nack" and self.ack_wait is None:
            raise ValueError('on_error="nack" needs ack_wait (a nack releases a lease)')
        if self.on_error not in ("leave", "nack"):
            raise ValueError('on_error must be "leave" or "nack"')


@dataclass
class AckLedger:
    """What a subscription handed to its loop body: the event in the body now, and the events
    whose body finished, waiting for their (batched) ack. Owned by one subscription."""

    interval: float
    current: Event | None = None
    finished: list[str] = field(default_factory=list)
    oldest_finished_at: float | None = None

    def deliver(self, event: Event) -> None:
        """`event` goes into the loop body."""
        self.current = event

    def finish_current(self) -> None:
        """The loop body of the current event ended without raising."""
        if self.current is None:
            return
        if not self.finished:
            self.oldest_finished_at = time.monotonic()
        self.finished.append(self.current.id)
        self.current = None

    def abandon_current(self) -> Event | None:
        """The loop body raised: the current event is not finished; it is returned for a nack."""
        event, self.current = self.current, None
        return event

    def ack_due(self) -> bool:
        """Whether the oldest finished event has waited `interval` for its ack."""
        started = self.oldest_finished_at
        return started is not None and time.monotonic() - started >= self.interval

    def take_finished(self) -> list[str]:
        """The finished ids to ack now; the ledger forgets them."""
        ids, self.finished, self.oldest_finished_at = self.finished, [], None
        return ids
