"""The OpenAPI 3.1 document served at /api/v1/openapi.json; a test holds it to the router and
validates real responses against its schemas."""

from __future__ import annotations

from typing import Any

from logserver import __version__

from .validation import MAX_RETENTION_AGE_SECONDS, MAX_RETENTION_BYTES

STREAM = {"name": "stream", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 255}}
EVENT_ID = {"name": "eventID", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
CONSUMER_PATH = {"name": "consumer", "in": "path", "required": True, "schema": {"type": "string"}}
PRODUCER = {
    "name": "X-Producer-ID",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "maxLength": 256},
}
CONSUMER = {
    "name": "X-Consumer-ID",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "maxLength": 256},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "A retry with the same key within the window returns the first attempt's id(s).",
    "schema": {"type": "string", "maxLength": 255},
}
EXPECTED_SEQUENCE = {
    "name": "X-Expected-Sequence",
    "in": "header",
    "description": "The sequence the producer believes is last (0: the stream must not exist); else 409.",
    "schema": {"type": "integer", "minimum": 0},
}

ERROR = {"$ref": "#/components/schemas/Error"}
STATUS_TEXT = {
    400: "invalid request; the body names the first offending field",
    401: "missing or bad credentials",
    403: "authenticated, but not allowed on this stream (or a dead-letter stream, for appends)",
    404: "no such stream or event",
    409: "X-Expected-Sequence does not match (X-Current-Sequence tells the stream's)",
    413: "body over the configured maximum",
    423: "the stream belongs to another producer",
    429: "too many failed authentications from this address",
    500: "unexpected error; the body carries the log's reference id",
    503: "the stream is damaged and awaits `logserver check --repair`",
    507: "the disk is full",
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
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


def _to_console() -> dict[str, Any]:
    """GET of a path that redirects to the console."""
    return {
        "summary": "Redirects to the console",
        "responses": {
            "302": {
                "description": "to /console/",
                "headers": {"Location": {"schema": {"type": "string", "const": "/console/"}}},
                "content": {"application/json": {"schema": ERROR}},
            },
            **_errors(),
        },
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(ERROR, STATUS_TEXT[code]) for code in (*codes, 401, 403, 429, 500)}


def _operation(summary: str, ok: dict[str, Any], *codes: int, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": ok, **_errors(*codes)}, **extra}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def openapi_document(max_limit: int, max_batch: int) -> dict[str, Any]:
    ref = "#/components/schemas/"
    limit_schema = {"type": "integer", "minimum": 1, "maximum": max_limit}
    limit = _query("limit", limit_schema, "page size (default 10)")
    events = {"type": "array", "items": {"$ref": ref + "StoredEvent"}}
    paths: dict[str, Any] = {
        "/api/v1/streams/{stream}/events": {
            "parameters": [STREAM],
            "post": _operation(
                "Append an event (creates the stream; the first producer owns it)",
                _json({"type": "string", "format": "uuid"}, "the event id, once durable per --fsync"),
                400,
                409,
                413,
                423,
                503,
                507,
                parameters=[PRODUCER, IDEMPOTENCY_KEY, EXPECTED_SEQUENCE],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref + "Event"}}},
                },
            ),
            "get": _operation(
                "The consumer's next unacknowledged events of one name (at-least-once)",
                _json(events, "events in append order; [] when none"),
                400,
                404,
                503,
                parameters=[
                    CONSUMER,
                    _query("eventName", {"type": "string", "minLength": 1}, "event name to read", True),
                    _query("limit", limit_schema, "most events to answer (SPEC §1.2: required)", True),
                    _query("wait", {"type": "number", "minimum": 0, "maximum": 30}, "long-poll seconds"),
                    _query(
                        "ackWait",
                        {"type": "number", "exclusiveMinimum": 0},
                        "lease seconds (shared consumer)",
                    ),
                ],
            ),
        },
        "/api/v1/streams/{stream}/events:batch": {
            "parameters": [STREAM],
            "post": _operation(
                f"Append 1 to {max_batch} events, all or nothing, in one durable step",
                _json(
                    {"type": "array", "items": {"type": "string", "format": "uuid"}}, "their ids, in order"
                ),
                400,
                409,
                413,
                423,
                503,
                507,
                parameters=[PRODUCER, IDEMPOTENCY_KEY, EXPECTED_SEQUENCE],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"$ref": ref + "Event"}}}
                    },
                },
            ),
        },
        "/api/v1/streams/{stream}/events:ack": {
            "parameters": [STREAM],
            "post": _operation(
                f"Acknowledge 1 to {max_batch} events for one consumer in one durable write",
                _json({"$ref": ref + "AckResults"}, "per id, in the order given: OK or Not Found"),
                400,
                404,
                503,
                parameters=[CONSUMER],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref + "AckMany"}}},
                },
            ),
        },
        "/api/v1/streams/{stream}/events/{eventID}": {
            "parameters": [STREAM, EVENT_ID],
            "post": _operation(
                "Acknowledge (ACK) or release for redelivery (NACK) one event for one consumer",
                _json({"const": "OK"}, "recorded, durable per --fsync"),
                400,
                404,
                503,
                parameters=[CONSUMER],
                requestBody={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": {"$ref": ref + "Action"}},
                        "application/json": {"schema": {"$ref": ref + "Action"}},
                    },
                },
            ),
            "get": _operation(
                "One event, without any consumer", _json({"$ref": ref + "StoredEvent"}, "the event"), 404, 503
            ),
        },
        "/api/v1/streams/{stream}/history": {
            "parameters": [STREAM],
            "get": _operation(
                "Browse stored events by sequence or time; moves no consumer",
                _json(
                    events,
                    "a page",
                    {"X-Next-Sequence": {"schema": {"type": "integer"}, "description": "next page"}},
                ),
                400,
                404,
                503,
                parameters=[
                    _query("fromSequence", {"type": "integer", "minimum": 1}, "first sequence (default 1)"),
                    _query("fromTime", {"type": "string", "format": "date-time"}, "first receivedAt"),
                    _query("toSequence", {"type": "integer", "minimum": 1}, "last sequence"),
                    _query("toTime", {"type": "string", "format": "date-time"}, "received before"),
                    _query("eventName", {"type": "string"}, "only this name"),
                    limit,
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
                "Every stream", _json({"type": "array", "items": {"$ref": ref + "StreamInfo"}}, "streams")
            ),
        },
        "/api/v1/streams/{stream}": {
            "parameters": [STREAM],
            "get": _operation(
                "One stream, with per-name counts", _json({"$ref": ref + "StreamInfo"}, "facts"), 404, 503
            ),
        },
        "/api/v1/streams/{stream}/consumers": {
            "parameters": [STREAM],
            "get": _operation(
                "Consumers of the stream, per event name",
                _json({"type": "array", "items": {"$ref": ref + "ConsumerLag"}}, "positions and lag"),
                404,
                503,
            ),
        },
        "/api/v1/streams/{stream}/consumers/{consumer}": {
            "parameters": [STREAM, CONSUMER_PATH],
            "put": _operation(
                "Seek a consumer: replay from the start, a sequence or a time, or skip to the end",
                _json({"type": "object", "required": ["consumer", "position"]}, "the new position"),
                400,
                404,
                503,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref + "Seek"}}},
                },
            ),
        },
        "/api/v1/streams/{stream}/retention": {
            "parameters": [STREAM],
            "put": _operation(
                "Set the stream's own retention limits (null: follow the server's)",
                _json({"$ref": ref + "StreamInfo"}, "the stream after a retention pass"),
                400,
                404,
                503,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref + "Retention"}}},
                },
            ),
        },
        "/health": {
            "get": {
                "summary": "Liveness; answered once recovery has finished",
                "security": [],
                "responses": {"200": _json({"type": "object", "required": ["status"]}, "ok")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format (the one non-JSON success body)",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/v1/samples": {
            "get": _operation(
                "The console's recent samples of every stream the user may see",
                _json({"$ref": ref + "Samples"}, "Unix times and, per stream, series aligned with them"),
            ),
        },
        "/api/v1/streams/{stream}/samples": {
            "parameters": [STREAM],
            "get": _operation(
                "The console's recent samples of one stream and its consumers",
                _json({"$ref": ref + "StreamSamples"}, "Unix times and series aligned with them"),
                400,
                404,
            ),
        },
        "/": {"get": _to_console()},
        "/console": {"get": _to_console()},
        "/console/": {
            "get": {
                "summary": "The web console (README Console)",
                "responses": {
                    "200": _text("its page", "text/html"),
                    **_errors(),
                },
            }
        },
        "/console/{file}": {
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "summary": "One of the console's files (scripts, styles)",
                "responses": {
                    "200": _text("the file", "text/javascript", "text/css", "text/html"),
                    **_errors(404),
                },
            },
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logserver",
            "version": __version__,
            "description": "HTTP event server (SPEC v1 + extensions).",
        },
        "security": [{"basic": []}],
        "paths": paths,
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}, "schemas": SCHEMAS},
    }


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "string", "description": '"<Reason> - <detail>"'},
    "Event": {
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 255},
                    "version": {"type": "integer", "minimum": 1},
                },
            },
            "system": {"type": "object"},
            "trigger": {"type": "object"},
            "payload": {"type": "object"},
        },
    },
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
    "AckMany": {
        "type": "object",
        "required": ["eventIds"],
        "properties": {"eventIds": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
    },
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
    "Seek": {
        "type": "object",
        "properties": {
            "to": {"enum": ["start", "end"]},
            "sequence": {"type": "integer", "minimum": 1},
            "time": {"type": "string", "format": "date-time"},
            "eventName": {"type": "string"},
        },
    },
    "Retention": {
        "type": ["object", "null"],
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
