"""`Client`: the blocking client, executing the `Call`s of core.py over one httpx.Client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import core
from .core import Call, Connection, OnError, SeekTarget
from .errors import ApiError, LogserverError, NotFound, connection_failed, error_for
from .model import AckResult, Event, HistoryPage
from .retry import RetryPolicy
from .streaming import AckLedger, FollowCursor, SseParser, SubscribeOptions

T = TypeVar("T")


class Client:
    """A blocking logserver client over one pooled httpx.Client.

    Connection from the arguments, else LOGSERVER_URL, LOGSERVER_USER and LOGSERVER_PASSWORD.
    Failed requests are retried per `retry` (connection errors, 503, 429). Safe to share between
    threads as httpx.Client is; iterators (subscribe, follow) belong to the thread using them.
    """

    def __init__(
        self,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        *,
        timeout: float = core.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
    ) -> None:
        self.connection = Connection.resolve(url, user, password, timeout)
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=self.connection.url, auth=self.connection.auth, verify=verify)
        self._batch_ack_route: bool | None = None  # unknown until the first batch ack

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: Call[Any]) -> httpx.Response:
        """One try of `call`; an error answer or a broken connection raises its LogserverError."""
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                headers=call.headers,
                content=call.content,
                timeout=call.timeout(self.connection.timeout),
            )
        except httpx.TransportError as exc:
            raise connection_failed(exc) from exc
        if response.is_error:
            raise error_for(response)
        return response

    def execute(self, call: Call[T]) -> T:
        """Send `call`, retrying per the policy, and parse its answer."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return call.parse(self._send(call))
            except LogserverError as error:
                delay = self.retry.delay(attempts, error)
                if delay is None:
                    raise
            time.sleep(delay)

    def health(self) -> dict[str, Any]:
        """`GET /health`: {"status": "ok", "streams": N}."""
        return self.execute(core.health())

    def append(
        self,
        stream: str,
        event: Mapping[str, Any],
        *,
        producer: str,
        expected_sequence: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Append one event; its id. A generated Idempotency-Key makes retries append it once."""
        return self.execute(core.append(stream, event, producer, expected_sequence, idempotency_key))

    def append_batch(
        self,
        stream: str,
        events: Sequence[Mapping[str, Any]],
        *,
        producer: str,
        expected_sequence: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Append 1 to --max-batch events in one write, all or none; their ids."""
        return self.execute(core.append_batch(stream, events, producer, expected_sequence, idempotency_key))

    def consume(
        self, stream: str, event_name: str, consumer: str, *, limit: int = 10, wait: float = 0
    ) -> list[Event]:
        """Up to `limit` unacknowledged events of that name; waits up to `wait` s for one."""
        return self.execute(core.consume(stream, event_name, consumer, limit, wait, None))

    def consume_leased(
        self,
        stream: str,
        event_name: str,
        consumer: str,
        ack_wait: float,
        *,
        limit: int = 10,
        wait: float = 0,
    ) -> list[Event]:
        """Like consume, but the events are this caller's for `ack_wait` s (shared consumers)."""
        return self.execute(core.consume(stream, event_name, consumer, limit, wait, ack_wait))

    def ack(self, stream: str, consumer: str, event_id: str) -> None:
        """Acknowledge one event for `consumer` (idempotent)."""
        self.execute(core.ack(stream, consumer, event_id))

    def nack(self, stream: str, consumer: str, event_id: str) -> None:
        """Release a leased event for immediate redelivery."""
        self.execute(core.nack(stream, consumer, event_id))

    def ack_many(self, stream: str, consumer: str, event_ids: Sequence[str]) -> list[AckResult]:
        """Acknowledge many events, one durable write per 1,000 ids; one result per id, in order.

        On a server without the batch-ack route, each id is acked on its own.
        """
        results: list[AckResult] = []
        for chunk in core.id_chunks(event_ids):
            results.extend(self._ack_chunk(stream, consumer, chunk))
        return results

    def _ack_chunk(self, stream: str, consumer: str, event_ids: Sequence[str]) -> list[AckResult]:
        """Up to 1,000 ids: by the batch route, or one by one where the server lacks it."""
        if self._batch_ack_route is not False:
            try:
                results = self.execute(core.ack_many(stream, consumer, event_ids))
            except ApiError as error:
                if not core.batch_ack_missing(error):
                    raise
                self._batch_ack_route = False
            else:
                self._batch_ack_route = True
                return results
        return [self._ack_one(stream, consumer, event_id) for event_id in event_ids]

    def _ack_one(self, stream: str, consumer: str, event_id: str) -> AckResult:
        """One id by the v1 ack route, as a batch result."""
        try:
            self.ack(stream, consumer, event_id)
        except NotFound as error:
            if core.names_missing_stream(error):
                raise
            return AckResult(event_id, ok=False)
        return AckResult(event_id, ok=True)

    def get_event(self, stream: str, event_id: str) -> Event:
        """One event by id, moving no consumer."""
        return self.execute(core.get_event(stream, event_id))

    def history(
        self,
        stream: str,
        *,
        from_sequence: int | None = None,
        from_time: datetime | str | None = None,
        to_sequence: int | None = None,
        to_time: datetime | str | None = None,
        event_name: str | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """One page of stored events (moves no consumer) and where the next one starts."""
        params = core.history_params(from_sequence, from_time, to_sequence, to_time, event_name)
        return self.execute(core.history(stream, params, limit))

    def iter_history(
        self,
        stream: str,
        *,
        from_sequence: int | None = None,
        from_time: datetime | str | None = None,
        to_sequence: int | None = None,
        to_time: datetime | str | None = None,
        event_name: str | None = None,
        limit: int = 100,
    ) -> Iterator[Event]:
        """Every stored event in the range, page after page (`limit` per request)."""
        params = core.history_params(from_sequence, from_time, to_sequence, to_time, event_name)
        while True:
            page = self.execute(core.history(stream, params, limit))
            yield from page.events
            if page.next_sequence is None:
                return
            params = core.next_page_params(params, page.next_sequence)

    def streams(self) -> list[dict[str, Any]]:
        """Every stream the user may use, with counts, sizes and sequences."""
        return self.execute(core.streams())

    def stream(self, name: str) -> dict[str, Any]:
        """One stream's description, with per-name event counts."""
        return self.execute(core.stream(name))

    def consumers(self, stream: str) -> list[dict[str, Any]]:
        """Per consumer and event name: position, acknowledged, behind."""
        return self.execute(core.consumers(stream))

    def seek(
        self,
        stream: str,
        consumer: str,
        *,
        to: SeekTarget | None = None,
        sequence: int | None = None,
        time: datetime | str | None = None,
        event_name: str | None = None,
    ) -> dict[str, Any]:
        """Move a consumer to the start, the end, a sequence or a time (replay or skip)."""
        return self.execute(core.seek(stream, consumer, to, sequence, time, event_name))

    def set_retention(
        self, stream: str, *, max_age_seconds: float | None = None, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """Set a stream's own retention (both None: the server's); the stream's description."""
        return self.execute(core.set_retention(stream, max_age_seconds, max_bytes))

    def subscribe(
        self,
        stream: str,
        event_name: str,
        consumer: str,
        *,
        batch: int = 100,
        wait: float = 30.0,
        ack_wait: float | None = None,
        on_error: OnError = "leave",
        stop_when_idle: bool = False,
    ) -> Subscription:
        """Events as they come, each acked once the loop body finishes (see Subscription)."""
        options = SubscribeOptions(batch, wait, ack_wait, on_error, stop_when_idle)
        return Subscription(self, stream, event_name, consumer, options)

    def follow(
        self,
        stream: str,
        *,
        event_name: str | None = None,
        from_sequence: int = 1,
        poll_interval: float = 0.5,
    ) -> Iterator[Event]:
        """Every event from `from_sequence` on, then each new one as it is appended, for ever.

        Server-Sent Events where the server offers them, else history polled every
        `poll_interval` s. Moves no consumer. Reconnects from the next sequence after a drop.
        """
        cursor = FollowCursor(from_sequence)
        attempts = 0
        while cursor.live:
            resumed_at = cursor.next_sequence
            try:
                yield from self._follow_live(stream, event_name, cursor)
            except LogserverError as error:
                attempts = 1 if cursor.next_sequence != resumed_at else attempts + 1
                delay = self.retry.delay(attempts, error)
                if delay is None:
                    raise
                time.sleep(delay)
            else:
                attempts = 0  # the server ended the stream (it shuts down): connect again
        yield from self._follow_polling(stream, event_name, cursor, poll_interval)

    def _follow_live(self, stream: str, event_name: str | None, cursor: FollowCursor) -> Iterator[Event]:
        """Yield the SSE follow's events until the server ends it; marks the cursor when it
        answers a plain history page instead (a server without the live follow)."""
        call = core.follow_request(stream, event_name, cursor.next_sequence)
        try:
            with self._http.stream(
                call.method,
                call.path,
                params=call.params,
                headers=call.headers,
                timeout=call.timeout(self.connection.timeout),
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                if not core.is_event_stream(response):
                    cursor.live = False
                    return
                parser = SseParser()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        cursor.passed(event)
                        yield event
        except httpx.TransportError as exc:
            raise connection_failed(exc) from exc

    def _follow_polling(
        self, stream: str, event_name: str | None, cursor: FollowCursor, poll_interval: float
    ) -> Iterator[Event]:
        """Follow by reading history pages, sleeping `poll_interval` s whenever one comes back short."""
        while True:
            page = self.history(stream, from_sequence=cursor.next_sequence, event_name=event_name)
            for event in page.events:
                cursor.passed(event)
                yield event
            if page.next_sequence is not None:
                cursor.next_sequence = page.next_sequence
            else:
                time.sleep(poll_interval)


class Subscription:
    """A consumer's events as an iterator: long-polls, yields each event, and acks it once the loop
    body has finished with it (acks batched, at the end of each page or every second).

    Use it as a context manager (`with client.subscribe(...) as events: for event in events:`) so
    that an exception in the loop body is told apart from a `break`: on an exception the event is
    left unacked or nacked (per `on_error`) and the exception goes on; a `break` counts as finished.
    Without `with`, the event the loop stopped at is left unacked. One thread at a time.
    """

    def __init__(
        self, client: Client, stream: str, event_name: str, consumer: str, options: SubscribeOptions
    ) -> None:
        self.client = client
        self.stream = stream
        self.event_name = event_name
        self.consumer = consumer
        self.options = options
        self._ledger = AckLedger(options.ack_interval)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self._ledger.finish_current()
        else:
            failed = self._ledger.abandon_current()
            if failed is not None and self.options.on_error == "nack":
                self.client.nack(self.stream, self.consumer, failed.id)
        self.flush()

    def __iter__(self) -> Iterator[Event]:
        try:
            while True:
                page = self._poll()
                if not page and self.options.stop_when_idle:
                    return
                for event in page:
                    self._ledger.deliver(event)
                    yield event
                    self._ledger.finish_current()
                    if self._ledger.ack_due():
                        self.flush()
                self.flush()
        finally:
            self.flush()

    def _poll(self) -> list[Event]:
        """The next page for this consumer (leased when ack_wait is set)."""
        options = self.options
        if options.ack_wait is None:
            return self.client.consume(
                self.stream, self.event_name, self.consumer, limit=options.batch, wait=options.wait
            )
        return self.client.consume_leased(
            self.stream,
            self.event_name,
            self.consumer,
            options.ack_wait,
            limit=options.batch,
            wait=options.wait,
        )

    def flush(self) -> None:
        """Ack every event whose loop body finished."""
        finished = self._ledger.take_finished()
        if finished:
            self.client.ack_many(self.stream, self.consumer, finished)
