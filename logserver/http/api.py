"""The v1 handlers: validate, call the store once, answer. Nothing else happens per request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import hdrs, web

from logserver.storage import EventStore
from logserver.storage.errors import StreamCorrupt, StreamNotFound

from . import validation
from .responses import ApiError, bad_request, json_response
from .routes import PathParams

_OK = orjson.dumps("OK")
T = TypeVar("T")


MAX_WAIT_SECONDS = 30.0
MAX_ACK_WAIT_SECONDS = 3600.0


def append_parameters(
    request: web.BaseRequest, params: PathParams
) -> tuple[str, str, int | None, str | None]:
    """An append's stream, X-Producer-ID, X-Expected-Sequence and Idempotency-Key, each checked."""
    return (
        validation.producer_stream(params["stream"]),
        validation.client_id(request.headers.get("X-Producer-ID"), "X-Producer-ID"),
        validation.expected_sequence(request.headers.get("X-Expected-Sequence")),
        validation.idempotency_key(request.headers.get("Idempotency-Key")),
    )


@dataclass(frozen=True)
class ApiLimits:
    max_limit: int = 1000
    max_event_name_chars: int = validation.MAX_EVENT_NAME_CHARS  # for appends; reads allow 255
    max_streams: int = 10_000
    max_deliveries: int = 5


class StreamApi:
    """Handlers bound to one open store, so a request needs no app-dict lookups."""

    def __init__(self, store: EventStore, limits: ApiLimits) -> None:
        self._store = store
        self._limits = limits
        # Held around "count the streams, then create one", so racing creators can't overshoot.
        self._create_lock = asyncio.Lock()
        self._creations: dict[str, asyncio.Future[None]] = {}  # streams being created, by name

    async def append(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # Read first: an oversized body is 413 whatever else is wrong with it.
        raw = await request.read()
        stream, producer, expected, key = append_parameters(request, params)
        body = validation.event_body(raw, self._limits.max_event_name_chars)
        if self._exists(stream):  # the usual case, without creating()'s closure and coroutine
            event_id = await self._store.append(stream, producer, body, expected, key)
        else:
            event_id = await self.creating(
                stream, lambda: self._store.append(stream, producer, body, expected, key)
            )
        return json_response(orjson.dumps(event_id))

    async def creating(self, stream: str, append: Callable[[], Awaitable[T]]) -> T:
        """Run an append, holding the stream limit when it would create the stream.

        Creators of different streams take turns (the lock); requests for a stream another
        request is creating wait for that one and then append together. Queued on the lock,
        they went on one per event-loop iteration while later requests overtook them: a pool
        of 256 connections starting on a new stream waited up to 3 s for its first answers.
        """
        while not self._exists(stream):
            pending = self._creations.get(stream)
            if pending is None:
                return await self._create(stream, append)
            await asyncio.wait([pending])  # its outcome is the creator's; this one looks again
        return await append()

    async def _create(self, stream: str, append: Callable[[], Awaitable[T]]) -> T:
        done = self._creations[stream] = asyncio.get_running_loop().create_future()
        try:
            async with self._create_lock:
                if not self._exists(stream) and self._store.stream_count() >= self._limits.max_streams:
                    maximum = self._limits.max_streams
                    raise ApiError(409, f"the server already holds its maximum of {maximum} streams")
                return await append()
        finally:
            del self._creations[stream]
            done.set_result(None)

    def _exists(self, stream: str) -> bool:
        try:
            self._store.stream(stream)
        except StreamNotFound:
            return False
        except StreamCorrupt:
            return True  # it exists; the append will say how it is damaged
        return True

    async def consume(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        stream = validation.stream_name(params["stream"])
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        query = request.query
        name = query.get("eventName")
        if not name:
            raise bad_request("eventName is required")
        validation.event_name(name, "eventName")
        limit = validation.required_limit(query.get("limit"), self._limits.max_limit)
        wait = validation.seconds(query.get("wait"), "wait", MAX_WAIT_SECONDS, allow_zero=True)
        ack_wait = (
            validation.seconds(query.get("ackWait"), "ackWait", MAX_ACK_WAIT_SECONDS, allow_zero=False)
            if "ackWait" in query
            else None
        )
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            # The store returns the finished JSON array: stored bytes, not re-encoded.
            if ack_wait is None:
                body = await self._store.read(stream, name, consumer, limit)
            else:
                body = await self._store.read_leased(
                    stream, name, consumer, limit, ack_wait, self._limits.max_deliveries
                )
            remaining = deadline - asyncio.get_running_loop().time()
            if body != b"[]" or remaining <= 0:
                return json_response(body)
            # Long-poll: nothing between the read and this registration can append (one loop).
            await self._store.wait_for_events(stream, name, remaining)

    async def ack(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        raw = await request.read()
        stream = validation.stream_name(params["stream"])
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        header = request.headers.get(hdrs.CONTENT_TYPE)
        # Only whether it is JSON matters: the parser can't say yes to a header without "json"
        # in it, unless in an RFC 2047 encoded word ("=?utf-8?b?...?=", which it decodes).
        maybe_json = header and ("json" in header.lower() or "=?" in header)
        content_type = request.content_type if maybe_json else ""
        action = validation.ack_body(raw, content_type)
        if action == "ACK":
            await self._store.ack(stream, consumer, params["eventID"])
        else:
            await self._store.nack(stream, consumer, params["eventID"])
        return json_response(_OK)

    async def health(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # The server listens only after recovery, so answering at all means "recovered".
        status = {"status": "ok", "streams": self._store.stream_count()}
        return json_response(orjson.dumps(status))
