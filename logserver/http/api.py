"""The v1 handlers: validate, call the store once, answer. Nothing else happens per request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from logserver.storage import EventStore
from logserver.storage.errors import StreamCorrupt, StreamNotFound

from . import validation
from .responses import ApiError, bad_request, json_response

_OK = orjson.dumps("OK")


@dataclass(frozen=True)
class ApiLimits:
    max_limit: int = 1000
    max_event_name_chars: int = validation.MAX_EVENT_NAME_CHARS  # for appends; reads allow 255
    max_streams: int = 10_000


class StreamApi:
    """Handlers bound to one open store, so a request needs no app-dict lookups."""

    def __init__(self, store: EventStore, limits: ApiLimits) -> None:
        self._store = store
        self._limits = limits
        # Held around "count the streams, then create one", so racing creators can't overshoot.
        self._create_lock = asyncio.Lock()

    async def append(self, request: web.Request) -> web.Response:
        # Read first: an oversized body is 413 whatever else is wrong with it.
        raw = await request.read()
        stream = validation.stream_name(request.match_info["stream"])
        producer = validation.client_id(request.headers.get("X-Producer-ID"), "X-Producer-ID")
        body = validation.event_body(raw, self._limits.max_event_name_chars)
        if self._exists(stream):
            event_id = await self._store.append(stream, producer, body)
        else:
            event_id = await self._create_and_append(stream, producer, body)
        return json_response(orjson.dumps(event_id))

    async def _create_and_append(self, stream: str, producer: str, body: dict[str, Any]) -> str:
        async with self._create_lock:
            if not self._exists(stream) and self._store.stream_count() >= self._limits.max_streams:
                maximum = self._limits.max_streams
                raise ApiError(409, f"the server already holds its maximum of {maximum} streams")
            return await self._store.append(stream, producer, body)

    def _exists(self, stream: str) -> bool:
        try:
            self._store.stream(stream)
        except StreamNotFound:
            return False
        except StreamCorrupt:
            return True  # it exists; the append will say how it is damaged
        return True

    async def consume(self, request: web.Request) -> web.Response:
        stream = validation.stream_name(request.match_info["stream"])
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        query = request.query
        name = query.get("eventName")
        if not name:
            raise bad_request("eventName is required")
        validation.event_name(name, "eventName")
        limit = validation.limit(query.get("limit"), self._limits.max_limit)
        # The store returns the finished JSON array: stored bytes, not re-encoded.
        return json_response(await self._store.read(stream, name, consumer, limit))

    async def ack(self, request: web.Request) -> web.Response:
        raw = await request.read()
        stream = validation.stream_name(request.match_info["stream"])
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        validation.ack_body(raw, request.content_type)
        await self._store.ack(stream, consumer, request.match_info["eventID"])
        return json_response(_OK)

    async def health(self, request: web.Request) -> web.Response:
        # The server listens only after recovery, so answering at all means "recovered".
        status = {"status": "ok", "streams": self._store.stream_count()}
        return json_response(orjson.dumps(status))
