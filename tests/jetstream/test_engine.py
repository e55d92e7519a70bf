"""The JetStream engine on its own, against the real 3-node cluster: every Engine operation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import orjson
import pytest
from nats.js.api import StreamConfig

from logserver.engine import (
    DEAD_LETTER_PRODUCER,
    Bound,
    EngineUnavailable,
    EventNotFound,
    HistoryQuery,
    InvalidRequest,
    ReservedStream,
    SequenceMismatch,
    StreamLimitReached,
    StreamLocked,
    StreamNotFound,
    dead_letter_stream,
)
from logserver.jetstream import JetStreamEngine
from logserver.jetstream.names import format_event_id, name_from_token, name_token, parse_event_id
from logserver.jetstream.retry import through_elections

from .cluster import NatsCluster
from .conftest import OpenEngine

pytestmark = pytest.mark.jetstream


def event(name: str = "OrderPlaced", **payload: Any) -> dict[str, Any]:
    return {"event": {"name": name, "version": 1}, "payload": payload}


def sequences(body: bytes) -> list[int]:
    return [e["sequence"] for e in orjson.loads(body)]


async def test_append_then_consume_returns_the_stored_event_with_server_fields(
    engine: JetStreamEngine, stream: str
) -> None:
    body = event(n=1)
    body["eventId"] = "forged"  # server fields win over the body's
    event_id = await engine.append(stream, "producer", body, None, None)
    [stored] = orjson.loads(await engine.consume(stream, "OrderPlaced", "c", 10))
    assert stored["eventId"] == event_id
    assert stored["stream"] == stream
    assert stored["sequence"] == 1
    assert stored["producerId"] == "producer"
    assert stored["payload"] == {"n": 1}
    assert datetime.fromisoformat(stored["receivedAt"].replace("Z", "+00:00")).tzinfo is not None
    assert len(stored["receivedAt"]) == len("2026-01-01T00:00:00.000000Z")
    assert parse_event_id(event_id) is not None and parse_event_id(event_id)[1] == 1  # type: ignore[index]
    assert orjson.loads(await engine.get_event(stream, event_id)) == stored


async def test_consume_filters_by_name_and_skips_acknowledged_events(
    engine: JetStreamEngine, stream: str
) -> None:
    ids = [
        await engine.append(stream, "p", event("A" if k % 2 else "Ä b.c*>", k=k), None, None)
        for k in range(6)
    ]
    assert sequences(await engine.consume(stream, "Ä b.c*>", "c", 10)) == [1, 3, 5]
    assert sequences(await engine.consume(stream, "A", "c", 2)) == [2, 4]
    await engine.ack(stream, "c", ids[2])  # out of order: 1 stays, position does not move
    assert sequences(await engine.consume(stream, "Ä b.c*>", "c", 10)) == [1, 5]
    await engine.ack(stream, "c", ids[2])  # idempotent
    await engine.ack(stream, "c", ids[0])
    assert sequences(await engine.consume(stream, "Ä b.c*>", "c", 10)) == [5]
    [lag] = [row for row in await engine.consumer_lag(stream) if row["eventName"] == "Ä b.c*>"]
    assert (lag["position"], lag["acknowledged"], lag["behind"]) == (3, 2, 1)
    assert sequences(await engine.consume(stream, "Ä b.c*>", "other", 10)) == [1, 3, 5]
    assert await engine.consume(stream, "never appended", "c", 10) == b"[]"


async def test_ack_many_reports_unknown_ids_and_records_the_rest(
    engine: JetStreamEngine, stream: str
) -> None:
    ids = [await engine.append(stream, "p", event(k=k), None, None) for k in range(3)]
    unknown = str(uuid.uuid4())
    assert await engine.ack_many(stream, "c", [ids[0], unknown, ids[2]]) == [True, False, True]
    assert sequences(await engine.consume(stream, "OrderPlaced", "c", 10)) == [2]
    with pytest.raises(EventNotFound):
        await engine.ack(stream, "c", unknown)
    with pytest.raises(EventNotFound):  # an id of this stream's form, past its end
        prefix = parse_event_id(ids[0])[0]  # type: ignore[index]
        await engine.ack(stream, "c", format_event_id(prefix, 99))
    with pytest.raises(StreamNotFound):
        await engine.ack(f"{stream} missing", "c", ids[0])


async def test_leases_hide_events_from_other_reads_until_nack_or_expiry(
    engine: JetStreamEngine, stream: str
) -> None:
    ids = [await engine.append(stream, "p", event(k=k), None, None) for k in range(3)]
    first = orjson.loads(await engine.consume_leased(stream, "OrderPlaced", "shared", 2, 30.0))
    assert [(e["sequence"], e["deliveryCount"]) for e in first] == [(1, 1), (2, 1)]
    second = orjson.loads(await engine.consume_leased(stream, "OrderPlaced", "shared", 2, 30.0))
    assert [e["sequence"] for e in second] == [3]
    assert [row["inFlight"] for row in await engine.consumer_lag(stream)] == [3]
    await engine.nack(stream, "shared", ids[1])
    again = orjson.loads(await engine.consume_leased(stream, "OrderPlaced", "shared", 5, 0.2))
    assert [(e["sequence"], e["deliveryCount"]) for e in again] == [(2, 2)]
    await asyncio.sleep(0.3)  # the 0.2 s lease ends
    assert sequences(await engine.consume_leased(stream, "OrderPlaced", "shared", 5, 30.0)) == [2]
    await engine.ack(stream, "shared", ids[0])
    assert [row["acknowledged"] for row in await engine.consumer_lag(stream)] == [1]


async def test_events_delivered_too_often_move_to_the_dead_letter_stream(
    open_engine: OpenEngine, stream: str
) -> None:
    engine = await open_engine(max_deliveries=2)
    event_id = await engine.append(stream, "p", event(k=1), None, None)
    for _ in range(2):
        assert sequences(await engine.consume_leased(stream, "OrderPlaced", "c", 1, 0.05)) == [1]
        await asyncio.sleep(0.1)
    assert await engine.consume_leased(stream, "OrderPlaced", "c", 1, 0.05) == b"[]"
    [dead] = orjson.loads(await engine.consume(dead_letter_stream(stream), "OrderPlaced", "ops", 10))
    assert dead["producerId"] == DEAD_LETTER_PRODUCER
    assert dead["deadLetter"]["eventId"] == event_id
    assert dead["deadLetter"]["deliveries"] == 2
    assert await engine.consume(stream, "OrderPlaced", "c", 10) == b"[]"  # acknowledged for c
    for producer in ("p", DEAD_LETTER_PRODUCER):  # dead-letter streams are the server's alone
        with pytest.raises(ReservedStream):
            await engine.append(dead_letter_stream(f"{stream} other"), producer, event(), None, None)
        with pytest.raises(ReservedStream):
            await engine.append(dead_letter_stream(stream), producer, event(), None, None)


async def test_idempotency_key_stores_once_and_answers_the_first_id(
    engine: JetStreamEngine, stream: str
) -> None:
    first = await engine.append(stream, "p", event(k=1), None, "key-1")
    again = await engine.append(stream, "p", event(k=2), None, "key-1")
    assert again == first
    assert sequences(await engine.consume(stream, "OrderPlaced", "c", 10)) == [1]
    batch = await engine.append_batch(stream, "p", [event(k=3), event(k=4)], None, "key-2")
    assert await engine.append_batch(stream, "p", [event(k=3), event(k=4)], None, "key-2") == batch
    assert sequences(await engine.consume(stream, "OrderPlaced", "c", 10)) == [1, 2, 3]


async def test_expected_sequence_guards_appends_and_names_the_current_one(
    engine: JetStreamEngine, stream: str
) -> None:
    with pytest.raises(SequenceMismatch):  # a stream that does not exist is at 0
        await engine.append(stream, "p", event(), 3, None)
    await engine.append(stream, "p", event(), 0, None)
    await engine.append(stream, "p", event(), 1, None)
    with pytest.raises(SequenceMismatch) as refused:
        await engine.append(stream, "p", event(), 1, None)
    assert (refused.value.expected, refused.value.current) == (1, 2)
    with pytest.raises(SequenceMismatch) as refused_batch:
        await engine.append_batch(stream, "p", [event(), event()], 5, None)
    assert refused_batch.value.current == 2
    assert len(await engine.append_batch(stream, "p", [event(), event()], 2, None)) == 2


async def test_a_batch_is_stored_whole_or_not_at_all(engine: JetStreamEngine, stream: str) -> None:
    await engine.append(stream, "p", event(k=0), None, None)
    ids = await engine.append_batch(
        stream, "p", [event("A", k=1), event("B", k=2), event("A", k=3)], None, None
    )
    assert [parse_event_id(i)[1] for i in ids] == [2, 3, 4]  # type: ignore[index]
    with pytest.raises(SequenceMismatch):  # refused at commit: none of it is stored
        await engine.append_batch(stream, "p", [event("A", k=5), event("B", k=6)], 1, None)
    too_big = [event("A", k=k) for k in range(1001)]
    with pytest.raises(InvalidRequest):
        await engine.append_batch(stream, "p", too_big, None, None)
    page = await engine.history(stream, HistoryQuery(start=Bound(sequence=1), limit=100))
    assert [e["payload"]["k"] for e in orjson.loads(page.body)] == [0, 1, 2, 3]
    described = await engine.describe_stream(stream)
    assert described["eventNames"] == {"OrderPlaced": 1, "A": 2, "B": 1}
    assert described["lastSequence"] == 4


async def test_history_pages_by_sequence_name_and_time(engine: JetStreamEngine, stream: str) -> None:
    for k in range(5):
        await engine.append(stream, "p", event("A" if k < 3 else "B", k=k), None, None)
    middle = datetime.now(UTC)
    for k in range(5, 7):
        await engine.append(stream, "p", event("A", k=k), None, None)
    page = await engine.history(stream, HistoryQuery(start=Bound(sequence=2), limit=2))
    assert (sequences(page.body), page.next_sequence) == ([2, 3], 4)
    named = await engine.history(stream, HistoryQuery(start=Bound(edge="start"), limit=10, event_name="A"))
    assert (sequences(named.body), named.next_sequence) == ([1, 2, 3, 6, 7], None)
    since = await engine.history(stream, HistoryQuery(start=Bound(time=middle), limit=10))
    assert sequences(since.body) == [6, 7]
    until = await engine.history(
        stream, HistoryQuery(start=Bound(sequence=1), limit=10, stop=Bound(time=middle))
    )
    assert sequences(until.body) == [1, 2, 3, 4, 5]
    bounded = await engine.history(
        stream, HistoryQuery(start=Bound(sequence=3), limit=10, stop=Bound(sequence=4))
    )
    assert sequences(bounded.body) == [3, 4]
    assert (await engine.history(stream, HistoryQuery(start=Bound(edge="end"), limit=10))).body == b"[]"


async def test_seek_replays_or_skips(engine: JetStreamEngine, stream: str) -> None:
    ids = [await engine.append(stream, "p", event("A" if k % 2 else "B", k=k), None, None) for k in range(4)]
    await engine.ack_many(stream, "c", ids)
    assert await engine.consume(stream, "A", "c", 10) == b"[]"
    assert await engine.seek(stream, "c", Bound(edge="start"), None) == 0
    assert sequences(await engine.consume(stream, "A", "c", 10)) == [2, 4]
    assert sequences(await engine.consume(stream, "B", "c", 10)) == [1, 3]
    assert await engine.seek(stream, "c", Bound(sequence=4), "A") == 3
    assert sequences(await engine.consume(stream, "A", "c", 10)) == [4]
    assert sequences(await engine.consume(stream, "B", "c", 10)) == [1, 3]
    assert await engine.seek(stream, "c", Bound(edge="end"), None) == 4
    assert await engine.consume(stream, "B", "c", 10) == b"[]"


async def test_seek_to_a_time_replays_from_there_or_goes_to_the_end(
    engine: JetStreamEngine, stream: str
) -> None:
    ids = [await engine.append(stream, "p", event("A", k=k), None, None) for k in range(2)]
    middle = datetime.now(UTC)
    ids.append(await engine.append(stream, "p", event("A", k=2), None, None))
    await engine.ack_many(stream, "c", ids)
    assert await engine.seek(stream, "c", Bound(time=middle), "A") == 2
    assert sequences(await engine.consume(stream, "A", "c", 10)) == [3]
    # nothing at or after that time (asked of a replica, then of the leader): the end
    assert await engine.seek(stream, "c", Bound(time=middle + timedelta(hours=1)), "A") == 3
    assert await engine.consume(stream, "A", "c", 10) == b"[]"
    await engine.append(stream, "p", event("A", k=3), None, None)
    assert sequences(await engine.consume(stream, "A", "c", 10)) == [4]


async def test_retention_by_bytes_drops_the_oldest_events(engine: JetStreamEngine, stream: str) -> None:
    for k in range(20):
        await engine.append(stream, "p", event(k=k, pad="x" * 200), None, None)
    result = await engine.set_retention(stream, None, 2000)
    assert result.stream["retention"] == {"maxBytes": 2000}
    described = await engine.describe_stream(stream)
    assert described["bytes"] <= 2000
    assert described["firstSequence"] > 1
    assert described["lastSequence"] == 20
    remaining = sequences(await engine.consume(stream, "OrderPlaced", "c", 100))
    assert remaining == list(range(described["firstSequence"], 21))
    await engine.set_retention(stream, None, None)
    assert "retention" not in await engine.describe_stream(stream)


async def test_retention_by_age(engine: JetStreamEngine, stream: str) -> None:
    await engine.append(stream, "p", event(k=1), None, None)
    await engine.set_retention(stream, 1, None)
    await asyncio.sleep(2.5)  # JetStream expires messages itself
    await engine.append(stream, "p", event(k=2), None, None)
    assert sequences(await engine.consume(stream, "OrderPlaced", "c", 10)) == [2]


async def test_two_gateways_racing_to_create_a_stream_have_one_owner(
    open_engine: OpenEngine, stream: str
) -> None:
    gateways = [await open_engine() for _ in range(2)]
    results = await asyncio.gather(
        *(g.append(stream, f"producer-{k}", event(k=k), None, None) for k in range(2) for g in gateways),
        return_exceptions=True,
    )
    stored = [r for r in results if isinstance(r, str)]
    locked = [r for r in results if isinstance(r, StreamLocked)]
    assert len(stored) == 2 and len(locked) == 2, results
    owner = (await gateways[1].describe_stream(stream))["owner"]
    assert all(
        e["producerId"] == owner
        for e in orjson.loads(await gateways[0].consume(stream, "OrderPlaced", "c", 9))
    )


async def test_acks_from_two_gateways_on_one_consumer_are_all_kept(
    open_engine: OpenEngine, stream: str
) -> None:
    gateways = [await open_engine() for _ in range(2)]
    ids = await gateways[0].append_batch(stream, "p", [event(k=k) for k in range(40)], None, None)
    # Interleaved: each gateway acks every other event, all at once, so the CAS writes collide.
    await asyncio.gather(*(gateways[k % 2].ack(stream, "c", event_id) for k, event_id in enumerate(ids)))
    assert await gateways[1].consume(stream, "OrderPlaced", "c", 100) == b"[]"
    [lag] = await gateways[0].consumer_lag(stream)
    assert (lag["position"], lag["acknowledged"], lag["acknowledgedOutOfOrder"]) == (40, 40, 0)


async def test_leases_from_two_gateways_never_hand_out_one_event_twice(
    open_engine: OpenEngine, stream: str
) -> None:
    gateways = [await open_engine() for _ in range(2)]
    await gateways[0].append_batch(stream, "p", [event(k=k) for k in range(30)], None, None)
    reads = await asyncio.gather(
        *(gateways[k % 2].consume_leased(stream, "OrderPlaced", "workers", 3, 60.0) for k in range(10))
    )
    delivered = [s for body in reads for s in sequences(body)]
    assert sorted(delivered) == list(range(1, 31))


async def test_long_poll_wakes_on_an_append_through_another_gateway(
    open_engine: OpenEngine, stream: str
) -> None:
    reader, writer = await open_engine(), await open_engine()
    await writer.append(stream, "p", event("Other"), None, None)
    assert await reader.wait_for_events(stream, "OrderPlaced", 0.2) is False
    waiting = asyncio.create_task(reader.wait_for_events(stream, "OrderPlaced", 10.0))
    await asyncio.sleep(0.2)
    await writer.append(stream, "p", event("Other"), None, None)
    await asyncio.sleep(0.2)
    assert not waiting.done()  # another name does not wake it
    await writer.append(stream, "p", event(), None, None)
    assert await asyncio.wait_for(waiting, 5.0) is True
    assert sequences(await reader.consume(stream, "OrderPlaced", "c", 10)) == [3]
    with pytest.raises(StreamNotFound):
        await reader.wait_for_events(f"{stream} missing", None, 0.1)


async def test_long_poll_sees_an_append_between_the_read_and_the_wait(
    open_engine: OpenEngine, stream: str
) -> None:
    reader, writer = await open_engine(), await open_engine()
    await writer.append(stream, "p", event("Other"), None, None)
    assert await reader.consume(stream, "OrderPlaced", "c", 10) == b"[]"
    await writer.append(stream, "p", event(), None, None)  # before the wait subscribes
    started = asyncio.get_running_loop().time()
    assert await reader.wait_for_events(stream, "OrderPlaced", 10.0) is True
    assert asyncio.get_running_loop().time() - started < 5.0
    assert sequences(await reader.consume(stream, "OrderPlaced", "c", 10)) == [2]
    assert await reader.wait_for_events(stream, "OrderPlaced", 0.3) is False  # read already: no wake-up


async def test_the_stream_limit_refuses_new_streams(open_engine: OpenEngine, stream: str) -> None:
    existing = (await (await open_engine()).health()).streams
    engine = await open_engine(max_streams=existing + 1)
    await engine.append(stream, "p", event(), None, None)
    with pytest.raises(StreamLimitReached):
        await engine.append(f"{stream} second", "p", event(), None, None)
    await engine.append(stream, "p", event(), None, None)  # existing streams still take appends


async def test_a_placement_refusal_is_asked_again_then_unavailable_naming_why(
    nats_cluster: NatsCluster, stream: str
) -> None:
    """JetStream answers a replicated stream's creation with error 10005, "no suitable peers for
    placement", while a cluster is still forming: creation asks again until its deadline, then is
    unavailable with JetStream's own reason (not a bare `BadRequestError()`). A real 10005 on
    cue: five replicas asked of three nodes."""
    connection = await nats.connect(servers=nats_cluster.urls)
    try:
        js = connection.jetstream(timeout=5)
        config = StreamConfig(name=f"unplaceable-{uuid.uuid4().hex[:8]}", subjects=[], num_replicas=5)
        started = asyncio.get_running_loop().time()
        why = r"no suitable peers for placement \(JetStream error 10005\)"
        with pytest.raises(EngineUnavailable, match=why):
            await through_elections(lambda: js.add_stream(config), 1.0, "creating a stream")
        assert asyncio.get_running_loop().time() - started >= 1.0
    finally:
        await connection.close()


async def test_listing_and_figures_show_the_stream(engine: JetStreamEngine, stream: str) -> None:
    event_id = await engine.append(stream, "p", event(), None, None)
    await engine.ack(stream, "c", event_id)
    [listed] = [s for s in await engine.list_streams() if s["name"] == stream]
    assert (listed["owner"], listed["eventCount"], listed["consumers"]) == ("p", 1, 1)
    [figures] = [f for f in await engine.figures() if f.name == stream]
    assert (figures.last_sequence, figures.events, len(figures.consumers)) == (1, 1, 1)
    assert (await engine.health()).streams >= 1
    with pytest.raises(StreamNotFound):
        await engine.describe_stream(f"{stream} missing")


def test_event_name_tokens_round_trip_any_text() -> None:
    for name in ("OrderPlaced", "Webshop order was placed", "a.b*c>d", "Ünïcödé ✓", "x" * 255):
        token = name_token(name)
        assert all(c.isalnum() or c in "-_" for c in token)
        assert name_from_token(token) == name


async def test_hundreds_of_concurrent_acks_in_one_gateway_are_all_kept(
    engine: JetStreamEngine, stream: str
) -> None:
    ids = await engine.append_batch(stream, "p", [event(k=k) for k in range(300)], None, None)
    await asyncio.gather(*(engine.ack(stream, "c", event_id) for event_id in reversed(ids)))
    assert await engine.consume(stream, "OrderPlaced", "c", 1000) == b"[]"
    [lag] = await engine.consumer_lag(stream)
    assert (lag["position"], lag["acknowledgedOutOfOrder"]) == (300, 0)


async def test_an_ack_after_another_gateway_rewound_the_consumer_is_recorded(
    open_engine: OpenEngine, stream: str
) -> None:
    acker, rewinder = await open_engine(), await open_engine()
    ids = [await acker.append(stream, "p", event(k=k), None, None) for k in range(2)]
    await acker.ack(stream, "c", ids[0])
    await rewinder.seek(stream, "c", Bound(edge="start"), None)
    await acker.ack(stream, "c", ids[0])  # its own last copy of the state says "acked already"
    assert sequences(await rewinder.consume(stream, "OrderPlaced", "c", 10)) == [2]
