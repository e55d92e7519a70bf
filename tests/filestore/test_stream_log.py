"""Appends, reads, acks and reopening through FileStore, on real files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from logserver.engine import EventNotFound, StreamLocked, StreamNotFound
from logserver.filestore import FileStore, FsyncPolicy, StorageConfig
from logserver.filestore.name_index import NAME_SEARCH_LIMIT
from logserver.filestore.record import event_json
from logserver.filestore.segment import Segment

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "Codello Newsletter Subscriptions"


async def test_append_returns_ids_and_read_returns_bodies_with_server_fields(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    body = event("Webshop order was placed", order=7) | {"extra": [1, 2], "sequence": "client's"}
    event_id = await store.append(STREAM, "producer-1", body)
    [got] = await read_events(store, STREAM, "Webshop order was placed", "c1")
    assert got["eventId"] == event_id
    assert got["sequence"] == 1  # server fields win over the body's
    assert got["stream"] == STREAM and got["producerId"] == "producer-1"
    assert got["receivedAt"].endswith("Z") and len(got["receivedAt"]) == 27
    assert got["payload"] == {"order": 7} and got["extra"] == [1, 2]
    assert "_crc" not in got


@pytest.mark.parametrize("key", [None, "clé-1"])
async def test_stored_bytes_are_orjson_of_server_fields_then_body(
    store: FileStore, event: Callable[..., dict[str, Any]], key: str | None
) -> None:
    """The record head is formatted as bytes, not a dict: it must stay what orjson would write."""
    stream, producer = 'Bestellungen "Süd" ✓', "prodüzent\t1"
    bodies = [
        event("Bestellung aufgegeben", total="12,50 €") | {"idempotencyKey": "spoof", "z": None},
        event("A") | {"eventId": "not mine", "receivedAt": 0, "extra": [1.5, {"k": "ü"}]},
    ]
    for k, body in enumerate(bodies):
        await store.append(stream, producer, body, key=None if key is None else f"{key}-{k}")
    log = store.stream(stream).log
    for k, body in enumerate(bodies):
        line = log.read_line(k + 1)
        stored = orjson.loads(line)
        server = {
            "eventId": stored["eventId"],
            "stream": stream,
            "sequence": k + 1,
            "producerId": producer,
            "receivedAt": stored["receivedAt"],
        }
        if key is not None:
            server["idempotencyKey"] = f"{key}-{k}"
        expected = server | {n: v for n, v in body.items() if n not in server and n != "idempotencyKey"}
        assert event_json(line) == orjson.dumps(expected)


async def test_reads_filter_by_name_in_append_order_and_respect_limit(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    for i in range(30):
        await store.append(STREAM, "p", event("A" if i % 3 else "B", i=i))
    got = await read_events(store, STREAM, "A", "c1", limit=5)
    assert [e["payload"]["i"] for e in got] == [1, 2, 4, 5, 7]
    assert len(store.stream(STREAM).log.segments) > 2  # the tiny segment size made it roll
    everything = await read_events(store, STREAM, "A", "c1")
    assert [e["payload"]["i"] for e in everything] == [i for i in range(30) if i % 3]
    assert await read_events(store, STREAM, "never appended", "c1") == []


async def test_unacked_events_come_back_and_acks_advance_per_consumer(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids = [await store.append(STREAM, "p", event("A", i=i)) for i in range(6)]
    first = await read_events(store, STREAM, "A", "c1", limit=2)
    assert [e["eventId"] for e in first] == ids[:2]
    assert await read_events(store, STREAM, "A", "c1", limit=2) == first  # at-least-once
    await store.ack(STREAM, "c1", ids[0])
    await store.ack(STREAM, "c1", ids[0])  # idempotent
    assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c1", limit=2)] == ids[1:3]
    # out of order: 3 and 4 acked while 1 is not; reads skip them but never skip 1
    await store.ack(STREAM, "c1", ids[3])
    await store.ack(STREAM, "c1", ids[4])
    assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c1")] == [ids[1], ids[2], ids[5]]
    position = store.stream(STREAM).consumers.checkpoint.get("c1", "A")
    assert position is not None and position.position == 1 and position.acked == {4, 5}
    await store.ack(STREAM, "c1", ids[1])
    await store.ack(STREAM, "c1", ids[2])
    assert position.position == 5 and position.acked == set()  # the contiguous prefix moved over 4, 5
    # another consumer is untouched
    assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c2")] == ids


async def test_positions_are_per_event_name(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    a = await store.append(STREAM, "p", event("A"))
    b = await store.append(STREAM, "p", event("B"))
    await store.ack(STREAM, "c", b)
    assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c")] == [a]
    assert await read_events(store, STREAM, "B", "c") == []


@pytest.mark.parametrize("names", [3, NAME_SEARCH_LIMIT + 5])  # searched, then read from the record
async def test_an_ack_finds_its_events_name(
    store: FileStore, event: Callable[..., dict[str, Any]], read_events: Reader, names: int
) -> None:
    ids = [await store.append(STREAM, "p", event(f"N{i % names}", i=i)) for i in range(2 * names)]
    for event_id in ids[1::names]:  # both events of N1
        await store.ack(STREAM, "c", event_id)
    assert await read_events(store, STREAM, "N1", "c") == []
    assert [e["eventId"] for e in await read_events(store, STREAM, "N0", "c")] == ids[::names]
    assert [e["eventId"] for e in await read_events(store, STREAM, "N2", "c")] == ids[2::names]


async def test_ack_of_unknown_or_foreign_ids_is_event_not_found(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    mine = await store.append(STREAM, "p", event())
    other = await store.append("other stream", "p", event())
    for bad in [other, "not-an-id", "00000000-0000-8000-8000-000000000001", mine[:-1] + "9"]:
        with pytest.raises(EventNotFound):
            await store.ack(STREAM, "c", bad)
    with pytest.raises(StreamNotFound):
        await store.ack("no such stream", "c", mine)
    with pytest.raises(StreamNotFound):
        await store.consume("no such stream", "A", "c", 1)


async def test_second_writer_is_locked_and_race_has_one_winner(
    store: FileStore, event: Callable[..., dict[str, Any]]
) -> None:
    results = await asyncio.gather(
        *(store.append("raced", f"producer-{i}", event()) for i in range(50)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1
    assert all(isinstance(r, StreamLocked) for r in results if not isinstance(r, str))
    assert store.stream("raced").owner == f"producer-{results.index(winners[0])}"


async def test_everything_survives_reopen(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "owner", event("A" if i % 2 else "B", i=i)) for i in range(40)]
    await store.ack(STREAM, "c1", ids[1])
    await store.ack(STREAM, "c1", ids[5])  # out of order, above the position
    await store.close()

    store = await FileStore.open(config)
    try:
        got = await read_events(store, STREAM, "A", "c1")
        assert [e["eventId"] for e in got] == [ids[i] for i in range(3, 40, 2) if i != 5]
        with pytest.raises(StreamLocked):
            await store.append(STREAM, "intruder", event())
        new_id = await store.append(STREAM, "owner", event("A"))
        assert new_id not in ids
        assert (await read_events(store, STREAM, "A", "c1"))[-1]["sequence"] == 41
        await store.ack(STREAM, "c1", ids[3])  # ids of the previous epoch still resolve
        assert store.stream(STREAM).consumers.checkpoint.get("c1", "A").position == 6  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_start_up_uses_persisted_indexes_and_rebuilds_missing_ones(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event("A", i=i)) for i in range(50)]
    stream_dir = store.stream(STREAM).log.directory
    await store.close()
    indexes = sorted(stream_dir.glob("*.idx"))
    assert len(indexes) == len(list(stream_dir.glob("*.log")))  # sealed ones plus the clean-shutdown one
    indexes[1].unlink()
    indexes[2].write_bytes(indexes[2].read_bytes()[:-7])  # truncated index: unusable, rebuilt
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "A", "c")] == ids
        assert indexes[1].exists()
    finally:
        await store.close()


async def test_fsync_always_answers_only_after_a_covering_fsync(
    store: FileStore, event: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: dict[Path, int] = {}
    real_fsync = Segment.fsync

    def recording_fsync(self: Segment) -> None:
        size = self.size  # everything written before the fsync starts is covered by it
        real_fsync(self)
        synced[self.path] = max(synced.get(self.path, 0), size)

    monkeypatch.setattr(Segment, "fsync", recording_fsync)

    async def append_and_check(i: int) -> None:
        await store.append(STREAM, "p", event(i=i))
        stream = store.stream(STREAM)
        payloads = [
            orjson.loads(stream.log.read_line(s))["payload"] for s in range(1, stream.log.visible_end)
        ]
        sequence = payloads.index({"i": i}) + 1
        segment = next(s for s in reversed(stream.log.segments) if s.base <= sequence)
        assert synced.get(segment.path, 0) >= segment.record_end(sequence - segment.base)

    await asyncio.gather(*(append_and_check(i) for i in range(40)))


async def test_group_commit_shares_fsyncs_between_concurrent_appends(
    tmp_path: Path, event: Callable[..., dict[str, Any]]
) -> None:
    store = await FileStore.open(StorageConfig(tmp_path, segment_bytes=1 << 30))
    try:
        await store.append(STREAM, "p", event())
        before = store.stream(STREAM).log.fsync_count
        await asyncio.gather(*(store.append(STREAM, "p", event(i=i)) for i in range(500)))
        fsyncs = store.stream(STREAM).log.fsync_count - before
        assert 1 <= fsyncs <= 50, fsyncs  # 500 appends, a handful of batches
    finally:
        await store.close()


@pytest.mark.parametrize("policy", [FsyncPolicy.NEVER, FsyncPolicy.INTERVAL])
async def test_lazy_policies_append_and_survive_reopen(
    tmp_path: Path, policy: FsyncPolicy, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    config = StorageConfig(tmp_path, fsync=policy, fsync_interval_ms=5, segment_bytes=2048)
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(30)]
    await store.ack(STREAM, "c", ids[0])
    await asyncio.sleep(0.02)  # let the interval task run at least once
    fsyncs = store.stream(STREAM).log.fsync_count
    assert fsyncs == 0 if policy is FsyncPolicy.NEVER else 1 <= fsyncs < 30  # none per append
    await store.close()
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[1:]
    finally:
        await store.close()


def open_log_files(directory: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        count += target.startswith(str(directory)) and target.endswith(".log")
    return count


async def test_sealed_segments_hold_a_bounded_number_of_descriptors(
    tmp_path: Path, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    config = StorageConfig(tmp_path, segment_bytes=1024, max_open_sealed_segments=2)
    store = await FileStore.open(config)
    try:
        for stream in ("one", "two"):
            for i in range(40):
                await store.append(stream, "p", event(i=i))
        assert len(store.stream("one").log.segments) > 5
        for stream in ("one", "two"):
            assert len(await read_events(store, stream, "OrderPlaced", "c")) == 40  # reads every segment
            assert open_log_files(tmp_path) <= 2 + 2  # two sealed ones, plus each stream's active
        await store.close()
        store = await FileStore.open(config)  # and after a restart, with sealed segments loaded
        for stream in ("one", "two"):
            assert len(await read_events(store, stream, "OrderPlaced", "c")) == 40
        assert open_log_files(tmp_path) <= 2 + 2
    finally:
        await store.close()
    assert open_log_files(tmp_path) == 0


def segment_module_file() -> str:
    """Where Segment was loaded from: a .py, or an extension module of the compiled build."""
    from logserver.filestore import segment

    return str(segment.__file__)


@pytest.mark.skipif(
    not segment_module_file().endswith(".py"),
    reason="patches Segment's read constants, which a compiled build fixes: the pure-Python run tests it",
)
@pytest.mark.parametrize(("gap", "span"), [(64 * 1024, 1024 * 1024), (1000, 100_000), (0, 1)])
async def test_reads_coalesce_nearby_records_into_few_system_calls(
    tmp_path: Path,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    monkeypatch: pytest.MonkeyPatch,
    gap: int,
    span: int,
) -> None:
    from logserver.filestore import segment as segment_module

    store = await FileStore.open(StorageConfig(tmp_path, segment_bytes=8192))
    try:
        for i in range(120):
            await store.append(STREAM, "p", event("A" if i % 3 == 0 else "B", i=i, pad="x" * (i % 17)))
        stream = store.stream(STREAM)
        one_by_one = [orjson.loads(event_json(stream.log.read_line(s))) for s in range(1, 121, 3)]
        monkeypatch.setattr(segment_module, "READ_GAP", gap)
        monkeypatch.setattr(segment_module, "READ_SPAN", span)
        calls = 0
        real_span = Segment._span

        def counting_span(self: Segment, start: int, end: int) -> memoryview:
            nonlocal calls  # one pread of the active segment, or one slice of a sealed one's map
            calls += 1
            return real_span(self, start, end)

        monkeypatch.setattr(Segment, "_span", counting_span)
        got = await read_events(store, STREAM, "A", "c", limit=40)
        assert got == one_by_one  # the same events, byte for byte, across segment borders
        segments = len(stream.log.segments)
        if span == 1:
            assert calls == 40  # nothing coalesces when a span may hold one record only
        else:
            assert calls <= segments + 1 < 40
    finally:
        await store.close()


@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.NEVER])
async def test_appends_held_up_by_a_roll_all_go_on_together_when_it_ends(
    tmp_path: Path, policy: FsyncPolicy, event: Callable[..., dict[str, Any]]
) -> None:
    # A roll (fsync and index in threads) holds appends back. They used to queue on a lock that
    # let one through per event-loop iteration while new appends slipped past it: under load
    # some waited seconds (make bench, 256 connections).
    store = await FileStore.open(StorageConfig(tmp_path, fsync=policy, segment_bytes=65536))
    try:
        await store.append(STREAM, "p", event(pad="x" * 65536))  # the next append rolls first
        log = store.stream(STREAM).log
        written: list[int] = []  # records written so far, once per event-loop iteration

        async def note_each_iteration() -> None:
            while True:
                written.append(log.next_sequence)
                await asyncio.sleep(0)

        counter = asyncio.create_task(note_each_iteration())
        held = [asyncio.create_task(store.append(STREAM, "p", event())) for _ in range(50)]
        await asyncio.sleep(0)
        assert len(log.segments) == 1  # the first is rolling; the rest wait
        await asyncio.gather(*held)
        counter.cancel()
        assert len(log.segments) == 2
        first, last = written.index(written[0] + 1), written.index(written[0] + 50)
        assert last - first <= 2, written[first : last + 1]  # not one append per iteration
    finally:
        await store.close()


@pytest.mark.parametrize("policy", list(FsyncPolicy))
async def test_appends_that_arrive_together_share_one_write(
    tmp_path: Path, policy: FsyncPolicy, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(StorageConfig(tmp_path, fsync=policy, segment_bytes=1 << 30))
    try:
        await store.append(STREAM, "p", event())
        log = store.stream(STREAM).log
        commits = log.commit.flushes
        ids = await asyncio.gather(*(store.append(STREAM, "p", event(i=i)) for i in range(200)))
        assert log.commit.flushes - commits <= 3, log.commit.flushes - commits  # not one per event
        assert log.segments[-1].path.stat().st_size == log.segments[-1].size  # all of them written
        stored = await read_events(store, STREAM, "OrderPlaced", "c")
        assert [e["eventId"] for e in stored[1:]] == ids  # in the order they were answered
    finally:
        await store.close()
