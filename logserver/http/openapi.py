"""The OpenAPI 3.1 document served at /api/v1/openapi.json, as exact as the server: every status
each operation can answer and the real types, ranges and required fields of every input.

A test holds it to the router and validates real responses against its schemas; `make test-slow`
runs schemathesis against a real server with it (tests/server/test_openapi_conformance.py).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from logserver import __version__
from logserver.engine import MAX_NAME_CHARS, MAX_SEQUENCE

from .api import MAX_ACK_WAIT_SECONDS, MAX_WAIT_SECONDS
from .console import console_files
from .validation import MAX_CLIENT_ID_CHARS, MAX_EVENT_VERSION, MAX_RETENTION_AGE_SECONDS, MAX_RETENTION_BYTES

REF = "#/components/schemas/"
ERROR = {"$ref": REF + "Error"}
# No control character (C0, DEL, C1): the engine's name rule (logserver.engine.check_name).
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
# A stream name is also one path segment: no '/', and not the dot segments a client resolves away.
STREAM_PATTERN = "^(?!\\.\\.?$)[^\\u0000-\\u001f\\u007f-\\u009f/]*$"
# A header value the server reads as given: printable ASCII, no blank at either end (HTTP strips it).
CLIENT_ID_PATTERN = "^[!-~]([ -~]*[!-~])?$"
EVENT_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

STATUS_TEXT = {
    400: "invalid request; the body names the first offending field",
    401: "missing or bad credentials",
    403: "authenticated, but not allowed on this stream",
    404: "no such stream",
    406: "follow=true without Accept: text/event-stream",
    408: "the request did not arrive within --request-timeout",
    409: "X-Expected-Sequence does not match (X-Current-Sequence tells the stream's)",
    413: "body over --max-body-bytes",
    417: "an Expect header other than 100-continue",
    423: "the stream belongs to another producer",
    429: "too many failed authentications from this address",
    431: "the request line or a header field is too large, or there are too many header fields",
    500: "unexpected error; the body carries the log's reference id",
    503: "the stream is damaged and awaits `logserver check --repair`, or the engine is unavailable",
    507: "the disk is full",
}
# What the HTTP layer answers before or around any handler (logserver/http/protocol.py, dispatch.py).
EVERY_REQUEST = (408, 413, 417, 431, 500)
SECURED = (401, 429)
RESPONSE_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "the Basic challenge"}},
    409: {"X-Current-Sequence": {"schema": {"type": "integer"}, "description": "the stream's last sequence"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response with a JSON body of `schema`."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _text(description: str, *media_types: str) -> dict[str, Any]:
    """A 200 whose body is text (a console file) of one of `media_types`."""
    return {"description": description, "content": {t: {"schema": {"type": "string"}} for t in media_types}}


def _errors(codes: tuple[int, ...], descriptions: dict[int, str]) -> dict[str, Any]:
    """The JSON error responses of `codes`, each with its own description where one is given."""
    return {
        str(code): _json(ERROR, descriptions.get(code, STATUS_TEXT[code]), RESPONSE_HEADERS.get(code))
        for code in sorted(set(codes))
    }


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *codes: int,
    public: bool = False,
    ok_status: str = "200",
    descriptions: dict[int, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One operation: its 2xx, the errors `codes` it adds, and what every (secured) request can get."""
    every = EVERY_REQUEST if public else EVERY_REQUEST + SECURED
    responses = {ok_status: ok, **_errors((*codes, *every), descriptions or {})}
    operation = {"operationId": operation_id, "summary": summary, "responses": responses, **extra}
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _body(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {"required": True, "content": {media_type: {"schema": schema}}}


def _header(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


def openapi_document(
    max_limit: int, max_batch: int, max_event_name_chars: int = MAX_NAME_CHARS, public_metrics: bool = False
) -> dict[str, Any]:
    """The document for a server with these bounds (its --max-limit, --max-batch, ...)."""
    name = {"type": "string", "minLength": 1, "maxLength": max_event_name_chars, "pattern": NAME_PATTERN}
    stream = {
        "name": "stream",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": STREAM_PATTERN},
    }
    client_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CLIENT_ID_CHARS,
        "pattern": CLIENT_ID_PATTERN,
    }
    producer = _header("X-Producer-ID", client_id, "who appends; the first producer owns the stream", True)
    consumer = _header("X-Consumer-ID", client_id, "whose position this is", True)
    idempotency_key = _header(
        "Idempotency-Key",
        {"type": "string", "minLength": 1, "maxLength": 255, "pattern": CLIENT_ID_PATTERN},
        "a retry with the same key within the window returns the first attempt's id(s)",
    )
    expected_sequence = _header(
        "X-Expected-Sequence",
        {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
        "the sequence the producer believes is last (0: the stream must not exist); else 409",
    )
    event_id = {"name": "eventID", "in": "path", "required": True, "schema": {"type": "string"}}
    consumer_path = {
        "name": "consumer",
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CLIENT_ID_CHARS,
            "pattern": CLIENT_ID_PATTERN,
        },
    }
    sequence = {"type": "integer", "minimum": 1, "maximum": MAX_SEQUENCE}
    limit_schema = {"type": "integer", "minimum": 1, "maximum": max_limit}
    events = {"type": "array", "items": {"$ref": REF + "StoredEvent"}}
    event_ids = {"type": "array", "items": {"type": "string", "pattern": EVENT_ID_PATTERN}}
    unknown_stream = {404: "no such stream"}
    appends = {
        403: "not allowed to produce to this stream, or it is a dead-letter stream (only the server appends)",
        409: "X-Expected-Sequence does not match (X-Current-Sequence tells the stream's), "
        "or creating the stream would exceed --max-streams",
    }
    paths: dict[str, Any] = {
        "/api/v1/streams/{stream}/events": {
            "parameters": [stream],
            "post": _operation(
                "appendEvent",
                "Append an event (creates the stream; the first producer owns it)",
                _json(
                    {"type": "string", "pattern": EVENT_ID_PATTERN}, "the event id, once durable per --fsync"
                ),
                400,
                403,
                409,
                423,
                503,
                507,
                descriptions=appends,
                parameters=[producer, idempotency_key, expected_sequence],
                requestBody=_body(_event_schema(name)),
            ),
            "get": _operation(
                "consumeEvents",
                "The consumer's next unacknowledged events of one name (at-least-once)",
                _json(events, "events in append order; [] when none"),
                400,
                403,
                404,
                503,
                507,
                descriptions=unknown_stream,
                parameters=[
                    consumer,
                    _query("eventName", name, "event name to read", True),
                    _query("limit", limit_schema, "most events to answer (SPEC §1.2: required)", True),
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
                        "long-poll seconds",
                    ),
                    _query(
                        "ackWait",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_ACK_WAIT_SECONDS},
                        "lease seconds (shared consumer)",
                    ),
                ],
            ),
        },
        "/api/v1/streams/{stream}/events:batch": {
            "parameters": [stream],
            "post": _operation(
                "appendEvents",
                f"Append 1 to {max_batch} events, all or nothing, in one durable step",
                _json({**event_ids, "minItems": 1, "maxItems": max_batch}, "their ids, in order"),
                400,
                403,
                409,
                423,
                503,
                507,
                descriptions=appends,
                parameters=[producer, idempotency_key, expected_sequence],
                requestBody=_body(
                    {"type": "array", "minItems": 1, "maxItems": max_batch, "items": _event_schema(name)}
                ),
            ),
        },
        "/api/v1/streams/{stream}/events:ack": {
            "parameters": [stream],
            "post": _operation(
                "ackEvents",
                f"Acknowledge 1 to {max_batch} events for one consumer in one durable write",
                _json({"$ref": REF + "AckResults"}, "per id, in the order given: OK or Not Found"),
                400,
                403,
                404,
                503,
                507,
                descriptions=unknown_stream,
                parameters=[consumer],
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["eventIds"],
                        "properties": {
                            "eventIds": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": max_batch,
                                "items": {"type": "string"},
                            }
                        },
                    }
                ),
            ),
        },
        "/api/v1/streams/{stream}/events/{eventID}": {
            "parameters": [stream, event_id],
            "post": _operation(
                "ackEvent",
                "Acknowledge (ACK) or release for redelivery (NACK) one event for one consumer",
                _json({"const": "OK"}, "recorded, durable per --fsync"),
                400,
                403,
                404,
                503,
                507,
                descriptions={404: "no such stream, or no such event in it"},
                parameters=[consumer],
                requestBody={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": {"$ref": REF + "Action"}},
                        "application/json": {"schema": {"$ref": REF + "Action"}},
                    },
                },
            ),
            "get": _operation(
                "getEvent",
                "One event, without any consumer",
                _json({"$ref": REF + "StoredEvent"}, "the event"),
                400,
                403,
                404,
                503,
                descriptions={404: "no such stream, or no such event in it"},
            ),
        },
        "/api/v1/streams/{stream}/history": {
            "parameters": [stream],
            "get": _operation(
                "browseHistory",
                "Browse stored events by sequence or time; moves no consumer",
                {
                    **_json(
                        events,
                        "a page (with follow=true: an SSE stream of `event` events, their id the sequence)",
                        {"X-Next-Sequence": {"schema": {"type": "integer"}, "description": "next page"}},
                    ),
                },
                400,
                403,
                404,
                406,
                503,
                descriptions=unknown_stream,
                parameters=[
                    _query("fromSequence", sequence, "first sequence (default 1)"),
                    _query(
                        "fromTime",
                        {"type": "string", "format": "date-time"},
                        "first receivedAt (wins over fromSequence)",
                    ),
                    _query("toSequence", sequence, "last sequence"),
                    _query(
                        "toTime",
                        {"type": "string", "format": "date-time"},
                        "received before (wins over toSequence)",
                    ),
                    _query("eventName", name, "only this name"),
                    _query("limit", limit_schema, "page size (default 10)"),
                    _query(
                        "follow",
                        {"type": "boolean"},
                        "with Accept: text/event-stream, go on with every new event (SSE)",
                    ),
                    _query(
                        "heartbeat",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
                        "seconds between SSE heartbeat comments while following (default 15)",
                    ),
                ],
            ),
        },
        "/api/v1/streams": {
            "get": _operation(
                "listStreams",
                "Every stream the user may use",
                _json({"type": "array", "items": {"$ref": REF + "StreamInfo"}}, "streams"),
                503,
            ),
        },
        "/api/v1/streams/{stream}": {
            "parameters": [stream],
            "get": _operation(
                "describeStream",
                "One stream, with per-name counts",
                _json({"$ref": REF + "StreamInfo"}, "facts"),
                400,
                403,
                404,
                503,
                descriptions=unknown_stream,
            ),
        },
        "/api/v1/streams/{stream}/consumers": {
            "parameters": [stream],
            "get": _operation(
                "listConsumers",
                "Consumers of the stream, per event name",
                _json({"type": "array", "items": {"$ref": REF + "ConsumerLag"}}, "positions and lag"),
                400,
                403,
                404,
                503,
                descriptions=unknown_stream,
            ),
        },
        "/api/v1/streams/{stream}/consumers/{consumer}": {
            "parameters": [stream, consumer_path],
            "put": _operation(
                "seekConsumer",
                "Seek a consumer: replay from the start, a sequence or a time, or skip to the end",
                _json(
                    {
                        "type": "object",
                        "required": ["consumer", "eventName", "position"],
                        "properties": {
                            "consumer": {"type": "string"},
                            "eventName": {"type": ["string", "null"]},
                            "position": {"type": "integer", "minimum": 0},
                        },
                    },
                    "the new position",
                ),
                400,
                403,
                404,
                503,
                507,
                descriptions=unknown_stream,
                requestBody=_body(_seek_schema(name)),
            ),
        },
        "/api/v1/streams/{stream}/retention": {
            "parameters": [stream],
            "put": _operation(
                "setRetention",
                "Set the stream's own retention limits (null or left out: follow the server's)",
                _json(
                    {
                        "allOf": [{"$ref": REF + "StreamInfo"}],
                        "required": ["segmentsRemoved"],
                        "properties": {"segmentsRemoved": {"type": "integer", "minimum": 0}},
                    },
                    "the stream after a retention pass",
                ),
                400,
                403,
                404,
                503,
                507,
                descriptions=unknown_stream,
                requestBody=_body({"$ref": REF + "Retention"}),
            ),
        },
        "/health": {
            "get": _operation(
                "health",
                "Liveness; answered once recovery has finished",
                _json(
                    {
                        "type": "object",
                        "required": ["status", "streams"],
                        "properties": {
                            "status": {"const": "ok"},
                            "streams": {"type": "integer", "minimum": 0},
                            "damaged": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "ok",
                ),
                503,
                public=True,
            ),
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus text format (the one non-JSON success body besides the console's files)",
                {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                *(() if public_metrics else (403,)),
                503,
                public=public_metrics,
                descriptions={403: "the user is limited to some streams (metrics name every stream)"},
            ),
        },
        "/api/v1/samples": {
            "get": _operation(
                "allSamples",
                "The console's recent samples of every stream the user may see",
                _json({"$ref": REF + "Samples"}, "Unix times and, per stream, series aligned with them"),
            ),
        },
        "/api/v1/streams/{stream}/samples": {
            "parameters": [stream],
            "get": _operation(
                "streamSamples",
                "The console's recent samples of one stream and its consumers",
                _json({"$ref": REF + "StreamSamples"}, "Unix times and series aligned with them"),
                400,
                403,
                404,
                descriptions={404: "no samples of the stream (none yet, or no such stream)"},
            ),
        },
        "/": {"get": _to_console("consoleRoot")},
        "/console": {"get": _to_console("consoleRedirect")},
        "/console/": {
            "get": _operation(
                "consoleIndex", 'The web console (README "Console")', _text("its page", "text/html")
            ),
        },
        "/console/{file}": {
            "parameters": [
                {"name": "file", "in": "path", "required": True, "schema": {"enum": sorted(console_files())}}
            ],
            "get": _operation(
                "consoleFile",
                "One of the console's files (scripts, styles)",
                _text("the file", "text/javascript", "text/css", "text/html"),
                400,
                404,
                descriptions={404: "the console has no such file"},
            ),
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "openapi", "This document", _json({"type": "object"}, "OpenAPI 3.1"), public=True
            ),
        },
        "/api/v1/docs": {
            "get": _operation(
                "apiReference",
                "This document rendered as a page (Redoc)",
                _text("the page", "text/html"),
                public=True,
            ),
        },
        "/api/v1/docs/{file}": {
            "parameters": [
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": sorted(console_files("apidocs"))},
                }
            ],
            "get": _operation(
                "apiReferenceFile",
                "One of the reference page's files (its scripts)",
                _text("the file", "text/javascript", "text/html"),
                400,
                404,
                public=True,
                descriptions={404: "the API reference has no such file"},
            ),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logserver",
            "version": __version__,
            "description": "HTTP event server (SPEC v1 + extensions).",
        },
        "servers": [{"url": "/", "description": "the server that serves this document"}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}, "schemas": SCHEMAS},
    }


