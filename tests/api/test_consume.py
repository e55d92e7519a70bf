"""GET /api/v1/streams/{stream}/events: SPEC §1.2, at-least-once delivery per consumer."""

from __future__ import annotations

import pytest

from .http_calls import (
    AUTH,
    MAX_LIMIT,
    Client,
    ack,
    append_ok,
    consume,
    consume_ok,
    event_body,
    events_path,
    expect,
)


async def test_returns_events_of_that_name_in_append_order_with_server_fields(client: Client) -> None:
    placed = [await append_ok(client, "shop", event_body(payload={"n": i})) for i in range(3)]
    await append_ok(client, "shop", event_body("OrderCancelled"))
    events = await consume_ok(client, "shop")
    assert [e["eventId"] for e in events] == placed
    assert [e["payload"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    assert {e["stream"] for e in events} == {"shop"}
    assert {e["producerId"] for e in events} == {"producer-1"}
    [cancelled] = await consume_ok(client, "shop", "OrderCancelled")
    assert cancelled["event"] == {"name": "OrderCancelled", "version": 1}


async def test_unacknowledged_events_come_back_on_every_get(client: Client) -> None:
    ids = [await append_ok(client, "shop") for _ in range(3)]
    first = await consume_ok(client, "shop", limit=2)
    second = await consume_ok(client, "shop", limit=2)
    assert first == second
    assert [e["eventId"] for e in first] == ids[:2]
    await expect(await ack(client, "shop", ids[0]), 200, "OK")
    assert [e["eventId"] for e in await consume_ok(client, "shop", limit=2)] == ids[1:]


async def test_consumers_keep_separate_positions(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    await expect(await ack(client, "shop", event_id, consumer="mailer"), 200, "OK")
    assert await consume_ok(client, "shop", consumer="mailer") == []
    assert [e["eventId"] for e in await consume_ok(client, "shop", consumer="billing")] == [event_id]


async def test_existing_stream_without_events_of_that_name_is_an_empty_array(client: Client) -> None:
    await append_ok(client, "shop")
    assert await consume_ok(client, "shop", "NeverHappened") == []


async def test_unknown_stream_is_404_naming_it(client: Client) -> None:
    await expect(await consume(client, "nowhere"), 404, "Not Found - stream 'nowhere' does not exist")


async def test_limit_is_required(client: Client) -> None:
    # SPEC §1.2 makes it mandatory; it used to default to 10.
    await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "c"}
    response = await client.get(events_path("shop"), params={"eventName": "OrderPlaced"}, headers=headers)
    await expect(response, 400, "Bad Request - limit is required")


async def test_limit_may_be_the_configured_maximum(client: Client) -> None:
    await append_ok(client, "shop")
    assert len(await consume_ok(client, "shop", limit=MAX_LIMIT)) == 1


@pytest.mark.parametrize(
    "limit", ["0", str(MAX_LIMIT + 1), "-1", "abc", "1.5", "", " 5", "+5", "٣", "9" * 40]
)
async def test_limit_outside_one_to_max_is_400(client: Client, limit: str) -> None:
    await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "c"}
    params = {"eventName": "OrderPlaced", "limit": limit}
    response = await client.get(events_path("shop"), params=params, headers=headers)
    await expect(response, 400, f"Bad Request - limit must be an integer between 1 and {MAX_LIMIT}")


@pytest.mark.parametrize(
    "params", [{}, {"eventName": ""}, {"limit": "5"}], ids=["none", "empty", "only limit"]
)
async def test_missing_or_empty_event_name_is_400(client: Client, params: dict[str, str]) -> None:
    await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "c"}
    response = await client.get(events_path("shop"), params=params, headers=headers)
    await expect(response, 400, "Bad Request - eventName is required")


async def test_event_name_with_control_characters_is_400(client: Client) -> None:
    await append_ok(client, "shop")
    message = await expect(await consume(client, "shop", "bad\x07name"), 400)
    assert "eventName" in message


async def test_missing_consumer_id_is_400(client: Client) -> None:
    await append_ok(client, "shop")
    response = await client.get(events_path("shop"), params={"eventName": "OrderPlaced"}, headers=AUTH)
    await expect(response, 400, "Bad Request - X-Consumer-ID header is required")


async def test_without_credentials_is_401(client: Client) -> None:
    await append_ok(client, "shop")
    response = await client.get(
        events_path("shop"), params={"eventName": "OrderPlaced"}, headers={"X-Consumer-ID": "c"}
    )
    await expect(response, 401, "Unauthorized")
