"""The one description of every request both clients send: path, headers, body, how to read the
answer. `Client` and `AsyncClient` only execute these `Call`s (with the retry policy), so the two
cannot drift apart.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import orjson

from .errors import ApiError, NotFound
from .model import AckResult, Event, HistoryPage

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0
MAX_IDS_PER_ACK = 1000  # the batch-ack route's limit
SSE_CONTENT_TYPE = "text/event-stream"
SSE_HEARTBEAT_SECONDS = 15.0

SeekTarget = Literal["start", "end"]
OnError = Literal["leave", "nack"]


@dataclass(frozen=True)
class Connection:
    """Where the server is and who the client is: from arguments, else LOGSERVER_URL,
    LOGSERVER_USER and LOGSERVER_PASSWORD, else the defaults. Immutable."""

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] = os.environ,
    ) -> Connection:
        """Each setting from its argument, else its environment variable, else the default."""
        return cls(
            url=(url or environ.get("LOGSERVER_URL") or DEFAULT_URL).rstrip("/"),
            user=user if user is not None else environ.get("LOGSERVER_USER") or None,
            password=password if password is not None else environ.get("LOGSERVER_PASSWORD") or None,
            timeout=timeout,
        )

    @property
    def auth(self) -> httpx.BasicAuth | None:
        """Basic credentials for every request, or None without a user."""
        if self.user is None:
            return None
        return httpx.BasicAuth(self.user, self.password or "")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to turn its 2xx answer into a T; executed, and retried, as it is
    (so an append's Idempotency-Key is the same on every try). Immutable."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    wait: float = 0.0  # seconds the server may hold the request (long-poll), added to the timeout

    def timeout(self, base: float) -> httpx.Timeout:
        """The client's timeout, with a long-poll's wait added to reading the answer."""
        return httpx.Timeout(base, read=base + self.wait)


def stream_path(stream: str) -> str:
    """`/api/v1/streams/<stream>` with the name percent-encoded (a `/` becomes `%2F`)."""
    return "/api/v1/streams/" + quote(stream, safe="")


def format_time(moment: datetime | str) -> str:
    """An RFC 3339 time for the server; a naive datetime is refused rather than guessed."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        raise ValueError("the time needs a timezone (e.g. datetime.now(UTC))")
    return moment.isoformat()


def _json(response: httpx.Response) -> Any:
    """The answer's JSON body."""
    return orjson.loads(response.content)


def _events(response: httpx.Response) -> list[Event]:
    """A JSON array of events."""
    return [Event(item) for item in _json(response)]


def _event(response: httpx.Response) -> Event:
    """One JSON event."""
    return Event(_json(response))


def _history_page(response: httpx.Response) -> HistoryPage:
    """A history page and its X-Next-Sequence."""
    following = response.headers.get("X-Next-Sequence")
    return HistoryPage(_events(response), None if following is None else int(following))


def _ack_results(response: httpx.Response) -> list[AckResult]:
    """The batch ack's per-id answers, in the order given."""
    return [AckResult(item["eventId"], item["status"] == "OK") for item in _json(response)["results"]]


def _nothing(response: httpx.Response) -> None:
    """An answer whose body says only "OK"."""


def _producer_headers(
    producer: str, expected_sequence: int | None, idempotency_key: str | None
) -> dict[str, str]:
    """An append's headers; a fresh Idempotency-Key when the caller gave none."""
    headers = {
        "X-Producer-ID": producer,
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
    }
    if expected_sequence is not None:
        headers["X-Expected-Sequence"] = str(expected_sequence)
    return headers


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/health", _json)


def append(
    stream: str,
    event: Mapping[str, Any],
    producer: str,
    expected_sequence: int | None,
    idempotency_key: str | None,
) -> Call[str]:
    headers = _producer_headers(producer, expected_sequence, idempotency_key)
    return Call("POST", stream_path(stream) + "/events", _json, headers=headers, content=orjson.dumps(event))


def append_batch(
    stream: str,
    events: Sequence[Mapping[str, Any]],
    producer: str,
    expected_sequence: int | None,
    idempotency_key: str | None,
) -> Call[list[str]]:
    headers = _producer_headers(producer, expected_sequence, idempotency_key)
    body = orjson.dumps(list(events))
    return Call("POST", stream_path(stream) + "/events:batch", _json, headers=headers, content=body)


def consume(
    stream: str, event_name: str, consumer: str, limit: int, wait: float, ack_wait: float | None
) -> Call[list[Event]]:
    params = {"eventName": event_name, "limit": str(limit)}
    if wait:
        params["wait"] = _seconds(wait)
    if ack_wait is not None:
        params["ackWait"] = _seconds(ack_wait)
    headers = {"X-Consumer-ID": consumer}
    return Call("GET", stream_path(stream) + "/events", _events, params=params, headers=headers, wait=wait)


