"""What the client's methods return: events, history pages, per-id ack results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Event(dict[str, Any]):
    """One stored event exactly as the server sent it (a dict, so it dumps back to the same JSON),
    with properties for the server fields. Owned by the caller; not shared between threads."""

    @property
    def id(self) -> str:
        """The event id (`eventId`)."""
        event_id: str = self["eventId"]
        return event_id

    @property
    def sequence(self) -> int:
        """Its position in the stream, from 1."""
        sequence: int = self["sequence"]
        return sequence

    @property
    def stream(self) -> str:
        """The stream it belongs to."""
        stream: str = self["stream"]
        return stream

    @property
    def name(self) -> str:
        """`event.name`."""
        name: str = self["event"]["name"]
        return name

    @property
    def payload(self) -> dict[str, Any]:
        """`payload` (`{}` when the producer left it out)."""
        payload: dict[str, Any] = self.get("payload", {})
        return payload

    @property
    def delivery_count(self) -> int | None:
        """How often a leased consume delivered it (None outside leased consumes)."""
        count: int | None = self.get("deliveryCount")
        return count


@dataclass(frozen=True)
class HistoryPage:
    """One page of `GET …/history`: its events and where the next page starts (None: the last)."""

    events: list[Event]
    next_sequence: int | None


@dataclass(frozen=True)
class AckResult:
    """The answer for one id of a batch ack: `ok` False means the event does not exist."""

    event_id: str
    ok: bool