def _to_console(operation_id: str) -> dict[str, Any]:
    """GET of a path that redirects to the console."""
    redirect = _json(
        ERROR, "to /console/", {"Location": {"schema": {"type": "string", "const": "/console/"}}}
    )
    return _operation(operation_id, "Redirects to the console", redirect, ok_status="302")


def _event_schema(name: dict[str, Any]) -> dict[str, Any]:
    """An append body (validation.event_fields): unknown top-level keys are kept."""
    strings = {"type": "string"}
    return {
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {
                    "name": name,
                    "version": {"type": "integer", "minimum": 1, "maximum": MAX_EVENT_VERSION},
                },
            },
            "system": {
                "type": "object",
                "properties": {
                    "id": strings,
                    "name": strings,
                    "time": {
                        "type": "string",
                        "format": "date-time",
                        "description": "RFC 3339 or 'YYYY-MM-DD HH:MM:SS'",
                    },
                    "timezone": {"enum": _zone_names(), "description": "a known IANA time zone"},
                },
            },
            "trigger": {"type": "object", "properties": {"type": strings, "name": strings}},
            "payload": {"type": "object"},
        },
    }


def _zone_names() -> list[str]:
    """The IANA zones of the tzdata package (a dependency; the server also knows the OS's own)."""
    return (resources.files("tzdata") / "zones").read_text(encoding="utf-8").split()


