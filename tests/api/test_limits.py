"""Configurable limits, each a clear JSON 4xx; and JSON for what aiohttp answers before the dispatcher.

Most run on a raw socket (tests/api/live.py) to send what no HTTP client would; the
header limit and the JSON rendering of parser errors live in the ApiServer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from logserver.config import ServerConfig
from logserver.engine import Engine

from .http_calls import AUTH, JSON_CONTENT_TYPE, Client, append, append_ok, event_body, events_path, expect
from .live import Listening, listening

MAX_HEADER_BYTES = 1024
TOO_LARGE = (
    f"Request Header Fields Too Large - the request line or a header field exceeds {MAX_HEADER_BYTES} bytes"
)


@pytest.fixture
def config(config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(
        config, max_header_bytes=MAX_HEADER_BYTES, max_streams=3, max_event_name_chars=12
    )


@pytest.fixture
async def listener(engine: Engine, config: ServerConfig) -> AsyncIterator[Listening]:
    async with listening(engine, config) as listener:
        yield listener


async def exchange(listener: Listening, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` byte for byte and read the answer to the end (the server closes after errors)."""
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def request(line: str, *headers: str) -> bytes:
    return "\r\n".join([line, "Host: x", "Connection: close", *headers, "", ""]).encode("latin-1")


async def expect_json_error(listener: Listening, raw: bytes, status: int, message: str) -> None:
    answer, headers, body = await exchange(listener, raw)
    assert (answer, headers["content-type"]) == (status, JSON_CONTENT_TYPE), body
    assert orjson.loads(body) == message


async def test_a_header_field_over_the_limit_is_431(listener: Listening) -> None:
    raw = request("GET /health HTTP/1.1", "X-Padding: " + "p" * (MAX_HEADER_BYTES + 1))
    await expect_json_error(listener, raw, 431, TOO_LARGE)


async def test_a_request_line_over_the_limit_is_431(listener: Listening) -> None:
    raw = request(f"GET /api/v1/streams/{'s' * MAX_HEADER_BYTES}/events HTTP/1.1")
    await expect_json_error(listener, raw, 431, TOO_LARGE)


async def test_a_header_just_under_the_limit_is_served(listener: Listening) -> None:
    padding = "X-Padding: " + "p" * (MAX_HEADER_BYTES - 100)
    answer, _, body = await exchange(listener, request("GET /health HTTP/1.1", padding))
    assert answer == 200, body


async def test_too_many_header_fields_is_431(listener: Listening) -> None:
    raw = request("GET /health HTTP/1.1", *(f"X-Field-{i}: v" for i in range(200)))
    await expect_json_error(listener, raw, 431, "Request Header Fields Too Large - too many header fields")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"G\x00T /health HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid method encountered"),
        (b"GET /api/v1/streams/a\x00b/events HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid char in url path"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", "Invalid header token"),
        (
            b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "Received HTTPS traffic on an HTTP port"),
    ],
    ids=["nul in method", "nul in path", "space in header name", "te and cl", "tls on plain port"],
)
async def test_what_the_parser_rejects_is_a_json_400(listener: Listening, raw: bytes, reason: str) -> None:
    answer, headers, body = await exchange(listener, raw)
    assert (answer, headers["content-type"]) == (400, JSON_CONTENT_TYPE), body
    message = orjson.loads(body)
    assert message.startswith("Bad Request - malformed HTTP request: ")
    assert reason in message


@pytest.mark.parametrize("value", ["200-ok", "\x80"], ids=["unknown", "not utf-8"])
async def test_an_unknown_expectation_is_a_json_417(listener: Listening, value: str) -> None:
    # aiohttp answered 500 for the second: it echoes the value into a UTF-8 body (fuzzer find).
    for path in ("/health", "/no/such/route", "/api/v1/streams/orders/events?"):
        raw = request(f"POST {path} HTTP/1.1", f"Expect: {value}", "Content-Length: 0")
        await expect_json_error(
            listener, raw, 417, "Expectation Failed - only 'Expect: 100-continue' is supported"
        )


