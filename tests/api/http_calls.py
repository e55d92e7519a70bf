"""Requests against the API and checks every response must pass (the JSON content type)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

USER = "tester"
PASSWORD = "correct horse battery"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
MAX_LIMIT = 50
MAX_BODY_BYTES = 64 * 1024

Client = TestClient[web.BaseRequest, None]


def events_path(stream: str, event_id: str | None = None) -> str:
    path = f"/api/v1/streams/{quote(stream, safe='')}/events"
    return path if event_id is None else f"{path}/{quote(event_id, safe='')}"


def event_body(name: str = "OrderPlaced", **top_level: Any) -> dict[str, Any]:
    """The spec's example body, with `top_level` keys replaced or added."""
    body: dict[str, Any] = {
        "event": {"name": name, "version": 1},
        "system": {
            "id": "alv123",
            "name": "codello alvine",
            "time": "2017-09-06 13:58:12",
            "timezone": "Europe/Berlin",
        },
        "trigger": {"type": "system", "name": "/path/to/script.php"},
        "payload": {},
    }
    body.update(top_level)
    return body


async def expect(response: ClientResponse, status: int, body: Any = ...) -> Any:
    """Check status, the JSON content type every response must carry, and the body if given."""
    raw = await response.read()
    assert response.status == status, raw
    assert response.headers["Content-Type"] == JSON_CONTENT_TYPE
    decoded = orjson.loads(raw)
    if body is not ...:
        assert decoded == body
    return decoded


async def append(
    client: Client, stream: str, body: Any = None, producer: str = "producer-1", **kwargs: Any
) -> ClientResponse:
    headers = {**AUTH, "X-Producer-ID": producer, "Content-Type": "application/json"}
    data = orjson.dumps(event_body() if body is None else body)
    return await client.post(events_path(stream), data=data, headers=headers, **kwargs)


async def append_ok(client: Client, stream: str, body: Any = None, producer: str = "producer-1") -> str:
    event_id: str = await expect(await append(client, stream, body, producer), 200)
    return event_id


async def consume(
    client: Client,
    stream: str,
    event_name: str = "OrderPlaced",
    consumer: str = "consumer-1",
    limit: int = 10,
) -> ClientResponse:
    params = {"eventName": event_name, "limit": str(limit)}
    headers = {**AUTH, "X-Consumer-ID": consumer}
    return await client.get(events_path(stream), params=params, headers=headers)


async def consume_ok(
    client: Client,
    stream: str,
    event_name: str = "OrderPlaced",
    consumer: str = "consumer-1",
    limit: int = 10,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await expect(
        await consume(client, stream, event_name, consumer, limit), 200
    )
    return events


async def ack(client: Client, stream: str, event_id: str, consumer: str = "consumer-1") -> ClientResponse:
    headers = {**AUTH, "X-Consumer-ID": consumer, "Content-Type": "application/x-www-form-urlencoded"}
    return await client.post(events_path(stream, event_id), data=b"action=ACK", headers=headers)


async def raw_request(
    host: str, port: int, request_line: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given: the test client would normalise hostile paths before sending."""
    reader, writer = await asyncio.open_connection(host, port)
    head = [request_line, f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    parsed = {}
    for line in header_block.decode().split("\r\n"):
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload
