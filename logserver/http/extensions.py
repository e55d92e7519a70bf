"""Routes beyond SPEC v1 (documented in docs/api.md and /api/v1/openapi.json): batch append,
batch ack, stream and consumer listings, seek, single-event look-up, history and its live
follow, retention, metrics.

Each handler checks the request's HTTP shape, makes one engine call, answers; the SPEC v1
routes keep their exact meaning (long-poll `wait`, leases `ackWait`, NACK and the append
headers extend those handlers).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from logserver.engine import MAX_SEQUENCE, Bound, Engine, HistoryQuery

from . import validation
from .api import append_parameters
from .follow import Follower, wants_event_stream
from .metrics import RequestMetrics
from .request_user import request_user
from .responses import ApiError, bad_request, json_response
from .routes import PathParams

MAX_HEARTBEAT_SECONDS = 60.0
DEFAULT_HEARTBEAT = "15"


class ExtensionApi:
    """The extension handlers, bound to one engine."""

    def __init__(
        self,
        engine: Engine,
        max_limit: int,
        max_batch: int,
        openapi: bytes,
        metrics: RequestMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._max_limit = max_limit
        self._max_batch = max_batch
        self._openapi = openapi
        self._metrics = metrics
        self._stopping = stopping  # set when the server stops: live follows end

    async def append_batch(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """POST …/events:batch with a JSON array of events: all appended, or none."""
        raw = await request.read()
        stream, producer, expected, key = append_parameters(request, params)
        try:
            events = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("body is not valid JSON") from None
        if not isinstance(events, list) or not 1 <= len(events) <= self._max_batch:
            raise bad_request(f"body must be a JSON array of 1 to {self._max_batch} events")
        for index, body in enumerate(events):
            validation.event_fields(body, where=f"events[{index}]")
        ids = await self._engine.append_batch(stream, producer, events, expected, key)
        return json_response(orjson.dumps(ids))

    async def ack_many(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """POST …/events:ack {"eventIds": [...]}: acknowledge them all in one durable write."""
        raw = await request.read()
        consumer = validation.client_id(request.headers.get("X-Consumer-ID"), "X-Consumer-ID")
        ids = _json_object(raw).get("eventIds")
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= self._max_batch
            or not all(isinstance(event_id, str) for event_id in ids)
        ):
            raise bad_request(f"eventIds must be an array of 1 to {self._max_batch} event ids")
        found = await self._engine.ack_many(params["stream"], consumer, ids)
        results = [
            {"eventId": event_id, "status": "OK" if ok else "Not Found"}
            for event_id, ok in zip(ids, found, strict=True)
        ]
        return json_response(orjson.dumps({"results": results}))

    async def list_streams(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # Only streams the user may use: the listing must not reveal what a 403 hides.
        permissions = request_user(request).permissions
        streams = [s for s in await self._engine.list_streams() if permissions.allows_some(s["name"])]
        return json_response(orjson.dumps(streams))

    async def describe_stream(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return json_response(orjson.dumps(await self._engine.describe_stream(params["stream"])))

    async def list_consumers(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return json_response(orjson.dumps(await self._engine.consumer_lag(params["stream"])))

    async def seek_consumer(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """PUT …/consumers/{consumer}: {"to": "start"|"end"} or {"sequence": N} or {"time": T},
        optionally with "eventName"; events from there on are delivered again (or skipped)."""
        raw = await request.read()
        consumer = validation.client_id(params["consumer"], "consumer")
        body = _json_object(raw)
        event_name = body.get("eventName")
        if event_name is not None:
            validation.event_name(event_name, "eventName")
        if body.get("to") in ("start", "end"):
            target = Bound(edge=body["to"])
        elif "sequence" in body:
            target = Bound(sequence=_positive_int(body["sequence"], "sequence"))
        elif "time" in body:
            target = Bound(time=_time(body["time"], "time"))
        else:
            raise bad_request('body must name "to" (start or end), "sequence" or "time"')
        position = await self._engine.seek(params["stream"], consumer, target, event_name)
        return json_response(
            orjson.dumps({"consumer": consumer, "eventName": event_name, "position": position})
        )

    async def get_event(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return json_response(await self._engine.get_event(params["stream"], params["eventID"]))

    async def history(self, request: web.BaseRequest, params: PathParams) -> web.StreamResponse:
        """GET …/history?fromSequence=|fromTime=&toSequence=|toTime=&eventName=&limit= — a page
        of stored events that moves no consumer; `X-Next-Sequence` says where the next page starts.

        With `follow=true` and `Accept: text/event-stream`: the page, then every new event (SSE).
        """
        query = request.query
        follow = query.get("follow", "false")
        if follow not in ("true", "false"):
            raise bad_request("follow must be true or false")
        if follow == "true" and not wants_event_stream(request):
            raise ApiError(406, "follow=true needs Accept: text/event-stream")
        resume = request.headers.get("Last-Event-ID") if follow == "true" else None
        if resume is not None:  # an SSE client reconnecting: on after the last event it got
            start = Bound(sequence=_positive_int(resume, "Last-Event-ID") + 1)
        elif "fromTime" in query:
            start = Bound(time=_time(query["fromTime"], "fromTime"))
        else:
            start = Bound(sequence=_positive_int(query.get("fromSequence", "1"), "fromSequence"))
        stop: Bound | None = None
        if "toTime" in query:
            stop = Bound(time=_time(query["toTime"], "toTime"))
        elif "toSequence" in query:
            stop = Bound(sequence=_positive_int(query["toSequence"], "toSequence"))
        event_name = query.get("eventName")
        if event_name is not None:
            validation.event_name(event_name, "eventName")
        limit = validation.limit(query.get("limit"), self._max_limit)
        history = HistoryQuery(start, limit, stop, event_name)
        heartbeat = query.get("heartbeat", DEFAULT_HEARTBEAT)  # checked even when not following
        seconds = validation.seconds(heartbeat, "heartbeat", MAX_HEARTBEAT_SECONDS, allow_zero=False)
        if follow == "true":
            follower = Follower(self._engine, self._stopping, seconds)
            return await follower.follow(request, params["stream"], history)
        page = await self._engine.history(params["stream"], history)
        headers = {"X-Next-Sequence": str(page.next_sequence)} if page.next_sequence is not None else None
        return json_response(page.body, headers=headers)

    async def openapi(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return json_response(self._openapi)

    async def metrics(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return web.Response(
            body=self._metrics.render(await self._engine.figures()),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def set_retention(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """PUT …/retention {"maxAgeSeconds": s|null, "maxBytes": n|null}: this stream's own limits."""
        raw = await request.read()
        age, size = validation.retention_limits(raw)  # all checked before anything changes
        result = await self._engine.set_retention(params["stream"], age, size)
        return json_response(orjson.dumps({**result.stream, "segmentsRemoved": result.segments_removed}))


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    number = validation.whole_number(value)
    if number is None or number < 1 or number > MAX_SEQUENCE:
        raise bad_request(f"{field} must be a positive integer")
    return number


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise bad_request(f"{field} must be an RFC 3339 time with an offset")