@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
async def test_an_empty_expectation_is_no_expectation(listener: Listening, value: str) -> None:
    answer, _, body = await exchange(listener, request("GET /health HTTP/1.1", f"Expect:{value}"))
    assert (answer, orjson.loads(body)["status"]) == (200, "ok")


async def test_100_continue_still_works(listener: Listening) -> None:
    body = orjson.dumps(event_body())
    headers = {**AUTH, "X-Producer-ID": "p", "Expect": "100-continue"}
    url = f"{listener.url}{events_path('s')}"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        assert response.status == 200


async def test_a_bad_chunked_body_is_a_json_400(listener: Listening) -> None:
    auth = f"Authorization: {AUTH['Authorization']}"
    head = request(
        "POST /api/v1/streams/s/events HTTP/1.1", auth, "X-Producer-ID: p", "Transfer-Encoding: chunked"
    )
    answer, headers, body = await exchange(listener, head + b"zz\r\n{}\r\n0\r\n\r\n")
    assert (answer, headers["content-type"]) == (400, JSON_CONTENT_TYPE), body
    assert orjson.loads(body) == "Bad Request - malformed HTTP request: Invalid character in chunk size"


async def test_a_body_cut_short_is_a_client_error_not_a_500(
    listener: Listening, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "logserver.http")
    auth = f"Authorization: {AUTH['Authorization']}"
    # Verified once now, so below the handler reaches the body without waiting for a key derivation.
    assert (await exchange(listener, request("GET /api/v1/streams/s/events?eventName=A HTTP/1.1", auth)))[
        0
    ] == 400
    head = request("POST /api/v1/streams/s/events HTTP/1.1", auth, "X-Producer-ID: p", "Content-Length: 100")
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    writer.write(head + b'{"event":')
    writer.write_eof()  # the client stops sending 91 bytes short
    assert await reader.read() == b""  # aiohttp drops the connection; nobody is there to answer
    writer.close()
    await writer.wait_closed()
    # A full exchange on a new connection: the cut-off handler has run its course by its end.
    assert (await exchange(listener, request("GET /health HTTP/1.1")))[0] == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert "the client went away mid-request" in caplog.text


async def test_streams_beyond_the_maximum_are_409(client: Client) -> None:
    for stream in ("one", "two", "three"):
        await append_ok(client, stream)
    response = await append(client, "four")
    await expect(response, 409, "Conflict - the server already holds its maximum of 3 streams")
    await append_ok(client, "two")  # existing streams take appends as before
    await expect(await client.get("/health"), 200, {"status": "ok", "streams": 3})


async def test_racing_creators_cannot_overshoot_the_maximum(client: Client) -> None:
    await append_ok(client, "one")
    await append_ok(client, "two")
    responses = await asyncio.gather(*(append(client, f"new {i}") for i in range(10)))
    assert sorted(r.status for r in responses) == [200] + [409] * 9
    await expect(await client.get("/health"), 200, {"status": "ok", "streams": 3})


async def test_event_names_over_the_configured_length_are_400(client: Client) -> None:
    await append_ok(client, "s", event_body("x" * 12))
    response = await append(client, "s", event_body("x" * 13))
    await expect(response, 400, "Bad Request - event.name must be 1 to 12 characters")


async def test_reads_accept_names_up_to_255_whatever_the_append_limit(client: Client) -> None:
    # Lowering the limit later must not make events stored under a longer name unreadable.
    await append_ok(client, "s")
    headers = {**AUTH, "X-Consumer-ID": "c"}
    response = await client.get(
        events_path("s"), params={"eventName": "y" * 255, "limit": "1"}, headers=headers
    )
    await expect(response, 200, [])
    response = await client.get(
        events_path("s"), params={"eventName": "y" * 256, "limit": "1"}, headers=headers
    )
    await expect(response, 400, "Bad Request - eventName must be 1 to 255 characters")
