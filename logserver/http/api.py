"""The v1 handlers: validate, call the store once, answer. Nothing else happens per request."""

from __future__ import annotations

import orjson
from aiohttp import web

from logserver.storage import EventStore

from . import validation
from .responses import bad_request, json_response

_OK = orjson.dumps("OK")


class StreamApi:
    """Handlers bound to one open store, so a request needs no app-dict lookups."""

    def __init__(self, store: EventStore, max_limit: int) -> None:
        self._store = store
        self._max_limit = max_limit

    async def append(self, request: web.Request) -> web.Response:
        # Read first: an oversized body is 413 whatever else is wrong with it.
        raw = await request.read()
        stream = validation.stream_name(request.match_info["stream"])
        producer = validation.client_id(request.headers.get("X-Producer-ID"), "X-Producer-ID")
        body = validation.event_body(raw)
        event_id = await self._store.append(stream, producer, body)
        return json_response(orjson.dumps(event_id))

    async def consume(self, request: web.Request) -> web.Response:
        stream = validation.stream_name(request.match_info["stream"])
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        query = request.query
        name = query.get("eventName")
        if not name:
            raise bad_request("eventName is required")
        validation.event_name(name, "eventName")
        limit = validation.limit(query.get("limit"), self._max_limit)
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
