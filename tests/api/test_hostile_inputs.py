"""The client inputs of issue 11 that answered 5xx, or did what they should have refused: each is a
JSON 4xx now, checked on a real socket against the real server and store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.http.validation import MAX_NESTING, MAX_RETENTION_AGE_SECONDS, MAX_RETENTION_BYTES

from .http_calls import AUTH, Client, append, append_ok, event_body, events_path, expect
from .live import Listening, listening

MAX_DELIVERIES = 2


@pytest.fixture
def config(config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(config, max_deliveries=MAX_DELIVERIES)


@pytest.fixture
async def listener(engine: Engine, config: ServerConfig) -> AsyncIterator[Listening]:
    async with listening(engine, config) as listener:
        yield listener


async def exchange(listener: Listening, request: bytes) -> tuple[bytes, int, bytes]:
    """Send a request head (no body) and read one answer: (interim answers before it, status, body).

    Reads by Content-Length rather than to the close: the server may wait for a body that a
    client refused with `Expect` never sends.
    """
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    writer.write(request)
    await writer.drain()
    interim = b""
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    while answer.startswith(b"HTTP/1.1 100 "):
        interim += answer
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = answer.decode("latin-1").split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    writer.close()
    return interim, int(lines[0].split()[1]), body


def head(line: str, *headers: str) -> bytes:
    return "\r\n".join([line, "Host: x", *headers, "", ""]).encode("latin-1")


# ---- item 7: non-ASCII credentials, deep nesting ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"Basic \xc3\xa9", b"Basic \xff\xfe", b"Basic dGVzdGVy\xc3\xa9"],
    ids=["e-acute", "latin-1", "tail"],
)
async def test_non_ascii_authorization_is_401_not_500(listener: Listening, value: bytes) -> None:
    request = b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n"
    _, status, body = await exchange(listener, request)
    assert (status, orjson.loads(body)) == (401, "Unauthorized")


def nested_event(levels: int) -> bytes:
    """An event whose whole body nests `levels` deep (the event object is level 1), as JSON text:
    orjson, like the server's record encoder, can't serialize it beyond 254 levels."""
    inner = b'{"a":' * (levels - 1) + b"1" + b"}" * (levels - 1)
    return b'{"event": {"name": "OrderPlaced", "version": 1}, "payload": ' + inner + b"}"


async def post(client: Client, stream: str, body: bytes, batch: bool = False) -> Any:
    headers = {**AUTH, "X-Producer-ID": "producer-1"}
    path = events_path(stream) + (":batch" if batch else "")
    return await client.post(path, data=body, headers=headers)


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 253, 254, 300, 1022])
async def test_deep_nesting_is_400_in_single_and_batch_appends(client: Client, levels: int) -> None:
    body = nested_event(levels)
    message = f"Bad Request - body nests deeper than {MAX_NESTING} levels"
    await expect(await post(client, "deep", body), 400, message)
    batch = b"[" + orjson.dumps(event_body()) + b", " + body + b"]"
    message = f"Bad Request - events[1] nests deeper than {MAX_NESTING} levels"
    await expect(await post(client, "deep", batch, batch=True), 400, message)
    assert (await client.get("/api/v1/streams/deep", headers=AUTH)).status == 404  # nothing stored


async def test_nesting_up_to_the_limit_is_stored_and_read_back(client: Client) -> None:
    body = nested_event(MAX_NESTING)
    event_id = await expect(await post(client, "deep", body), 200)
    stored = await expect(await client.get(events_path("deep", event_id), headers=AUTH), 200)
    assert stored["payload"] == orjson.loads(body)["payload"]
    await expect(await post(client, "deep", b"[" + body + b"," + body + b"]", batch=True), 200)


# ---- items 7 and 8: retention values typed and ranged ------------------------------------------------


def retention_path(stream: str) -> str:
    return events_path(stream).removesuffix("/events") + "/retention"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"maxBytes": "10"}', "maxBytes must be an integer from 1 to 4611686018427387904 or null"),
        (b'{"maxbytes": 5}', "body may hold only maxAgeSeconds and maxBytes"),
        (b'{"maxBytes": 5, "extra": null}', "body may hold only maxAgeSeconds and maxBytes"),
        (
            b'{"maxAgeSeconds": 1e15}',
            f"maxAgeSeconds must be an integer from 1 to {MAX_RETENTION_AGE_SECONDS} or null",
        ),
        (
            b'{"maxAgeSeconds": 1e300}',
            f"maxAgeSeconds must be an integer from 1 to {MAX_RETENTION_AGE_SECONDS} or null",
        ),
        (
            b'{"maxAgeSeconds": %d}' % (MAX_RETENTION_AGE_SECONDS + 1),
            f"maxAgeSeconds must be an integer from 1 to {MAX_RETENTION_AGE_SECONDS} or null",
        ),
        (
            b'{"maxAgeSeconds": 86400.5}',
            f"maxAgeSeconds must be an integer from 1 to {MAX_RETENTION_AGE_SECONDS} or null",
        ),
        (
            b'{"maxAgeSeconds": true}',
            f"maxAgeSeconds must be an integer from 1 to {MAX_RETENTION_AGE_SECONDS} or null",
        ),
        (b'{"maxBytes": 0}', f"maxBytes must be an integer from 1 to {MAX_RETENTION_BYTES} or null"),
        (
            b'{"maxBytes": %d}' % (MAX_RETENTION_BYTES + 1),
            f"maxBytes must be an integer from 1 to {MAX_RETENTION_BYTES} or null",
        ),
        (
            b'{"maxBytes": 18446744073709551616}',
            f"maxBytes must be an integer from 1 to {MAX_RETENTION_BYTES} or null",
        ),
        (b"[]", "body must be a JSON object"),
        (b"{", "body is not valid JSON"),
    ],
)
async def test_bad_retention_is_400_and_changes_nothing(
    client: Client, body: bytes, message: str, engine_name: str
) -> None:
    for i in range(60):  # 4 KiB segments: several sealed ones that a wrong limit would delete
        await append_ok(client, "kept", event_body(payload={"i": i, "pad": "x" * 300}))
    kept = await client.put(retention_path("kept"), data=b'{"maxAgeSeconds": 86400}', headers=AUTH)
    before = await expect(kept, 200)
    assert before["segmentsRemoved"] == 0
    if engine_name == "file":  # JetStream has no segments (README "JetStream engine")
        assert before["segments"] > 3
    await expect(
        await client.put(retention_path("kept"), data=body, headers=AUTH), 400, f"Bad Request - {message}"
    )
    after = await expect(await client.get("/api/v1/streams/kept", headers=AUTH), 200)
    assert after["retention"] == {"maxAgeSeconds": 86400}
    assert (after.get("segments"), after["firstSequence"], after["eventCount"]) == (
        before.get("segments"),
        before["firstSequence"],
        before["eventCount"],
    )


async def test_retention_at_its_bounds_and_null_is_accepted(client: Client) -> None:
    await append_ok(client, "bounded")
    limits = {"maxAgeSeconds": MAX_RETENTION_AGE_SECONDS, "maxBytes": MAX_RETENTION_BYTES}
    answer = await expect(
        await client.put(retention_path("bounded"), data=orjson.dumps(limits), headers=AUTH), 200
    )
    assert answer["retention"] == limits
    cleared = {"maxAgeSeconds": None, "maxBytes": None}
    answer = await expect(
        await client.put(retention_path("bounded"), data=orjson.dumps(cleared), headers=AUTH), 200
    )
    assert "retention" not in answer or not answer["retention"]


# ---- item 9: dead-letter streams belong to the server ------------------------------------------------


async def test_no_producer_may_append_to_a_dead_letter_stream(client: Client) -> None:
    message = "Forbidden - stream 'orders-eu.dlq' holds dead letters: only the server appends to it"
    await expect(await append(client, "orders-eu.dlq"), 403, message)
    await expect(await append(client, "orders-eu.dlq", producer="logserver-dead-letter"), 403, message)
    headers = {**AUTH, "X-Producer-ID": "squatter"}
    batch = orjson.dumps([event_body()])
    await expect(
        await client.post(events_path("orders-eu.dlq") + ":batch", data=batch, headers=headers), 403, message
    )
    assert (await client.get("/api/v1/streams/orders-eu.dlq", headers=AUTH)).status == 404


async def test_the_server_still_dead_letters_into_it(client: Client) -> None:
    # The squat of issue 11 first, which used to make dead-lettering fail with "Second writers".
    assert (await append(client, "orders-eu.dlq", producer="squatter")).status == 403
    poison = await append_ok(client, "orders-eu", event_body(payload={"poison": True}))
    headers = {**AUTH, "X-Consumer-ID": "workers"}
    params = {"eventName": "OrderPlaced", "limit": "1", "ackWait": "30"}
    for delivery in range(MAX_DELIVERIES):
        [event] = await expect(
            await client.get(events_path("orders-eu"), params=params, headers=headers), 200
        )
        assert (event["eventId"], event["deliveryCount"]) == (poison, delivery + 1)
        nack = await client.post(events_path("orders-eu", poison), data=b"action=NACK", headers=headers)
        await expect(nack, 200, "OK")
    await expect(await client.get(events_path("orders-eu"), params=params, headers=headers), 200, [])
    read = {"eventName": "OrderPlaced", "limit": "10"}
    [dead] = await expect(await client.get(events_path("orders-eu.dlq"), params=read, headers=headers), 200)
    assert dead["deadLetter"]["eventId"] == poison and dead["producerId"] == "logserver-dead-letter"


# ---- item 10: Expect: 100-continue only after authentication and the size check ----------------------


def expecting(*headers: str, length: int = 60) -> bytes:
    return head(
        "POST /api/v1/streams/s/events HTTP/1.1",
        "Expect: 100-continue",
        f"Content-Length: {length}",
        "X-Producer-ID: p",
        *headers,
    )


async def test_expect_without_credentials_is_401_without_100_continue(listener: Listening) -> None:
    interim, status, body = await exchange(listener, expecting())
    assert (interim, status, orjson.loads(body)) == (b"", 401, "Unauthorized")
    interim, status, _ = await exchange(listener, expecting("Authorization: Basic bm9ib2R5Ong="))
    assert (interim, status) == (b"", 401)


async def test_expect_with_an_oversized_body_is_413_without_100_continue(
    listener: Listening, config: ServerConfig
) -> None:
    auth = f"Authorization: {AUTH['Authorization']}"
    interim, status, body = await exchange(listener, expecting(auth, length=config.max_body_bytes + 1))
    assert interim == b""
    assert (status, orjson.loads(body)) == (
        413,
        f"Payload Too Large - request body exceeds {config.max_body_bytes} bytes",
    )


async def test_expect_with_credentials_and_a_fitting_body_gets_100_continue_then_the_answer(
    listener: Listening,
) -> None:
    event = orjson.dumps(event_body())
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    writer.write(expecting(f"Authorization: {AUTH['Authorization']}", length=len(event)))
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(event)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 200 ")
    writer.close()
