"""The v1 handlers: check the request's HTTP shape, call the engine once, answer."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import hdrs, web

from logserver.engine import Engine

from . import validation
from .responses import bad_request, json_response
from .routes import PathParams

_OK = orjson.dumps("OK")

MAX_WAIT_SECONDS = 30.0
MAX_ACK_WAIT_SECONDS = 3600.0


def append_parameters(
    request: web.BaseRequest, params: PathParams
) -> tuple[str, str, int | None, str | None]:
    """An append's stream, X-Producer-ID, X-Expected-Sequence and Idempotency-Key, each checked."""
    return (
        params["stream"],
        validation.client_id(request.headers.get("X-Producer-ID"), "X-Producer-ID"),
        validation.expected_sequence(request.headers.get("X-Expected-Sequence")),
        validation.idempotency_key(request.headers.get("Idempotency-Key")),
    )


class StreamApi:
    """The SPEC v1 handlers, bound to one engine so a request needs no lookups."""

    def __init__(self, engine: Engine, max_limit: int) -> None:
        self._engine = engine
        self._max_limit = max_limit

    async def append(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # Read first: an oversized body is 413 whatever else is wrong with it.
        raw = await request.read()
        stream, producer, expected, key = append_parameters(request, params)
        body = validation.event_body(raw)
        event_id = await self._engine.append(stream, producer, body, expected, key)
        return json_response(orjson.dumps(event_id))

    async def consume(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        stream = params["stream"]
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        query = request.query
        name = query.get("eventName")
        if not name:
            raise bad_request("eventName is required")
        limit = validation.required_limit(query.get("limit"), self._max_limit)
        wait = validation.seconds(query.get("wait"), "wait", MAX_WAIT_SECONDS, allow_zero=True)
        ack_wait = (
            validation.seconds(query.get("ackWait"), "ackWait", MAX_ACK_WAIT_SECONDS, allow_zero=False)
            if "ackWait" in query
            else None
        )
        engine = self._engine
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            # The engine returns the finished JSON array: stored bytes, not re-encoded.
            if ack_wait is None:
                body = await engine.consume(stream, name, consumer, limit)
            else:
                body = await engine.consume_leased(stream, name, consumer, limit, ack_wait)
            remaining = deadline - asyncio.get_running_loop().time()
            if body != b"[]" or remaining <= 0:
                return json_response(body)
            # Long-poll: the engine wakes the waiter for any event that became readable after
            # the read above (the file engine: nothing runs between the two, one event loop).
            await engine.wait_for_events(stream, name, remaining)

    async def ack(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        raw = await request.read()
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        header = request.headers.get(hdrs.CONTENT_TYPE)
        # Only whether it is JSON matters: the parser can't say yes to a header without "json"
        # in it, unless in an RFC 2047 encoded word ("=?utf-8?b?...?=", which it decodes).
        maybe_json = header and ("json" in header.lower() or "=?" in header)
        content_type = request.content_type if maybe_json else ""
        action = validation.ack_body(raw, content_type)
        if action == "ACK":
            await self._engine.ack(params["stream"], consumer, params["eventID"])
        else:
            await self._engine.nack(params["stream"], consumer, params["eventID"])
        return json_response(_OK)

    async def health(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # The server listens only after recovery, so answering at all means "recovered".
        health = await self._engine.health()
        status: dict[str, object] = {"status": "ok", "streams": health.streams}
        if health.damaged:
            status["damaged"] = health.damaged
        return json_response(orjson.dumps(status))
