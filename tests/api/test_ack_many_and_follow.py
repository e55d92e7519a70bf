"""Batch ack (`POST …/events:ack`) and the live follow (`GET …/history?follow=true`, SSE) over
real HTTP, against the server that `logserver serve` runs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.filestore import FileStore

from .http_calls import AUTH, Client, append_ok, consume_ok, event_body, events_path, expect
from .live import listening

STREAM = "Follow Stream"


async def ack_many(client: Client, ids: Any, consumer: str = "c") -> Any:
    headers = {**AUTH, "X-Consumer-ID": consumer}
    return await client.post(
        events_path(STREAM) + ":ack", data=orjson.dumps({"eventIds": ids}), headers=headers
    )


async def ack_answers(client: Client) -> list[str]:
    """Six events, a batch ack of #1 and #3 (with an unknown id, a repeat and junk); their ids."""
    ids = [await append_ok(client, STREAM) for _ in range(6)]
    unknown = "00000000-0000-8000-8000-000000000001"
    answer = await expect(await ack_many(client, [ids[0], ids[2], unknown, ids[2], "junk"]), 200)
    assert answer == {
        "results": [
            {"eventId": ids[0], "status": "OK"},
            {"eventId": ids[2], "status": "OK"},
            {"eventId": unknown, "status": "Not Found"},
            {"eventId": ids[2], "status": "OK"},  # idempotent, also within one request
            {"eventId": "junk", "status": "Not Found"},
        ]
    }
    return ids


async def test_batch_ack_answers_per_id_and_never_skips(client: Client) -> None:
    ids = await ack_answers(client)
    remaining = await consume_ok(client, STREAM, consumer="c", limit=10)
    assert [e["eventId"] for e in remaining] == [ids[1], *ids[3:]]  # 2 stays acked, 1 is not skipped
    await expect(await ack_many(client, ids[1:]), 200)
    assert await consume_ok(client, STREAM, consumer="c", limit=10) == []


@pytest.mark.file_engine_only("reads the file engine's checkpoint and counts its flushes")
async def test_batch_ack_is_one_durable_write(client: Client, store: FileStore) -> None:
    ids = await ack_answers(client)
    entry = store.stream(STREAM).consumers.checkpoint.get("c", "OrderPlaced")
    assert entry is not None and entry.position == 1 and entry.acked == {3}
    flushes = store.stream(STREAM).consumers.checkpoint.commit.flushes
    await expect(await ack_many(client, ids[1:]), 200)
    assert store.stream(STREAM).consumers.checkpoint.commit.flushes == flushes + 1  # one durable write
    assert await consume_ok(client, STREAM, consumer="c", limit=10) == []


async def test_batch_ack_refuses_a_bad_body_and_an_unknown_stream(client: Client) -> None:
    await append_ok(client, STREAM)
    for body in ([], {"eventIds": []}, {"eventIds": "x"}, {"eventIds": [1]}, {"ids": ["x"]}):
        headers = {**AUTH, "X-Consumer-ID": "c"}
        response = await client.post(events_path(STREAM) + ":ack", data=orjson.dumps(body), headers=headers)
        await expect(response, 400)
    missing = await client.post(
        events_path("nope") + ":ack", data=b'{"eventIds": ["x"]}', headers={**AUTH, "X-Consumer-ID": "c"}
    )
    assert await expect(missing, 404) == "Not Found - stream 'nope' does not exist"


async def read_sse(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, dict[str, Any] | None]]:
    """The next `count` SSE items: (id, event) for events, ("heartbeat", None) for heartbeats."""
    items: list[tuple[str, dict[str, Any] | None]] = []
    block: list[str] = []
    while len(items) < count:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line:
            block.append(line)
            continue
        if block == [": heartbeat"]:
            items.append(("heartbeat", None))
        elif block:
            fields = dict(part.split(": ", 1) for part in block)
            assert fields["event"] == "event"
            items.append((fields["id"], orjson.loads(fields["data"])))
        block = []
    return items


def follow_url(base: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"follow": "true", "limit": "2", **params}.items())
    return f"{base}/api/v1/streams/Follow%20Stream/history?{query}"


async def test_follow_sends_the_stored_page_then_new_events_and_heartbeats(
    engine: Engine, config: ServerConfig
) -> None:
    async with listening(engine, config) as server, aiohttp.ClientSession() as session:
        first = [await engine.append(STREAM, "p", event_body(i=i)) for i in range(3)]
        sse = {**AUTH, "Accept": "text/event-stream"}
        async with session.get(follow_url(server.url, heartbeat="0.3"), headers=sse) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            stored = await read_sse(response, 3)  # pages of 2: all three, in order
            assert [event["eventId"] for _, event in stored if event] == first
            assert [sequence for sequence, _ in stored] == ["1", "2", "3"]
            assert await read_sse(response, 1) == [("heartbeat", None)]  # nothing new: kept alive
            later = await engine.append(STREAM, "p", event_body("Other"))
            [(sequence, event)] = await read_sse(response, 1)
            assert sequence == "4" and event is not None and event["eventId"] == later
        # Reconnecting with Last-Event-ID resumes after it; eventName filters.
        resume = {**sse, "Last-Event-ID": "2"}
        async with session.get(follow_url(server.url, eventName="OrderPlaced"), headers=resume) as response:
            [(sequence, _)] = await read_sse(response, 1)
            assert sequence == "3"
        assert await engine.consumer_lag(STREAM) == []  # following made and moved no consumer


async def test_follow_ends_cleanly_when_the_server_stops(engine: Engine, config: ServerConfig) -> None:
    await engine.append(STREAM, "p", event_body())
    async with aiohttp.ClientSession() as session:
        async with listening(engine, config) as server:
            sse = {**AUTH, "Accept": "text/event-stream"}
            response = await session.get(follow_url(server.url), headers=sse)
            await read_sse(response, 1)
            started = asyncio.get_running_loop().time()
        # The listener's cleanup returned: the follow ended within its wake-up interval.
        assert asyncio.get_running_loop().time() - started < 5
        assert await asyncio.wait_for(response.content.read(), 5) == b""
        response.release()


async def test_follow_needs_the_event_stream_accept_header(client: Client) -> None:
    await append_ok(client, STREAM)
    path = events_path(STREAM).removesuffix("/events") + "/history"
    response = await client.get(path, params={"follow": "true"}, headers=AUTH)
    assert "text/event-stream" in await expect(response, 406)
    response = await client.get(path, params={"follow": "maybe"}, headers=AUTH)
    await expect(response, 400)
