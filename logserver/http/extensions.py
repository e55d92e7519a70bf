"""Routes beyond SPEC v1 (documented in the README and /api/v1/openapi.json): batch append,
stream and consumer listings, seek, single-event look-up, history, retention.

Each handler validates, makes one store call, answers; the SPEC v1 routes keep their exact
meaning (long-poll `wait`, leases `ackWait`, NACK and the append headers extend those handlers).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from logserver.storage import EventStore
from logserver.storage.record import event_json

from . import validation
from .api import StreamApi, append_parameters
from .metrics import RequestMetrics
from .request_user import request_user
from .responses import bad_request, json_response
from .routes import PathParams


class ExtensionApi:
    def __init__(
        self,
        store: EventStore,
        api: StreamApi,
        max_limit: int,
        max_batch: int,
        max_name_chars: int,
        openapi: bytes,
        metrics: RequestMetrics,
    ) -> None:
        self._store = store
        self._api = api  # its stream-limit check covers batch creations too
        self._max_limit = max_limit
        self._max_batch = max_batch
        self._max_name_chars = max_name_chars
        self._openapi = openapi
        self._metrics = metrics

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
            validation.event_fields(body, self._max_name_chars, where=f"events[{index}]")
        ids = await self._api.creating(
            stream, lambda: self._store.append_batch(stream, producer, events, expected, key)
        )
        return json_response(orjson.dumps(ids))

    async def list_streams(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        # Only streams the user may use: the listing must not reveal what a 403 hides.
        permissions = request_user(request).permissions
        streams = [s for s in self._store.describe_streams() if permissions.allows_some(s["name"])]
        return json_response(orjson.dumps(streams))

    async def describe_stream(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        stream = validation.stream_name(params["stream"])
        return json_response(orjson.dumps(self._store.stream(stream).describe(per_name=True)))

    async def list_consumers(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        stream = validation.stream_name(params["stream"])
        return json_response(orjson.dumps(self._store.stream(stream).consumer_lag()))

    async def seek_consumer(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """PUT …/consumers/{consumer}: {"to": "start"|"end"} or {"sequence": N} or {"time": T},
        optionally with "eventName"; events from there on are delivered again (or skipped)."""
        raw = await request.read()
        stream = validation.stream_name(params["stream"])
        consumer = validation.client_id(params["consumer"], "consumer")
        log = self._store.stream(stream)
        body = _json_object(raw)
        event_name = body.get("eventName")
        if event_name is not None:
            validation.event_name(event_name, "eventName", self._max_name_chars)
        if body.get("to") == "start":
            start = log.first_sequence
        elif body.get("to") == "end":
            start = log.visible_end
        elif "sequence" in body:
            start = _positive_int(body["sequence"], "sequence")
        elif "time" in body:
            start = log.sequence_at_time(_time(body["time"], "time"))
        else:
            raise bad_request('body must name "to" (start or end), "sequence" or "time"')
        position = await log.seek(consumer, start, event_name)
        return json_response(
            orjson.dumps({"consumer": consumer, "eventName": event_name, "position": position})
        )

    async def get_event(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        stream = validation.stream_name(params["stream"])
        log = self._store.stream(stream)
        sequence = log.resolve(params["eventID"])
        return json_response(event_json(log.read_line(sequence)))

    async def history(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET …/history?fromSequence=|fromTime=&toSequence=|toTime=&eventName=&limit= — a page
        of stored events that moves no consumer; `X-Next-Sequence` says where the next page starts."""
        stream = validation.stream_name(params["stream"])
        log = self._store.stream(stream)
        query = request.query
        if "fromTime" in query:
            start = log.sequence_at_time(_time(query["fromTime"], "fromTime"))
        else:
            start = _positive_int(query.get("fromSequence", "1"), "fromSequence")
        end: int | None = None
        if "toTime" in query:
            end = log.sequence_at_time(_time(query["toTime"], "toTime")) - 1
        elif "toSequence" in query:
            end = _positive_int(query["toSequence"], "toSequence")
        event_name = query.get("eventName")
        if event_name is not None:
            validation.event_name(event_name, "eventName", self._max_name_chars)
        limit = validation.limit(query.get("limit"), self._max_limit)
        page, next_start = log.history(start, limit, event_name, end)
        headers = {"X-Next-Sequence": str(next_start)} if next_start is not None else None
        return json_response(page, headers=headers)

    async def openapi(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return json_response(self._openapi)

    async def metrics(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return web.Response(
            body=self._metrics.render(self._store),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def set_retention(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """PUT …/retention {"maxAgeSeconds": s|null, "maxBytes": n|null}: this stream's own limits."""
        raw = await request.read()
        stream = validation.stream_name(params["stream"])
        age, size = validation.retention_limits(raw)
        await self._store.set_retention(stream, age, size)
        removed = await self._store.stream(stream).apply_retention(None, None)
        info = self._store.stream(stream).describe()
        return json_response(orjson.dumps({**info, "segmentsRemoved": removed}))


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
    if type(value) is not int or value < 1 or value >= 1 << 58:
        raise bad_request(f"{field} must be a positive integer")
    return value


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise bad_request(f"{field} must be an RFC 3339 time with an offset")
