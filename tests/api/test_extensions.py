"""The v1 extensions over real HTTP: long-poll, batch, idempotency, expected sequence, leases,
listings, seek, look-ups, history, retention, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from .conftest import ApiTestServer
from .http_calls import (
    AUTH,
    Client,
    ack,
    append,
    append_ok,
    consume_ok,
    event_body,
    events_path,
    expect,
)

STREAM = "Extension Stream"


async def get(client: Client, path: str, **params: str) -> Any:
    return await expect(await client.get(path, params=params, headers=AUTH), 200)


async def test_long_poll_answers_when_a_matching_event_arrives(client: Client) -> None:
    await append_ok(client, STREAM, event_body("Other"))
    headers = {**AUTH, "X-Consumer-ID": "poller"}
    params = {"eventName": "OrderPlaced", "limit": "10", "wait": "10"}
    waiting = asyncio.create_task(client.get(events_path(STREAM), params=params, headers=headers))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await append_ok(client, STREAM, event_body("Other"))  # another name does not wake it
    await asyncio.sleep(0.05)
    assert not waiting.done()
    event_id = await append_ok(client, STREAM)
    [got] = await expect(await waiting, 200)
    assert got["eventId"] == event_id
    empty = await client.get(
        events_path(STREAM), params={"eventName": "Nothing", "limit": "10", "wait": "0.2"}, headers=headers
    )
    assert await expect(empty, 200) == []
    for bad in ("31", "-1", "soon", "nan"):
        response = await client.get(
            events_path(STREAM), params={"eventName": "X", "limit": "10", "wait": bad}, headers=headers
        )
        assert "wait" in await expect(response, 400)


async def batch(client: Client, events: Any, **headers: str) -> Any:
    all_headers = {**AUTH, "X-Producer-ID": "producer-1", **headers}
    return await client.post(events_path(STREAM) + ":batch", data=orjson.dumps(events), headers=all_headers)


async def test_batch_append_is_all_or_nothing(client: Client) -> None:
    ids = await expect(await batch(client, [event_body(), event_body("B"), event_body()]), 200)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [e["eventId"] for e in await consume_ok(client, STREAM)] == [ids[0], ids[2]]
    bad = [event_body(), {"event": {"name": "", "version": 1}}, event_body()]
    assert "events[1]" in await expect(await batch(client, bad), 400)
    assert await expect(await batch(client, {"not": "a list"}), 400)
    assert await expect(await batch(client, []), 400)
    assert len(await consume_ok(client, STREAM)) == 2  # nothing of the bad batch was stored


async def test_idempotency_key_and_expected_sequence(client: Client) -> None:
    headers = {**AUTH, "X-Producer-ID": "producer-1", "Idempotency-Key": "order-42"}
    first = await expect(
        await client.post(events_path(STREAM), data=orjson.dumps(event_body()), headers=headers), 200
    )
    again = await expect(
        await client.post(events_path(STREAM), data=orjson.dumps(event_body()), headers=headers), 200
    )
    assert first == again and len(await consume_ok(client, STREAM)) == 1

    guarded = {**AUTH, "X-Producer-ID": "p", "X-Expected-Sequence": "0"}
    assert await expect(
        await client.post(events_path("guarded"), data=orjson.dumps(event_body()), headers=guarded), 200
    )
    conflict = await client.post(events_path("guarded"), data=orjson.dumps(event_body()), headers=guarded)
    assert await expect(conflict, 409, "Conflict - expected sequence 0, stream is at 1")
    assert conflict.headers["X-Current-Sequence"] == "1"
    guarded["X-Expected-Sequence"] = "1"
    assert await expect(
        await client.post(events_path("guarded"), data=orjson.dumps(event_body()), headers=guarded), 200
    )
    guarded["X-Expected-Sequence"] = "one"
    bad = await client.post(events_path("guarded"), data=orjson.dumps(event_body()), headers=guarded)
    assert "X-Expected-Sequence" in await expect(bad, 400)


async def test_leases_nack_and_delivery_count(client: Client) -> None:
    ids = [await append_ok(client, STREAM) for _ in range(4)]
    headers = {**AUTH, "X-Consumer-ID": "workers"}
    params = {"eventName": "OrderPlaced", "limit": "2", "ackWait": "30"}
    first, second = await asyncio.gather(
        client.get(events_path(STREAM), params=params, headers=headers),
        client.get(events_path(STREAM), params=params, headers=headers),
    )
    a, b = await expect(first, 200), await expect(second, 200)
    assert sorted(e["eventId"] for e in a + b) == sorted(ids)
    assert all(e["deliveryCount"] == 1 for e in a + b)
    nack = await client.post(events_path(STREAM, a[0]["eventId"]), data=b"action=NACK", headers=headers)
    assert await expect(nack, 200, "OK")
    [redelivered] = await expect(await client.get(events_path(STREAM), params=params, headers=headers), 200)
    assert redelivered["eventId"] == a[0]["eventId"] and redelivered["deliveryCount"] == 2
    assert "ackWait" in await expect(
        await client.get(events_path(STREAM), params={**params, "ackWait": "0"}, headers=headers), 400
    )


async def test_listings_lookup_history_seek_and_retention(client: Client) -> None:
    ids = [await append_ok(client, STREAM, event_body("A" if i % 2 else "B")) for i in range(6)]
    await expect(await ack(client, STREAM, ids[1], consumer="c"), 200)
    [listed] = await get(client, "/api/v1/streams")
    assert listed["name"] == STREAM and listed["eventCount"] == 6 and listed["owner"] == "producer-1"
    one = await get(client, events_path(STREAM).removesuffix("/events"))
    assert one["eventNames"] == {"A": 3, "B": 3}
    [lag] = await get(client, events_path(STREAM).removesuffix("/events") + "/consumers")
    assert lag["consumer"] == "c" and lag["behind"] == 2 and lag["consumedPercentage"] == 33.33

    got = await get(client, events_path(STREAM, ids[2]))
    assert got["eventId"] == ids[2] and got["sequence"] == 3
    await expect(await client.get(events_path(STREAM, ids[2][:-1] + "f"), headers=AUTH), 404)

    history_path = events_path(STREAM).removesuffix("/events") + "/history"
    page = await client.get(history_path, params={"fromSequence": "2", "limit": "3"}, headers=AUTH)
    assert [e["sequence"] for e in await expect(page, 200)] == [2, 3, 4] and page.headers[
        "X-Next-Sequence"
    ] == "5"
    assert [e["sequence"] for e in await get(client, history_path, eventName="A")] == [2, 4, 6]
    assert len(await get(client, history_path, fromTime=got["receivedAt"])) == 4

    seek_path = events_path(STREAM).removesuffix("/events") + "/consumers/c"
    sought = await client.put(seek_path, data=orjson.dumps({"to": "start", "eventName": "A"}), headers=AUTH)
    assert (await expect(sought, 200))["position"] == 0
    assert len(await consume_ok(client, STREAM, "A", consumer="c")) == 3  # replayed
    await expect(await client.put(seek_path, data=b'{"to": "nowhere"}', headers=AUTH), 400)

    retention_path = events_path(STREAM).removesuffix("/events") + "/retention"
    kept = await client.put(retention_path, data=orjson.dumps({"maxBytes": 100_000}), headers=AUTH)
    assert (await expect(kept, 200))["retention"] == {"maxBytes": 100_000}
    await expect(await client.put(retention_path, data=b'{"maxBytes": -1}', headers=AUTH), 400)


async def test_metrics_in_prometheus_text(client: Client) -> None:
    await append_ok(client, STREAM)
    await consume_ok(client, STREAM)
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert (
        'logserver_http_requests_total{route="/api/v1/streams/{stream}/events",method="POST",status="200"} 1'
        in text
    )
    assert 'logserver_stream_last_sequence{stream="Extension Stream"} 1' in text
    assert "logserver_fsyncs_total" in text and "logserver_open_files" in text
    assert (await client.get("/metrics")).status == 401  # secured unless --public-metrics


async def test_openapi_describes_every_route_and_real_responses_match_it(client: Client) -> None:
    import jsonschema

    document = await expect(await client.get("/api/v1/openapi.json"), 200)
    assert document["openapi"].startswith("3.1")
    assert isinstance(client.server, ApiTestServer)
    for route in client.server.api.dispatcher.routes.routes:
        path = route.path
        assert path in document["paths"], path
        assert route.method.lower() in document["paths"][path], f"{route.method} {path}"

    schemas = document["components"]["schemas"]
    resolver_doc = {"components": {"schemas": schemas}}

    def check(value: Any, schema: dict[str, Any]) -> None:
        jsonschema.validate(value, {**schema, **resolver_doc})

    event_id = await append_ok(client, STREAM)
    check(
        event_id,
        document["paths"]["/api/v1/streams/{stream}/events"]["post"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"],
    )
    events = await consume_ok(client, STREAM)
    check(events, {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}})
    check(
        await get(client, "/api/v1/streams"),
        {"type": "array", "items": {"$ref": "#/components/schemas/StreamInfo"}},
    )
    await expect(await ack(client, STREAM, event_id, consumer="c"), 200)
    lag = await get(client, events_path(STREAM).removesuffix("/events") + "/consumers")
    check(lag, {"type": "array", "items": {"$ref": "#/components/schemas/ConsumerLag"}})
    error = await expect(await append(client, STREAM, {"event": {}}), 400)
    check(error, schemas["Error"])


async def test_openapi_names_every_operation_and_its_server(client: Client) -> None:
    document = await expect(await client.get("/api/v1/openapi.json"), 200)
    assert document["servers"] == [{"url": "/", "description": "the server that serves this document"}]
    operations = [
        op for item in document["paths"].values() for key, op in item.items() if key != "parameters"
    ]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids)) == len(operations)
    appends = document["paths"]["/api/v1/streams/{stream}/events"]["post"]["responses"]
    assert {"403", "408", "409", "417", "431", "503"} <= appends.keys()


async def test_whole_numbers_written_with_a_fraction_are_integers(client: Client) -> None:
    """JSON (and JSON Schema) call 2.0 an integer: the server takes it, and stores it as 2."""
    event_id = await append_ok(client, STREAM, event_body(event={"name": "A", "version": 2.0}))
    assert (await get(client, events_path(STREAM, event_id)))["event"]["version"] == 2
    retention_path = events_path(STREAM).removesuffix("/events") + "/retention"
    kept = await client.put(retention_path, data=b'{"maxAgeSeconds": 60.0}', headers=AUTH)
    assert (await expect(kept, 200))["retention"] == {"maxAgeSeconds": 60}
    await expect(await client.put(retention_path, data=b'{"maxAgeSeconds": 60.5}', headers=AUTH), 400)
    huge = event_body(event={"name": "A", "version": 1e300})
    assert "event.version" in await expect(await append(client, STREAM, huge), 400)


async def test_history_checks_heartbeat_when_not_following(client: Client) -> None:
    await append_ok(client, STREAM)
    path = events_path(STREAM).removesuffix("/events") + "/history"
    response = await client.get(path, params={"heartbeat": "61"}, headers=AUTH)
    assert "heartbeat" in await expect(response, 400)
