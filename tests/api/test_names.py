"""Names as people write them work end to end; hostile names never become paths."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from logserver.config import ServerConfig

from .http_calls import AUTH, Client, ack, append_ok, consume_ok, event_body, expect, raw_request

PLAIN_NAMES = [
    ("Codello Newsletter Subscriptions", "Webshop order was placed"),
    ("Über Straße 東京 🎉", "Bestellung aufgegeben ✓"),
    ("100% sure? #1 & more+", "a/b event names may hold a slash"),
    ("x" * 255, "y" * 255),
]


@pytest.mark.parametrize(
    ("stream", "event_name"), PLAIN_NAMES, ids=["spaces", "unicode", "punctuation", "longest"]
)
async def test_plain_text_names_work_end_to_end(client: Client, stream: str, event_name: str) -> None:
    event_id = await append_ok(client, stream, event_body(event_name))
    [event] = await consume_ok(client, stream, event_name)
    assert event["stream"] == stream
    assert event["event"]["name"] == event_name
    await expect(await ack(client, stream, event_id), 200, "OK")
    assert await consume_ok(client, stream, event_name) == []


def snapshot(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, dirs, files in os.walk(root) for name in dirs + files}


# (raw path segment as sent on the wire, expected status, stream name it must be stored as)
HOSTILE = [
    ("..", 200, ".."),
    ("%2e%2e", 200, ".."),
    (".", 200, "."),
    (".hidden", 200, ".hidden"),
    ("..%2F..%2Fescape", 400, None),
    ("%2e%2e%2f%2e%2e%2fescape", 400, None),
    ("a%2Fb", 400, None),
    ("nul%00byte", 400, None),
    ("%7E", 200, "~"),
    # Not UTF-8 (a surrogate, bytes no UTF-8 text has) or no escape at all: 400, no longer the
    # literal text "%ED%A0%80" (issue 11). "%25FF" is how a name with a literal "%FF" is sent.
    ("%ED%A0%80", 400, None),
    ("%FF%FE", 400, None),
    ("a%zzb", 400, None),
    ("a%", 400, None),
    ("%25FF", 200, "%FF"),
    ("x" * 256, 400, None),
]


async def send_hostile_names(client: Client) -> None:
    """Append, consume and ack through every HOSTILE path segment; check each answer."""
    host, port = client.server.host, client.server.port
    assert isinstance(port, int)
    body = orjson.dumps(event_body("OrderPlaced"))
    for segment, status, stored_as in HOSTILE:
        append_headers = {**AUTH, "X-Producer-ID": "p", "Content-Type": "application/json"}
        answer, headers, payload = await raw_request(
            host, port, f"POST /api/v1/streams/{segment}/events HTTP/1.1", append_headers, body
        )
        assert (answer, headers["content-type"]) == (status, "application/json; charset=utf-8"), segment
        consume_headers = {**AUTH, "X-Consumer-ID": "c"}
        answer, _, payload = await raw_request(
            host,
            port,
            f"GET /api/v1/streams/{segment}/events?eventName=OrderPlaced&limit=10 HTTP/1.1",
            consume_headers,
        )
        if stored_as is None:
            assert answer == 400, segment
            continue
        assert answer == 200, segment
        events = orjson.loads(payload)
        assert events
        assert {event["stream"] for event in events} == {stored_as}
        answer, _, _ = await raw_request(
            host,
            port,
            f"POST /api/v1/streams/{segment}/events/..%2F..%2Fusers HTTP/1.1",
            consume_headers,
            b"action=ACK",
        )
        assert answer == 404, segment


async def test_hostile_names_are_refused_or_stored_under_their_decoded_name(client: Client) -> None:
    await send_hostile_names(client)


@pytest.mark.file_engine_only("inspects the file engine's directories under the data dir")
async def test_hostile_names_never_touch_the_filesystem_outside_the_data_dir(
    client: Client, config: ServerConfig, tmp_path: Path
) -> None:
    await append_ok(client, "baseline")
    outside_before = snapshot(tmp_path) - snapshot(config.data_dir) - {config.data_dir}
    await send_hostile_names(client)
    assert snapshot(tmp_path) - snapshot(config.data_dir) - {config.data_dir} == outside_before
    streams_dir = config.data_dir / "streams"
    # Every stream is one directory directly under streams/, none of them a dot-name.
    for entry in streams_dir.iterdir():
        assert entry.is_dir()
        assert not entry.name.startswith(".")
