"""Live follow: `GET …/history?follow=true` with `Accept: text/event-stream` (Server-Sent Events).

The stored page first, then every event as it becomes readable (durable), until the client
leaves or the server stops. Moves no consumer. Each event is one SSE event whose `id` is its
sequence, so a client that reconnects with `Last-Event-ID` resumes after it.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from logserver.engine import Bound, Engine, HistoryQuery

EVENT_STREAM = "text/event-stream"
HEARTBEAT = b": heartbeat\n\n"
# The longest one wait for new events lasts, so a stopping server is noticed within it.
_WAKE_SECONDS = 1.0


def wants_event_stream(request: web.BaseRequest) -> bool:
    """Whether the client asked for Server-Sent Events."""
    return EVENT_STREAM in request.headers.get("Accept", "")


def sse_event(sequence: int, event: bytes) -> bytes:
    """One SSE event: the event's JSON on one line (orjson never writes a newline into it)."""
    return b"id: %d\nevent: event\ndata: %s\n\n" % (sequence, event)


class Follower:
    """Streams one stream's events to one SSE client.

    Owns its response and its read position; event-loop only. Between a read that found
    nothing and the wait that follows it, nothing awaits, so an event made readable in
    between wakes the wait (the engine's long-poll rule).
    """

    def __init__(self, engine: Engine, stopping: asyncio.Event, heartbeat_seconds: float) -> None:
        self._engine = engine
        self._stopping = stopping
        self._heartbeat = heartbeat_seconds

    async def follow(self, request: web.BaseRequest, stream: str, query: HistoryQuery) -> web.StreamResponse:
        """Answer the stored events from `query.start`, then each new one; returns when it ends.

        With a `query.stop` it ends after the stored page that reaches it.
        """
        page = await self._engine.history(stream, query)  # a missing stream is a 404, not a stream
        response = web.StreamResponse(
            headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        current = query
        try:
            while True:
                last = await self._send(response, page.body)
                if page.next_sequence is not None:  # a full page: more are stored
                    current = _from(query, page.next_sequence)
                elif last is not None:
                    current = _from(query, last + 1)
                elif query.stop is not None or not await self._wait(response, stream, query.event_name):
                    break
                if self._stopping.is_set():
                    break
                page = await self._engine.history(stream, current)
        except ConnectionError:
            pass  # the client left
        return response

    async def _send(self, response: web.StreamResponse, body: bytes) -> int | None:
        """Write a page's events; returns the last one's sequence (None for an empty page)."""
        events = orjson.loads(body)
        if not events:
            return None
        await response.write(b"".join(sse_event(e["sequence"], orjson.dumps(e)) for e in events))
        last: int = events[-1]["sequence"]
        return last

    async def _wait(self, response: web.StreamResponse, stream: str, event_name: str | None) -> bool:
        """Wait for a new event for at most the heartbeat interval, sending a heartbeat if none
        came; False when the server is stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._heartbeat
        while not self._stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                await response.write(HEARTBEAT)
                return True
            if await self._engine.wait_for_events(stream, event_name, min(remaining, _WAKE_SECONDS)):
                return True
        return False


def _from(query: HistoryQuery, start: int) -> HistoryQuery:
    return HistoryQuery(Bound(sequence=start), query.limit, query.stop, query.event_name)