def _seconds(value: float) -> str:
    """Seconds as the server reads them (an integer where it is one)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _ack_action(stream: str, consumer: str, event_id: str, action: str) -> Call[None]:
    path = f"{stream_path(stream)}/events/{quote(event_id, safe='')}"
    headers = {"X-Consumer-ID": consumer, "Content-Type": "application/x-www-form-urlencoded"}
    return Call("POST", path, _nothing, headers=headers, content=f"action={action}".encode())


def ack(stream: str, consumer: str, event_id: str) -> Call[None]:
    return _ack_action(stream, consumer, event_id, "ACK")


def nack(stream: str, consumer: str, event_id: str) -> Call[None]:
    return _ack_action(stream, consumer, event_id, "NACK")


def ack_many(stream: str, consumer: str, event_ids: Sequence[str]) -> Call[list[AckResult]]:
    headers = {"X-Consumer-ID": consumer, "Content-Type": "application/json"}
    body = orjson.dumps({"eventIds": list(event_ids)})
    return Call("POST", stream_path(stream) + "/events:ack", _ack_results, headers=headers, content=body)


def batch_ack_missing(error: ApiError) -> bool:
    """Whether an error from `events:ack` says the server has no such route (405, or a bare
    404 "Not Found"; a missing stream's 404 names the stream)."""
    return error.status == 405 or (error.status == 404 and error.message == "Not Found")


def names_missing_stream(error: NotFound) -> bool:
    """Whether a v1 ack's 404 is for the stream (raised, as the batch route does) rather than
    for one event (that id's "Not Found" result)."""
    return error.message.startswith("Not Found - stream ")


def id_chunks(event_ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """The ids in slices the batch-ack route takes."""
    for start in range(0, len(event_ids), MAX_IDS_PER_ACK):
        yield event_ids[start : start + MAX_IDS_PER_ACK]


def get_event(stream: str, event_id: str) -> Call[Event]:
    return Call("GET", f"{stream_path(stream)}/events/{quote(event_id, safe='')}", _event)


def history_params(
    from_sequence: int | None,
    from_time: datetime | str | None,
    to_sequence: int | None,
    to_time: datetime | str | None,
    event_name: str | None,
) -> dict[str, str]:
    """The history route's query, without its limit."""
    params: dict[str, str] = {}
    if from_time is not None:
        params["fromTime"] = format_time(from_time)
    elif from_sequence is not None:
        params["fromSequence"] = str(from_sequence)
    if to_time is not None:
        params["toTime"] = format_time(to_time)
    elif to_sequence is not None:
        params["toSequence"] = str(to_sequence)
    if event_name is not None:
        params["eventName"] = event_name
    return params


def history(stream: str, params: Mapping[str, str], limit: int) -> Call[HistoryPage]:
    query = {**params, "limit": str(limit)}
    return Call("GET", stream_path(stream) + "/history", _history_page, params=query)


def next_page_params(params: Mapping[str, str], next_sequence: int) -> dict[str, str]:
    """The same query from `next_sequence` on (a time start is replaced by the sequence)."""
    rest = {key: value for key, value in params.items() if key not in ("fromTime", "fromSequence")}
    return {**rest, "fromSequence": str(next_sequence)}


def follow_request(stream: str, event_name: str | None, from_sequence: int) -> Call[None]:
    """The live follow (Server-Sent Events); executed as a streamed request, not parsed whole."""
    params = {"fromSequence": str(from_sequence), "follow": "true"}
    if event_name is not None:
        params["eventName"] = event_name
    headers = {"Accept": SSE_CONTENT_TYPE}
    # Heartbeats come every 15 s: three missed ones mean the connection is gone.
    return Call(
        "GET", stream_path(stream) + "/history", _nothing, params, headers, wait=3 * SSE_HEARTBEAT_SECONDS
    )


def streams() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/api/v1/streams", _json)


def stream(name: str) -> Call[dict[str, Any]]:
    return Call("GET", stream_path(name), _json)


def consumers(stream: str) -> Call[list[dict[str, Any]]]:
    return Call("GET", stream_path(stream) + "/consumers", _json)


def seek(
    stream: str,
    consumer: str,
    to: SeekTarget | None,
    sequence: int | None,
    time: datetime | str | None,
    event_name: str | None,
) -> Call[dict[str, Any]]:
    targets = [target for target in (to, sequence, time) if target is not None]
    if len(targets) != 1:
        raise ValueError("seek needs exactly one of to, sequence or time")
    body: dict[str, Any]
    if to is not None:
        body = {"to": to}
    elif sequence is not None:
        body = {"sequence": sequence}
    else:
        assert time is not None
        body = {"time": format_time(time)}
    if event_name is not None:
        body["eventName"] = event_name
    path = f"{stream_path(stream)}/consumers/{quote(consumer, safe='')}"
    return Call("PUT", path, _json, headers={"Content-Type": "application/json"}, content=orjson.dumps(body))


def set_retention(stream: str, max_age_seconds: float | None, max_bytes: int | None) -> Call[dict[str, Any]]:
    body = orjson.dumps({"maxAgeSeconds": max_age_seconds, "maxBytes": max_bytes})
    headers = {"Content-Type": "application/json"}
    return Call("PUT", stream_path(stream) + "/retention", _json, headers=headers, content=body)


def is_event_stream(response: httpx.Response) -> bool:
    """Whether the server answered the follow with Server-Sent Events (else a plain page)."""
    content_type: str = response.headers.get("Content-Type", "")
    return content_type.startswith(SSE_CONTENT_TYPE)