def _seek_schema(name: dict[str, Any]) -> dict[str, Any]:
    """A PUT …/consumers/{consumer} body: "to" (start or end) wins, else "sequence", else "time"."""
    return {
        "type": "object",
        "properties": {"eventName": {"oneOf": [name, {"type": "null"}]}},
        "anyOf": [
            {"required": ["to"], "properties": {"to": {"enum": ["start", "end"]}}},
            {
                "required": ["sequence"],
                "properties": {"sequence": {"type": "integer", "minimum": 1, "maximum": MAX_SEQUENCE}},
            },
            {
                "required": ["time"],
                "properties": {"time": {"type": "string", "format": "date-time"}},
                "not": {"required": ["sequence"]},
            },
        ],
    }


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "string", "description": '"<Reason> - <detail>"'},
    "StoredEvent": {
        "type": "object",
        "required": ["eventId", "stream", "sequence", "producerId", "receivedAt", "event", "payload"],
        "properties": {
            "eventId": {"type": "string", "format": "uuid"},
            "stream": {"type": "string"},
            "sequence": {"type": "integer", "minimum": 1},
            "producerId": {"type": "string"},
            "receivedAt": {"type": "string", "format": "date-time"},
            "deliveryCount": {"type": "integer", "minimum": 1, "description": "only with ackWait"},
            "idempotencyKey": {"type": "string"},
            "event": {"type": "object"},
            "payload": {"type": "object"},
        },
    },
    "Action": {"type": "object", "required": ["action"], "properties": {"action": {"enum": ["ACK", "NACK"]}}},
    "AckResults": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["eventId", "status"],
                    "properties": {
                        "eventId": {"type": "string"},
                        "status": {"enum": ["OK", "Not Found"]},
                    },
                },
            }
        },
    },
    "StreamInfo": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "owner": {"type": "string"},
            "createdAt": {"type": "string"},
            "eventCount": {"type": "integer"},
            "bytes": {"type": "integer"},
            "segments": {"type": "integer"},
            "firstSequence": {"type": "integer"},
            "lastSequence": {"type": "integer"},
            "lastAppendAt": {"type": ["string", "null"]},
            "consumers": {"type": "integer"},
            "eventNames": {"type": "object", "additionalProperties": {"type": "integer"}},
            "retention": {"$ref": "#/components/schemas/Retention"},
            "damaged": {"type": "string", "description": "present when the stream is refused"},
        },
    },
    "ConsumerLag": {
        "type": "object",
        "required": ["consumer", "eventName", "position", "acknowledged", "behind", "consumedPercentage"],
        "properties": {
            "consumer": {"type": "string"},
            "eventName": {"type": "string"},
            "position": {"type": "integer"},
            "acknowledged": {"type": "integer"},
            "acknowledgedOutOfOrder": {"type": "integer"},
            "behind": {"type": "integer"},
            "consumedPercentage": {"type": "number"},
        },
    },
    "Samples": {
        "type": "object",
        "required": ["intervalSeconds", "times", "streams"],
        "properties": {
            "intervalSeconds": {"type": "number", "description": "--samples-interval"},
            "times": {"$ref": "#/components/schemas/SampleTimes"},
            "streams": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "eventCount", "lastSequence"],
                    "properties": {
                        "name": {"type": "string"},
                        "eventCount": {"$ref": "#/components/schemas/SampleSeries"},
                        "lastSequence": {"$ref": "#/components/schemas/SampleSeries"},
                    },
                },
            },
        },
    },
    "StreamSamples": {
        "type": "object",
        "required": ["intervalSeconds", "times", "name", "eventCount", "lastSequence", "consumers"],
        "properties": {
            "intervalSeconds": {"type": "number"},
            "times": {"$ref": "#/components/schemas/SampleTimes"},
            "name": {"type": "string"},
            "eventCount": {"$ref": "#/components/schemas/SampleSeries"},
            "lastSequence": {"$ref": "#/components/schemas/SampleSeries"},
            "consumers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["consumer", "eventName", "behind"],
                    "properties": {
                        "consumer": {"type": "string"},
                        "eventName": {"type": "string"},
                        "behind": {"$ref": "#/components/schemas/SampleSeries"},
                    },
                },
            },
        },
    },
    "SampleTimes": {
        "type": "array",
        "items": {"type": "number"},
        "description": "when each kept sample was taken (Unix seconds), oldest first",
    },
    "SampleSeries": {
        "type": "array",
        "items": {"type": ["integer", "null"]},
        "description": "one value per entry of `times`; null where the series was not yet sampled",
    },
    "Retention": {
        "type": "object",
        "properties": {
            "maxAgeSeconds": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": MAX_RETENTION_AGE_SECONDS,
            },
            "maxBytes": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_RETENTION_BYTES},
        },
        "additionalProperties": False,
    },
}
