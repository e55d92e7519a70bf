"""Engine features beyond SPEC v1: batches, expected sequence, long-poll waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from logserver.storage import EventStore, StorageConfig
from logserver.storage.errors import SequenceMismatch, StorageFull, StreamLocked, StreamNotFound

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "batches"


async def test_batch_is_one_write_with_consecutive_sequences_readable_like_singles(
    store: EventStore, event: Callable[..., dict[str, Any]], read_events: Reader
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
    store = await EventStore.open(config)
    kept = await store.append(STREAM, "p", event(i=0))
    batch = await store.append_batch(STREAM, "p", [event(i=i) for i in range(1, 4)])
    segment = store.stream(STREAM).segments[-1]
    await store.close()
    (segment.path.with_suffix(".idx")).unlink()
    data = segment.path.read_bytes()
    last_record = data.rindex(b"\n", 0, len(data) - 1) + 1
    segment.path.write_bytes(data[:last_record])  # the batch's last record never reached the disk
    store = await EventStore.open(config)
    try:
        got = [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")]
        assert got == [kept] and not set(batch) & set(got)
        again = await store.append_batch(STREAM, "p", [event(i=9)])
        assert [e["sequence"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == [1, 2]
        assert again[0] not in batch
    finally:
        await store.close()


async def test_batch_that_fails_to_write_leaves_nothing(
    store: EventStore,
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
    store: EventStore, event: Callable[..., dict[str, Any]]
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
    assert store.stream("guarded").next_sequence == 5
    with pytest.raises(StreamLocked):
        await store.append("guarded", "other", event(), expected_last=4)


async def test_long_poll_wakes_on_a_matching_append_only(
    store: EventStore, event: Callable[..., dict[str, Any]]
) -> None:
    await store.append(STREAM, "p", event("A"))
    waiting_a = asyncio.create_task(store.wait_for_events(STREAM, "A", 5))
    waiting_b = asyncio.create_task(store.wait_for_events(STREAM, "B", 0.3))
    await asyncio.sleep(0.01)
    assert store.stream(STREAM).waiting_readers == 2
    await store.append(STREAM, "p", event("A"))  # fsync=always: woken after the record is durable
    assert await waiting_a is True
    assert await waiting_b is False  # timed out: no B was appended
    assert store.stream(STREAM).waiting_readers == 0


async def test_thousands_of_waiters_are_woken_by_one_append(
    store: EventStore, event: Callable[..., dict[str, Any]]
) -> None:
    await store.append(STREAM, "p", event("A"))
    waiters = [asyncio.create_task(store.wait_for_events(STREAM, "A", 10)) for _ in range(5000)]
    await asyncio.sleep(0.05)
    await store.append(STREAM, "p", event("A"))
    assert all(await asyncio.gather(*waiters))
    assert store.stream(STREAM).waiting_readers == 0
