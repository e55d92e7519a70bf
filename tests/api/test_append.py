"""POST /api/v1/streams/{stream}/events: every row of SPEC §1.1's table and its validation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from .http_calls import (
    AUTH,
    MAX_BODY_BYTES,
    Client,
    append,
    append_ok,
    consume_ok,
    event_body,
    events_path,
    expect,
)


async def test_append_answers_the_event_id_as_a_uuid_string(client: Client) -> None:
    event_id = await append_ok(client, "orders")
    assert str(uuid.UUID(event_id)) == event_id


async def test_second_producer_is_locked_out(client: Client) -> None:
    await append_ok(client, "orders", producer="shop")
    response = await append(client, "orders", producer="intruder")
    await expect(response, 423, "Locked - Second writers not allowed")
    await append_ok(client, "orders", producer="shop")


async def test_fifty_producers_racing_to_create_a_stream_leave_exactly_one_owner(client: Client) -> None:
    responses = await asyncio.gather(*(append(client, "contested", producer=f"p{i}") for i in range(50)))
    statuses = sorted(r.status for r in responses)
    for response in responses:
        await expect(response, response.status)
    assert statuses == [200] + [423] * 49
    winner = next(i for i, r in enumerate(responses) if r.status == 200)
    await append_ok(client, "contested", producer=f"p{winner}")


async def test_without_credentials_is_401_with_a_basic_challenge(client: Client) -> None:
    response = await client.post(events_path("orders"), data=orjson.dumps(event_body()))
    await expect(response, 401, "Unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="logserver"'


async def test_body_over_the_limit_is_413(client: Client) -> None:
    body = event_body(payload={"pad": "x" * MAX_BODY_BYTES})
    message = await expect(await append(client, "orders", body), 413)
    assert message.startswith("Payload Too Large - ")


ERROR_CASES: list[tuple[str, Any, str]] = [
    ("not JSON", b"{not json", "body is not valid JSON"),
    ("empty body", b"", "body is not valid JSON"),
    ("array", [1, 2], "body must be a JSON object"),
    ("no event", {"payload": {}}, "event must be an object"),
    ("event not object", event_body(event="OrderPlaced"), "event must be an object"),
    ("no name", event_body(event={"version": 1}), "event.name"),
    ("empty name", event_body(event={"name": "", "version": 1}), "event.name"),
    ("name not string", event_body(event={"name": 7, "version": 1}), "event.name"),
    ("name too long", event_body(event={"name": "n" * 256, "version": 1}), "event.name"),
    ("name control char", event_body(event={"name": "a\nb", "version": 1}), "event.name"),
    ("no version", event_body(event={"name": "A"}), "event.version"),
    ("version zero", event_body(event={"name": "A", "version": 0}), "event.version"),
    ("version string", event_body(event={"name": "A", "version": "1"}), "event.version"),
    ("version bool", event_body(event={"name": "A", "version": True}), "event.version"),
    ("version float", event_body(event={"name": "A", "version": 1.5}), "event.version"),
    ("system not object", event_body(system="alv123"), "system must be an object"),
    ("system null", event_body(system=None), "system must be an object"),
    ("system.id number", event_body(system={"id": 123}), "system.id must be a string"),
    ("system.name null", event_body(system={"name": None}), "system.name must be a string"),
    ("system.time words", event_body(system={"time": "yesterday"}), "system.time"),
    ("system.time month 13", event_body(system={"time": "2017-13-06 13:58:12"}), "system.time"),
    ("system.time Feb 30", event_body(system={"time": "2017-02-30 13:58:12"}), "system.time"),
    ("system.time hour 24", event_body(system={"time": "2017-09-06 24:00:00"}), "system.time"),
    ("system.time no offset", event_body(system={"time": "2017-09-06T13:58:12"}), "system.time"),
    ("system.time bad offset", event_body(system={"time": "2017-09-06T13:58:12+25:00"}), "system.time"),
    ("system.timezone unknown", event_body(system={"timezone": "Mars/Olympus"}), "system.timezone"),
    ("system.timezone path", event_body(system={"timezone": "../../etc/passwd"}), "system.timezone"),
    ("system.timezone number", event_body(system={"timezone": 1}), "system.timezone must be a string"),
    ("trigger not object", event_body(trigger=[]), "trigger must be an object"),
    ("trigger.type number", event_body(trigger={"type": 1}), "trigger.type must be a string"),
    ("trigger.name bool", event_body(trigger={"name": False}), "trigger.name must be a string"),
    ("payload list", event_body(payload=[1]), "payload must be an object"),
    ("payload null", event_body(payload=None), "payload must be an object"),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
async def test_malformed_body_is_400_naming_the_field(client: Client, body: Any, field: str) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {**AUTH, "X-Producer-ID": "p"}
    message = await expect(await client.post(events_path("orders"), data=data, headers=headers), 400)
    assert message.startswith("Bad Request - ")
    assert field in message


@pytest.mark.parametrize(
    "producer",
    [None, "", "p" * 257, "tab\tinside"],
    ids=["missing", "empty", "too long", "control char"],
)
async def test_bad_producer_id_is_400(client: Client, producer: str | None) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    if producer is not None:
        headers["X-Producer-ID"] = producer
    response = await client.post(events_path("orders"), data=orjson.dumps(event_body()), headers=headers)
    message = await expect(response, 400)
    assert "X-Producer-ID" in message


async def test_producer_id_of_256_printable_characters_is_accepted(client: Client) -> None:
    await append_ok(client, "orders", producer="Ü" * 255 + "!")


@pytest.mark.parametrize(
    "time",
    [
        "2017-09-06 13:58:12",
        "2017-09-06T13:58:12Z",
        "2017-09-06t13:58:12z",
        "2017-09-06T13:58:12.123456+02:00",
        "2017-09-06 13:58:12-05:30",
        "2016-12-31T23:59:60Z",
    ],
)
async def test_both_time_formats_are_accepted(client: Client, time: str) -> None:
    await append_ok(client, "orders", event_body(system={"time": time, "timezone": "America/New_York"}))


async def test_system_and_trigger_and_payload_are_optional(client: Client) -> None:
    await append_ok(client, "minimal", {"event": {"name": "OrderPlaced", "version": 3}})
    [stored] = await consume_ok(client, "minimal")
    assert stored["payload"] == {}
    assert "system" not in stored
    assert "trigger" not in stored


async def test_unknown_top_level_keys_are_kept_and_server_fields_win(client: Client) -> None:
    body = event_body(payload={"orderId": 42}, correlation="abc-1", stream="forged", sequence=-1)
    event_id = await append_ok(client, "orders", body)
    [stored] = await consume_ok(client, "orders")
    assert stored["correlation"] == "abc-1"
    assert stored["payload"] == {"orderId": 42}
    assert stored["stream"] == "orders"
    assert stored["sequence"] != -1
    assert stored["eventId"] == event_id
    assert stored["producerId"] == "producer-1"
    assert stored["receivedAt"].endswith("Z")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/json", "Accept": "text/html"},
        {"Accept": "*/*"},
    ],
    ids=["no content type", "text/plain", "with charset", "accept html", "accept any"],
)
async def test_request_headers_are_taken_liberally(client: Client, headers: dict[str, str]) -> None:
    all_headers = {**AUTH, "X-Producer-ID": "p", **headers}
    response = await client.post(events_path("orders"), data=orjson.dumps(event_body()), headers=all_headers)
    await expect(response, 200)
