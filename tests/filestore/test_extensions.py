"""Engine features beyond SPEC v1: batches, expected sequence, long-poll waiters."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from logserver.engine import (
    Bound,
    EngineLimits,
    EventNotFound,
    HistoryQuery,
    SequenceMismatch,
    StorageFull,
    StreamLocked,
    StreamNotFound,
)
from logserver.filestore import FileStore, StorageConfig

from .crash_state import forget_clean_stop

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "batches"


async def test_batch_is_one_write_with_consecutive_sequences_readable_like_singles(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    first = await store.append(STREAM, "p", event("A", i=-1))
    ids = await store.append_batch(STREAM, "p", [event("A" if i % 2 else "B", i=i) for i in range(5)])
    got = await read_events(store, STREAM, "A", "c")
    assert [e["eventId"] for e in got] == [first, ids[1], ids[3]]
    assert [e["sequence"] for e in got] == [1, 3, 5]
    assert all("_more" not in e and "_crc" not in e for e in got)
    await store.ack(STREAM, "c", ids[1])  # batch members are ordinary events afterwards
    assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c")] == [first, ids[3]]


async def test_torn_batch_at_the_tail_is_cut_whole(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    kept = await store.append(STREAM, "p", event(i=0))
    batch = await store.append_batch(STREAM, "p", [event(i=i) for i in range(1, 4)])
    segment = store.stream(STREAM).log.segments[-1]
    await store.close()
    forget_clean_stop(segment.path.parent)  # a crash tore the batch: no clean-stop record
    data = segment.path.read_bytes()
    last_record = data.rindex(b"\n", 0, len(data) - 1) + 1
    segment.path.write_bytes(data[:last_record])  # the batch's last record never reached the disk
    store = await FileStore.open(config)
    try:
        got = [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")]
        assert got == [kept] and not set(batch) & set(got)
        again = await store.append_batch(STREAM, "p", [event(i=9)])
        assert [e["sequence"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == [1, 2]
        assert again[0] not in batch
    finally:
        await store.close()


async def test_batch_that_fails_to_write_leaves_nothing(
    store: FileStore,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import os

    await store.append(STREAM, "p", event(i=0))
    real = os.pwrite

    def full(fd: int, data: Any, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(StorageFull):
        await store.append_batch(STREAM, "p", [event(i=i) for i in range(1, 4)])
    monkeypatch.setattr(os, "pwrite", real)
    assert [e["payload"]["i"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == [0]


async def test_expected_sequence_guards_appends(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    with pytest.raises(SequenceMismatch) as missing:
        await store.append("guarded", "p", event(), expected_last=3)
    assert (missing.value.expected, missing.value.current) == (3, 0)
    with pytest.raises(StreamNotFound):
        store.stream("guarded")  # a failed guard creates nothing
    await store.append("guarded", "p", event(), expected_last=0)
    with pytest.raises(SequenceMismatch) as stale:
        await store.append("guarded", "p", event(), expected_last=0)
    assert stale.value.current == 1
    await store.append_batch("guarded", "p", [event(), event()], expected_last=1)
    await store.append("guarded", "p", event(), expected_last=3)
    assert store.stream("guarded").log.next_sequence == 5
    with pytest.raises(StreamLocked):
        await store.append("guarded", "other", event(), expected_last=4)


async def test_long_poll_wakes_on_a_matching_append_only(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    await store.append(STREAM, "p", event("A"))
    waiting_a = asyncio.create_task(store.wait_for_events(STREAM, "A", 5))
    waiting_b = asyncio.create_task(store.wait_for_events(STREAM, "B", 0.3))
    await asyncio.sleep(0.01)
    assert store.stream(STREAM).log.waiters.count == 2
    await store.append(STREAM, "p", event("A"))  # fsync=always: woken after the record is durable
    assert await waiting_a is True
    assert await waiting_b is False  # timed out: no B was appended
    assert store.stream(STREAM).log.waiters.count == 0


async def test_thousands_of_waiters_are_woken_by_one_append(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    await store.append(STREAM, "p", event("A"))
    waiters = [asyncio.create_task(store.wait_for_events(STREAM, "A", 10)) for _ in range(5000)]
    await asyncio.sleep(0.05)
    await store.append(STREAM, "p", event("A"))
    assert all(await asyncio.gather(*waiters))
    assert store.stream(STREAM).log.waiters.count == 0


async def test_history_pages_without_touching_consumers(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids = [await store.append(STREAM, "p", event("A" if i % 2 else "B", i=i)) for i in range(25)]
    stream = store.stream(STREAM)
    page, next_start = await store.history(STREAM, HistoryQuery(Bound(sequence=1), 10))
    assert [e["eventId"] for e in orjson.loads(page)] == ids[:10] and next_start == 11
    page, next_start = await store.history(STREAM, HistoryQuery(Bound(sequence=11), 10, event_name="A"))
    assert [e["payload"]["i"] for e in orjson.loads(page)] == [11, 13, 15, 17, 19, 21, 23]
    assert next_start is None
    page, _ = await store.history(STREAM, HistoryQuery(Bound(sequence=5), 100, Bound(sequence=7)))
    assert [e["sequence"] for e in orjson.loads(page)] == [5, 6, 7]
    assert len(await read_events(store, STREAM, "A", "c")) == 12  # no consumer moved
    assert stream.sequence_at_time(datetime(2000, 1, 1, tzinfo=UTC)) == 1
    assert stream.sequence_at_time(datetime.now(UTC) + timedelta(days=1)) == 26
    middle = datetime.fromisoformat(stream.received_at(13).replace("Z", "+00:00"))
    assert stream.received_at(stream.sequence_at_time(middle)) == stream.received_at(13)


async def test_describe_and_consumer_lag(store: FileStore, event: Callable[..., dict[str, Any]]) -> None:
    ids = [await store.append(STREAM, "owner", event("A" if i % 4 else "B", i=i)) for i in range(8)]
    await store.ack(STREAM, "c", ids[1])
    await store.ack(STREAM, "c", ids[3])  # out of order: 2 is not acked
    info = await store.describe_stream(STREAM)
    assert info["eventCount"] == 8 and info["firstSequence"] == 1 and info["lastSequence"] == 8
    assert info["owner"] == "owner" and info["eventNames"] == {"A": 6, "B": 2} and info["bytes"] > 0
    [row] = await store.consumer_lag(STREAM)
    assert row == {
        "consumer": "c",
        "eventName": "A",
        "position": 2,
        "acknowledged": 2,
        "acknowledgedOutOfOrder": 1,
        "behind": 4,
        "consumedPercentage": 33.33,
        "inFlight": 0,
    }
    assert [s["name"] for s in await store.list_streams()] == [STREAM]


async def test_seek_replays_and_skips(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(6)]
    for event_id in ids[:4]:
        await store.ack(STREAM, "c", event_id)
    store.stream(STREAM)
    assert await store.seek(STREAM, "c", Bound(sequence=1), None) == 0  # replay from the start
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids
    assert await store.seek(STREAM, "c", Bound(edge="end"), None) == 6  # the end: nothing to deliver
    assert await read_events(store, STREAM, "OrderPlaced", "c") == []
    await store.seek(STREAM, "c", Bound(sequence=5), "OrderPlaced")
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[4:]


async def test_retention_deletes_whole_old_segments_and_moves_consumers(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(60)]
    await store.ack(STREAM, "c", ids[0])
    stream = store.stream(STREAM)
    segments_before = len(stream.log.segments)
    result = await store.set_retention(STREAM, None, 3 * config.segment_bytes)
    assert result.segments_removed > 0 and await store.apply_retention() == 0
    first = stream.log.first_sequence
    assert first > 1 and len(stream.log.segments) < segments_before
    assert sum(s.size for s in stream.log.segments) <= 3 * config.segment_bytes + stream.log.segments[-1].size
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[first - 1 :]
    entry = stream.consumers.checkpoint.get("c", "OrderPlaced")
    assert entry is not None and entry.position == first - 1
    with pytest.raises(EventNotFound):
        await store.ack(STREAM, "c", ids[0])
    assert stream.describe()["firstSequence"] == first and stream.describe()["eventCount"] == 61 - first
    await store.close()
    store = await FileStore.open(config)  # the log starts later after a restart too
    try:
        assert store.stream(STREAM).log.first_sequence == first
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "x")] == ids[
            first - 1 :
        ]
    finally:
        await store.close()


async def test_retention_by_age(tmp_path: Path, event: Callable[..., dict[str, Any]]) -> None:
    # 30 appends take well under 2 s even on a loaded machine: all of them are young at first.
    config = StorageConfig(tmp_path, segment_bytes=2048, retention_max_age_seconds=2.0)
    store = await FileStore.open(config)
    try:
        for i in range(30):
            await store.append(STREAM, "p", event(i=i))
        assert await store.apply_retention() == 0  # all young
        await asyncio.sleep(2.1)
        await store.append(STREAM, "p", event(i=99))
        removed = await store.apply_retention()
        stream = store.stream(STREAM)
        assert removed > 0 and len(stream.log.segments) == 1  # only the active segment is kept
    finally:
        await store.close()


async def test_idempotency_key_returns_the_first_id_and_appends_nothing(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    first = await store.append(STREAM, "p", event(i=0), key="order-42")
    assert await store.append(STREAM, "p", event(i=1), key="order-42") == first
    batch = await store.append_batch(STREAM, "p", [event(i=2), event(i=3)], key="batch-7")
    assert await store.append_batch(STREAM, "p", [event(i=9)], key="batch-7") == batch
    for i in range(40):  # roll segments: the keys must survive in sealed segments' indexes
        await store.append(STREAM, "p", event(i=100 + i))
    got = await read_events(store, STREAM, "OrderPlaced", "c")
    assert [e["eventId"] for e in got[:3]] == [first, *batch] and len(got) == 43
    assert got[0]["idempotencyKey"] == "order-42"
    await store.close()

    store = await FileStore.open(config)  # clean restart: keys from the .idx files
    try:
        assert await store.append(STREAM, "p", event(i=1), key="order-42") == first
        assert await store.append_batch(STREAM, "p", [event(i=9)], key="batch-7") == batch
        assert store.stream(STREAM).log.next_sequence == 44
    finally:
        await store.close()
    for idx in store.stream(STREAM).log.directory.glob("*.idx"):  # crash restart: keys from the scan
        idx.unlink()
    store = await FileStore.open(config)
    try:
        assert await store.append(STREAM, "p", event(i=1), key="order-42") == first
        assert store.stream(STREAM).log.next_sequence == 44
    finally:
        await store.close()


async def test_idempotency_keys_expire_after_the_window(
    tmp_path: Path, event: Callable[..., dict[str, Any]]
) -> None:
    store = await FileStore.open(StorageConfig(tmp_path, limits=EngineLimits(idempotency_window_seconds=0.1)))
    try:
        first = await store.append(STREAM, "p", event(), key="k")
        await asyncio.sleep(0.15)
        assert await store.append(STREAM, "p", event(), key="k") != first
    finally:
        await store.close()


async def test_leases_give_concurrent_readers_disjoint_events_and_redeliver_after_expiry(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(6)]

    async def leased(limit: int, ack_wait: float = 0.2) -> list[dict[str, Any]]:
        body = await store.consume_leased(STREAM, "OrderPlaced", "workers", limit, ack_wait)
        got: list[dict[str, Any]] = orjson.loads(body)
        return got

    first, second = await asyncio.gather(leased(3), leased(3))
    assert {e["eventId"] for e in first}.isdisjoint(e["eventId"] for e in second)
    assert sorted(e["eventId"] for e in first + second) == sorted(ids)
    assert all(e["deliveryCount"] == 1 for e in first + second)
    assert await leased(10) == []  # everything is leased out
    await store.ack(STREAM, "workers", first[0]["eventId"])
    await store.nack(STREAM, "workers", first[1]["eventId"])  # released at once
    [again] = await leased(10)
    assert again["eventId"] == first[1]["eventId"] and again["deliveryCount"] == 2
    await asyncio.sleep(0.25)  # the other leases end: redelivered, counted
    redelivered = await leased(10)
    assert {e["eventId"] for e in redelivered} == set(ids) - {first[0]["eventId"]}
    # a plain SPEC read still sees every unacked event and no deliveryCount
    plain = orjson.loads(await store.consume(STREAM, "OrderPlaced", "workers", 10))
    assert len(plain) == 5 and "deliveryCount" not in plain[0]


async def test_events_over_max_deliveries_go_to_the_dead_letter_stream(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    limits = dataclasses.replace(config.limits, max_deliveries=2)
    store = await FileStore.open(dataclasses.replace(config, limits=limits))
    try:
        await dead_letter_after_two_deliveries(store, event, read_events)
    finally:
        await store.close()


async def dead_letter_after_two_deliveries(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    poison = await store.append(STREAM, "p", event(i=666))
    for _ in range(2):
        [got] = orjson.loads(await store.consume_leased(STREAM, "OrderPlaced", "w", 5, 0.0))
        assert got["eventId"] == poison
    assert orjson.loads(await store.consume_leased(STREAM, "OrderPlaced", "w", 5, 0.0)) == []
    [dead] = await read_events(store, f"{STREAM}.dlq", "OrderPlaced", "ops")
    assert dead["payload"] == {"i": 666} and dead["producerId"] == "logserver-dead-letter"
    assert dead["deadLetter"]["eventId"] == poison and dead["deadLetter"]["deliveries"] == 2
    assert await read_events(store, STREAM, "OrderPlaced", "w") == []  # acked for that consumer only
    assert len(await read_events(store, STREAM, "OrderPlaced", "someone else")) == 1


async def test_concurrent_retries_with_one_key_append_once(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids = await asyncio.gather(*(store.append(STREAM, "p", event(i=i), key="same") for i in range(20)))
    assert len(set(ids)) == 1
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == [ids[0]]


async def test_a_consumer_that_only_took_leases_is_listed_with_its_lag(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    for i in range(4):
        await store.append(STREAM, "p", event(i=i))
    leased = orjson.loads(await store.consume_leased(STREAM, "OrderPlaced", "workers", 3, 30.0))
    assert len(leased) == 3
    [row] = await store.consumer_lag(STREAM)
    assert row["consumer"] == "workers" and row["position"] == 0
    assert row["behind"] == 4 and row["inFlight"] == 3  # nothing acknowledged yet, three leased
