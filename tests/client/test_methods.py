"""Every method of the blocking client against a real server: what it sends, what it returns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from logserver.client import AckResult, Client, Event, NotFound

from .conftest import PASSWORD, USER, ServerProcess, event


def test_health_needs_no_credentials(server: ServerProcess) -> None:
    with Client(server.url) as anonymous:
        health = anonymous.health()
    assert health["status"] == "ok"
    assert isinstance(health["streams"], int)


def test_connection_comes_from_the_environment(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGSERVER_URL", server.url)
    monkeypatch.setenv("LOGSERVER_USER", USER)
    monkeypatch.setenv("LOGSERVER_PASSWORD", PASSWORD)
    with Client() as from_env:
        assert from_env.connection.url == server.url
        from_env.streams()  # authenticated: a wrong or missing credential would raise Unauthorized


def test_append_returns_the_stored_events_id(client: Client, stream: str) -> None:
    event_id = client.append(stream, event(orderId=42), producer="shop")
    assert str(uuid.UUID(event_id)) == event_id
    stored = client.get_event(stream, event_id)
    assert isinstance(stored, Event)
    assert (stored.id, stored.sequence, stored.stream, stored.name) == (event_id, 1, stream, "OrderPlaced")
    assert stored.payload == {"orderId": 42}
    assert stored["producerId"] == "shop"
    assert stored["idempotencyKey"]  # the client sent one of its own


def test_each_append_gets_its_own_idempotency_key(client: Client, stream: str) -> None:
    first = client.append(stream, event(n=1), producer="shop")
    second = client.append(stream, event(n=1), producer="shop")
    assert first != second
    keys = {client.get_event(stream, event_id)["idempotencyKey"] for event_id in (first, second)}
    assert len(keys) == 2


def test_a_given_idempotency_key_appends_once(client: Client, stream: str) -> None:
    first = client.append(stream, event(), producer="shop", idempotency_key="order-43")
    again = client.append(stream, event(), producer="shop", idempotency_key="order-43")
    assert first == again
    assert client.stream(stream)["eventCount"] == 1


def test_append_batch_and_expected_sequence(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(3)], producer="shop", expected_sequence=0)
    assert [client.get_event(stream, event_id).sequence for event_id in ids] == [1, 2, 3]
    more = client.append(stream, event(n=3), producer="shop", expected_sequence=3)
    assert client.get_event(stream, more).sequence == 4


def test_consume_ack_and_nothing_left(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(3)] + [event("Other")], producer="shop")
    events = client.consume(stream, "OrderPlaced", "mailer", limit=2)
    assert [e.id for e in events] == ids[:2]
    client.ack(stream, "mailer", ids[0])
    client.ack(stream, "mailer", ids[0])  # idempotent
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer", limit=10)] == ids[1:3]


def test_consume_long_polls_until_an_append(client: Client, stream: str, server: ServerProcess) -> None:
    client.append(stream, event("Other"), producer="shop")
    started = datetime.now(UTC)
    assert client.consume(stream, "OrderPlaced", "mailer", wait=1) == []
    assert (datetime.now(UTC) - started).total_seconds() >= 0.9


def test_leased_consume_and_nack(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(2)], producer="shop")
    first = client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=1)
    second = client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=1)
    assert [first[0].id, second[0].id] == ids  # disjoint leases
    assert first[0].delivery_count == 1
    client.nack(stream, "workers", ids[0])
    again = client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=5)
    assert [e.id for e in again] == [ids[0]]
    assert again[0].delivery_count == 2


def test_ack_many_answers_per_id_in_order(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(3)], producer="shop")
    missing = ids[0][:-12] + "0000000fffff"  # this stream's id form, a sequence it never had
    results = client.ack_many(stream, "mailer", [ids[2], missing, ids[0]])
    assert results == [AckResult(ids[2], True), AckResult(missing, False), AckResult(ids[0], True)]
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer")] == [ids[1]]
    assert client.ack_many(stream, "mailer", []) == []


def test_ack_many_of_a_missing_stream_is_not_found(client: Client, stream: str) -> None:
    other = client.append(stream, event(), producer="shop")
    with pytest.raises(NotFound, match="does not exist"):
        client.ack_many(stream + " missing", "mailer", [other])


def test_history_pages_and_the_iterator_over_them(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(5)] + [event("Other")], producer="shop")
    page = client.history(stream, from_sequence=2, limit=2)
    assert [e.id for e in page.events] == ids[1:3]
    assert page.next_sequence == 4
    last = client.history(stream, from_sequence=5, limit=10)
    assert [e.id for e in last.events] == ids[4:]
    assert last.next_sequence is None
    assert [e.id for e in client.iter_history(stream, limit=2)] == ids
    named = client.iter_history(stream, event_name="OrderPlaced", to_sequence=4, limit=1)
    assert [e.id for e in named] == ids[:4]
    assert [e.id for e in client.iter_history(stream, from_time=datetime(2000, 1, 1, tzinfo=UTC))] == ids
    with pytest.raises(ValueError, match="timezone"):
        client.history(stream, from_time=datetime(2000, 1, 1))


def test_streams_stream_and_consumers(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(3)], producer="shop")
    client.ack(stream, "mailer", ids[0])
    listed = {s["name"]: s for s in client.streams()}
    assert listed[stream]["owner"] == "shop"
    assert listed[stream]["eventCount"] == 3
    described = client.stream(stream)
    assert described["eventNames"] == {"OrderPlaced": 3}
    [lag] = client.consumers(stream)
    assert (lag["consumer"], lag["eventName"], lag["acknowledged"], lag["behind"]) == (
        "mailer",
        "OrderPlaced",
        1,
        2,
    )


def test_seek_to_start_end_sequence_and_time(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=i) for i in range(4)], producer="shop")
    client.ack_many(stream, "mailer", ids)
    assert client.consume(stream, "OrderPlaced", "mailer") == []
    client.seek(stream, "mailer", to="start")
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer")] == ids
    client.seek(stream, "mailer", to="end")
    assert client.consume(stream, "OrderPlaced", "mailer") == []
    answer = client.seek(stream, "mailer", sequence=3, event_name="OrderPlaced")
    assert answer["eventName"] == "OrderPlaced"
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer")] == ids[2:]
    client.seek(stream, "mailer", time=datetime(2000, 1, 1, tzinfo=UTC))
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer")] == ids
    with pytest.raises(ValueError, match="exactly one"):
        client.seek(stream, "mailer", to="start", sequence=2)


def test_set_retention_and_back_to_the_servers(client: Client, stream: str) -> None:
    client.append(stream, event(), producer="shop")
    described = client.set_retention(stream, max_bytes=1 << 30, max_age_seconds=86400)
    assert described["retention"] == {"maxAgeSeconds": 86400, "maxBytes": 1 << 30}
    assert described["segmentsRemoved"] == 0
    assert "retention" not in client.set_retention(stream)


def test_get_event_of_another_stream_is_not_found(client: Client, stream: str) -> None:
    event_id = client.append(stream, event(), producer="shop")
    with pytest.raises(NotFound):
        client.get_event(stream + " other", event_id)
