"""`check`/`--repair` over damaged data dirs, and backups taken while appends run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from logserver.filestore import FileStore, StorageConfig
from logserver.filestore.backup import backup
from logserver.filestore.maintenance import QUARANTINE_DIR, check_data_dir

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "orders"


async def filled(
    config: StorageConfig, event: Callable[..., dict[str, Any]], count: int
) -> tuple[list[str], Path]:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(count)]
    directory = store.stream(STREAM).log.directory
    await store.close()
    return ids, directory


async def test_check_passes_a_healthy_dir(
    config: StorageConfig, event: Callable[..., dict[str, Any]]
) -> None:
    await filled(config, event, 40)
    [report] = check_data_dir(config.data_dir)
    assert report.problems == [] and report.events == 40 and report.segments > 3


async def test_repair_quarantines_only_the_damaged_record_and_keeps_the_rest_with_their_ids(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await filled(config, event, 40)
    second = sorted(directory.glob("*.log"))[1]
    data = bytearray(second.read_bytes())
    first_record_end = data.index(b"\n") + 1
    data[first_record_end + 30] ^= 0x04  # damage the second record of the second segment
    second.write_bytes(bytes(data))
    second.with_suffix(".idx").unlink()

    [report] = check_data_dir(config.data_dir)
    assert len(report.problems) == 1 and "checksum" in report.problems[0]
    assert second.read_bytes() == bytes(data)  # a check alone changes nothing

    [repaired] = check_data_dir(config.data_dir, repair=True)
    assert repaired.repairs
    quarantined = list((directory / QUARANTINE_DIR).iterdir())
    assert quarantined and sum(p.stat().st_size for p in quarantined) > 0
    assert check_data_dir(config.data_dir)[0].problems == []

    store = await FileStore.open(config)
    try:
        survivors = [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")]
        first_segment_count = sum(1 for _ in sorted(directory.glob("*.log"))[0].open("rb"))
        lost = first_segment_count + 2  # the damaged record's sequence
        assert survivors == [i for n, i in enumerate(ids, 1) if n != lost]
        assert store.stream(STREAM).describe()["eventCount"] == 39
        new_id = await store.append(STREAM, "p", event())  # writable again, the lost sequence not reused
        assert store.stream(STREAM).log.resolve(new_id) == 41
    finally:
        await store.close()


async def test_check_reports_an_index_that_disagrees_with_its_segment(
    config: StorageConfig, event: Callable[..., dict[str, Any]]
) -> None:
    _, directory = await filled(config, event, 40)
    indexes = sorted(directory.glob("*.idx"))
    indexes[0].write_bytes(indexes[1].read_bytes())
    [report] = check_data_dir(config.data_dir, repair=True)
    assert any(indexes[0].name in p for p in report.problems)
    assert not indexes[0].exists()


async def test_backup_while_appending_holds_everything_answered_before_it_began(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader, tmp_path: Path
) -> None:
    store = await FileStore.open(config)
    answered = [await store.append(STREAM, "p", event(i=i)) for i in range(30)]
    await store.ack(STREAM, "c", answered[0])
    stop = asyncio.Event()

    async def keep_appending() -> None:
        i = 1000
        while not stop.is_set():
            await store.append(STREAM, "p", event(i=i))
            await store.ack(STREAM, "c", answered[1])
            i += 1

    writer = asyncio.create_task(keep_appending())
    await asyncio.sleep(0.01)
    before_copy = list(answered)
    copied = await asyncio.to_thread(backup, config.data_dir, tmp_path / "backup")
    stop.set()
    await writer
    await store.close()
    assert copied > 0

    restored = await FileStore.open(StorageConfig(tmp_path / "backup", segment_bytes=config.segment_bytes))
    try:
        got = [e["eventId"] for e in await read_events(restored, STREAM, "OrderPlaced", "other")]
        assert got[: len(before_copy)] == before_copy
        assert answered[0] not in [
            e["eventId"] for e in await read_events(restored, STREAM, "OrderPlaced", "c")
        ]
        new_id = await restored.append(STREAM, "p", event())
        assert new_id not in got  # a new epoch: the restored copy never reissues an id
    finally:
        await restored.close()
