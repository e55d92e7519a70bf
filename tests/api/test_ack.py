"""POST /api/v1/streams/{stream}/events/{eventID}: SPEC §1.3, individual and idempotent acks."""

from __future__ import annotations

import orjson
import pytest

from .http_calls import AUTH, Client, ack, append_ok, consume_ok, event_body, events_path, expect


async def test_ack_is_ok_and_idempotent(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    await expect(await ack(client, "shop", event_id), 200, "OK")
    await expect(await ack(client, "shop", event_id), 200, "OK")
    assert await consume_ok(client, "shop") == []


async def test_json_ack_body_is_accepted_too(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "consumer-1", "Content-Type": "application/json"}
    response = await client.post(events_path("shop", event_id), data=b'{"action": "ACK"}', headers=headers)
    await expect(response, 200, "OK")
    assert await consume_ok(client, "shop") == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", "=?utf-8?b?YXBwbGljYXRpb24vanNvbg==?="],
    ids=["plain", "cased", "RFC 2047 encoded word"],
)
async def test_a_form_body_declared_json_is_400(client: Client, content_type: str) -> None:
    event_id = await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "consumer-1", "Content-Type": content_type}
    response = await client.post(events_path("shop", event_id), data=b"action=ACK", headers=headers)
    await expect(response, 400, "Bad Request - body is not valid JSON")
    assert len(await consume_ok(client, "shop")) == 1


async def test_form_body_without_content_type_is_accepted(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "consumer-1"}
    response = await client.post(events_path("shop", event_id), data=b"action=ACK", headers=headers)
    await expect(response, 200, "OK")


async def test_out_of_order_acks_never_skip_an_unacknowledged_event(client: Client) -> None:
    first, second, third = [await append_ok(client, "shop", event_body(payload={"n": i})) for i in range(3)]
    await expect(await ack(client, "shop", second), 200, "OK")
    assert [e["eventId"] for e in await consume_ok(client, "shop")] == [first, third]
    await expect(await ack(client, "shop", third), 200, "OK")
    assert [e["eventId"] for e in await consume_ok(client, "shop")] == [first]
    await expect(await ack(client, "shop", first), 200, "OK")
    assert await consume_ok(client, "shop") == []
    fourth = await append_ok(client, "shop")
    assert [e["eventId"] for e in await consume_ok(client, "shop")] == [fourth]


async def test_unknown_stream_is_404(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    await expect(
        await ack(client, "elsewhere", event_id), 404, "Not Found - stream 'elsewhere' does not exist"
    )


@pytest.mark.parametrize(
    "event_id",
    ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "../../etc/passwd", "x" * 300],
)
async def test_unknown_event_is_404(client: Client, event_id: str) -> None:
    await append_ok(client, "shop")
    message = await expect(await ack(client, "shop", event_id), 404)
    assert message.startswith("Not Found - ")


async def test_event_of_another_stream_is_404(client: Client) -> None:
    await append_ok(client, "shop")
    foreign = await append_ok(client, "warehouse")
    message = await expect(await ack(client, "shop", foreign), 404)
    assert message == f"Not Found - event '{foreign}' does not exist in stream 'shop'"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/x-www-form-urlencoded", b"", "Bad Request - action is required (action=ACK)"),
        ("application/x-www-form-urlencoded", b"action=REJECT", "Bad Request - action must be ACK or NACK"),
        ("application/x-www-form-urlencoded", b"other=1", "Bad Request - action is required (action=ACK)"),
        ("application/json", b'{"action": "nope"}', "Bad Request - action must be ACK or NACK"),
        ("application/json", b'{"action": 1}', "Bad Request - action must be ACK or NACK"),
        ("application/json", b"{}", "Bad Request - action is required (action=ACK)"),
        ("application/json", b"{broken", "Bad Request - body is not valid JSON"),
    ],
)
async def test_missing_or_other_action_is_400(
    client: Client, content_type: str, body: bytes, message: str
) -> None:
    event_id = await append_ok(client, "shop")
    headers = {**AUTH, "X-Consumer-ID": "c", "Content-Type": content_type}
    await expect(await client.post(events_path("shop", event_id), data=body, headers=headers), 400, message)


async def test_missing_consumer_id_is_400(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    response = await client.post(events_path("shop", event_id), data=b"action=ACK", headers=AUTH)
    await expect(response, 400, "Bad Request - X-Consumer-ID header is required")


async def test_without_credentials_is_401(client: Client) -> None:
    event_id = await append_ok(client, "shop")
    headers = {"X-Consumer-ID": "c"}
    response = await client.post(
        events_path("shop", event_id), data=orjson.dumps({"action": "ACK"}), headers=headers
    )
    await expect(response, 401, "Unauthorized")
