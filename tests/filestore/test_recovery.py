"""Damaged files at start-up: torn tails are cut and logged, earlier damage refuses the stream."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from logserver.engine import StreamCorrupt
from logserver.filestore import FileStore, StorageConfig

from .crash_state import forget_clean_stop

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "orders"


async def fill(
    config: StorageConfig, event: Callable[..., dict[str, Any]], count: int
) -> tuple[list[str], Path]:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(count)]
    await store.ack(STREAM, "c", ids[-1])  # acked above the position: clamped if the tail goes
    directory = store.stream(STREAM).log.directory
    await store.close()
    forget_clean_stop(directory)  # as a crash leaves it: only an unclean stop's tail may be cut
    return ids, directory


def active_segment(directory: Path) -> Path:
    return max(directory.glob("*.log"))


async def ids_after_reopen(config: StorageConfig, read_events: Reader) -> list[str]:
    store = await FileStore.open(config)
    try:
        return [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "reader")]
    finally:
        await store.close()


TAILS: dict[str, Callable[[bytes], bytes]] = {
    "torn record": lambda data: data[:-25],
    "zero-filled tail": lambda data: data + b"\x00" * 700,
    "garbage tail": lambda data: data + b"\x8f\x01garbage{not json\n\xff\xfe",
    "partial line appended": lambda data: data + b'{"_crc":"0000',
    "checksum fails on last record": lambda data: data[:-10] + b"X" + data[-9:],
}


@pytest.mark.parametrize("damage", list(TAILS))
async def test_damaged_tail_is_cut_and_logged(
    config: StorageConfig,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids, directory = await fill(config, event, 20)
    segment = active_segment(directory)
    damaged = TAILS[damage](segment.read_bytes())
    segment.write_bytes(damaged)
    caplog.set_level(logging.WARNING, logger="logserver.filestore")
    survivors = await ids_after_reopen(config, read_events)
    [kept] = (directory / "quarantine").iterdir()  # the cut bytes are kept, not destroyed
    assert segment.read_bytes()[: len(damaged) - kept.stat().st_size] + kept.read_bytes() == damaged
    lost_last = damage in ("torn record", "checksum fails on last record")
    assert survivors == (ids[:-1] if lost_last else ids)
    assert "torn tail" in caplog.text
    if lost_last:
        assert "clamped" in caplog.text  # the ack of the vanished record was pulled back
    # the stream keeps working after the cut: new appends follow the survivors
    store = await FileStore.open(config)
    try:
        new_id = await store.append(STREAM, "p", event())
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "r2")] == [
            *survivors,
            new_id,
        ]
    finally:
        await store.close()


async def test_damage_before_the_tail_of_the_active_segment_refuses_the_stream(
    config: StorageConfig, event: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    _, directory = await fill(config, event, 20)
    segment = active_segment(directory)
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x01  # a flipped bit in the first record, good records after it
    segment.write_bytes(bytes(data))
    before = segment.stat().st_size
    store = await FileStore.open(config)
    try:
        with pytest.raises(StreamCorrupt, match="check --repair"):
            store.stream(STREAM)
        with pytest.raises(StreamCorrupt):
            await store.append(STREAM, "p", event())
        assert segment.stat().st_size == before  # nothing silently dropped
        await store.append("healthy stream", "p", event())  # the rest of the server works
    finally:
        await store.close()


def flip_a_byte_behind_a_missing_index(directory: Path) -> None:
    first = min(directory.glob("*.log"))
    first.with_suffix(".idx").unlink()  # forces the rescan that finds the damage
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x20
    first.write_bytes(bytes(data))


def truncate_the_first_segment(directory: Path) -> None:
    first = min(directory.glob("*.log"))
    first.write_bytes(first.read_bytes()[:-30])


def delete_the_second_segment(directory: Path) -> None:
    sorted(directory.glob("*.log"))[1].unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (flip_a_byte_behind_a_missing_index, "check --repair"),
        (truncate_the_first_segment, "check --repair"),
        (delete_the_second_segment, "is missing"),
    ],
)
async def test_damage_to_a_sealed_segment_refuses_the_stream(
    config: StorageConfig,
    event: Callable[..., dict[str, Any]],
    damage: Callable[[Path], None],
    message: str,
) -> None:
    _, directory = await fill(config, event, 40)
    damage(directory)
    store = await FileStore.open(config)
    try:
        with pytest.raises(StreamCorrupt, match=message):
            store.stream(STREAM)
    finally:
        await store.close()


async def test_leftover_temp_files_and_half_created_streams_are_ignored(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await fill(config, event, 5)
    (directory / ".consumers.json.tmp").write_bytes(b'{"half written')
    (directory / ".meta.json.tmp").write_bytes(b"")
    half = directory.parent / ".creating-0123456789abcdef"
    half.mkdir()
    (half / "meta.json").write_bytes(b"{")
    store = await FileStore.open(config)
    try:
        assert [s["name"] for s in await store.list_streams()] == [STREAM]
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[:-1]
        assert not half.exists() and not (directory / ".consumers.json.tmp").exists()
    finally:
        await store.close()


async def test_bit_rot_behind_a_valid_index_is_refused_at_read_not_served(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await fill(config, event, 40)
    first = min(directory.glob("*.log"))
    assert first.with_suffix(".idx").exists()  # start-up trusts the index and does not rescan
    data = bytearray(first.read_bytes())
    data[data.index(b'"payload"') + 3] ^= 0x01
    first.write_bytes(bytes(data))
    store = await FileStore.open(config)
    try:
        with pytest.raises(StreamCorrupt, match="fails its checksum"):
            await read_events(store, STREAM, "OrderPlaced", "c")
        with pytest.raises(StreamCorrupt):
            await store.append(STREAM, "p", event())  # refused until repaired
        with pytest.raises(StreamCorrupt):
            await store.ack(STREAM, "c", ids[0])
    finally:
        await store.close()


async def test_a_record_is_checked_on_its_first_read_in_each_process(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await fill(config, event, 40)
    first = min(directory.glob("*.log"))
    data = first.read_bytes()
    second_record = data.index(b"\n") + 1
    in_first, in_second = data.index(b'"payload"') + 3, data.index(b'"payload"', second_record) + 3

    def flip(at: int) -> None:  # in place: the server's map of the sealed segment sees it at once
        with first.open("r+b") as file:
            file.seek(at)
            byte = file.read(1)[0]
            file.seek(at)
            file.write(bytes([byte ^ 0x01]))

    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c", 1)] == ids[:1]
        flip(in_second)  # not yet served: its first read checks it
        with pytest.raises(StreamCorrupt, match="fails its checksum"):
            await read_events(store, STREAM, "OrderPlaced", "c")
    finally:
        await store.close()
    flip(in_second)
    flip(in_first)  # served by the last process, never by the next one
    store = await FileStore.open(config)
    try:
        with pytest.raises(StreamCorrupt, match="fails its checksum"):
            await read_events(store, STREAM, "OrderPlaced", "c", 1)
    finally:
        await store.close()


CRASHING_APPENDER = """
import asyncio, os, sys
from pathlib import Path
from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

async def main() -> None:
    store = await FileStore.open(StorageConfig(Path(sys.argv[1]), fsync=FsyncPolicy.ALWAYS))
    for i in range(3):
        print(await store.append("orders", "p", {"event": {"name": "OrderPlaced", "version": 1}}))
    sys.stdout.flush()
    os._exit(0)  # no close: as a crash right after these answers

asyncio.run(main())
"""


async def test_positions_clamped_at_start_are_saved_before_new_appends_reuse_the_sequences(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    _, directory = await fill(config, event, 20)  # consumer "c" acked the last of them
    segment = active_segment(directory)
    segment.write_bytes(TAILS["torn record"](segment.read_bytes()))  # the acked record goes
    # A process starts (clamping c's position), appends three events and crashes before any ack.
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_APPENDER, str(config.data_dir)], capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr
    appended = child.stdout.split()
    assert len(appended) == 3
    store = await FileStore.open(config)
    try:
        # The new events took the cut sequences: a stale position would count them as acked.
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")][-3:] == appended
    finally:
        await store.close()
