"""The manifest: missing, shortened or extra segments are damage, not retention or a torn tail
(issue 11 finding 2); retention and migration keep it right."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from logserver.engine import StreamCorrupt
from logserver.filestore import FileStore, StorageConfig
from logserver.filestore.maintenance import check_data_dir
from logserver.filestore.manifest import MANIFEST_FILE

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


async def refused(config: StorageConfig, match: str) -> None:
    store = await FileStore.open(config)
    try:
        with pytest.raises(StreamCorrupt, match=match):
            store.stream(STREAM)
    finally:
        await store.close()


async def sequence_of_next_append(config: StorageConfig, event: Callable[..., dict[str, Any]]) -> int:
    store = await FileStore.open(config)
    try:
        new_id = await store.append(STREAM, "p", event())
        return orjson.loads(await store.get_event(STREAM, new_id))["sequence"]  # type: ignore[no-any-return]
    finally:
        await store.close()


async def test_deleting_the_active_segment_and_its_index_is_damage_and_its_sequences_are_never_reused(
    config: StorageConfig, event: Callable[..., dict[str, Any]]
) -> None:
    _, directory = await filled(config, event, 40)
    active = max(directory.glob("*.log"))
    active.unlink()
    active.with_suffix(".idx").unlink()
    await refused(config, "is missing")
    [report] = check_data_dir(config.data_dir, repair=True)
    assert not report.damaged and any("lost and skipped" in r for r in report.repairs)
    assert await sequence_of_next_append(config, event) == 41  # was 938-and-up reuse in the finding


async def test_deleting_the_first_segment_is_damage_not_retention(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await filled(config, event, 40)
    first = min(directory.glob("*.log"))
    kept = sum(1 for _ in first.open("rb"))
    first.unlink()
    await refused(config, f"{first.name} is missing")
    [report] = check_data_dir(config.data_dir)
    assert report.damaged and any(first.name in p for p in report.problems)
    check_data_dir(config.data_dir, repair=True)
    store = await FileStore.open(config)
    try:
        got = [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")]
        assert got == ids[kept:]  # the rest, with their ids
    finally:
        await store.close()


async def test_truncating_the_active_segment_at_a_record_boundary_below_its_clean_stop_is_damage(
    config: StorageConfig, event: Callable[..., dict[str, Any]]
) -> None:
    _, directory = await filled(config, event, 40)
    active = max(directory.glob("*.log"))
    lines = active.read_bytes().splitlines(keepends=True)
    active.write_bytes(b"".join(lines[:-2]))  # two whole records gone: no torn record to see
    active.with_suffix(".idx").unlink()
    await refused(config, "manifest.json records")


async def test_a_segment_file_the_manifest_does_not_list_is_damage(
    config: StorageConfig, event: Callable[..., dict[str, Any]]
) -> None:
    _, directory = await filled(config, event, 40)
    (directory / f"{1000:020d}.log").write_bytes(b"")
    await refused(config, "not in manifest.json")


async def test_a_missing_manifest_is_damage_and_a_repair_rebuilds_it(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    ids, directory = await filled(config, event, 40)
    (directory / MANIFEST_FILE).unlink()
    await refused(config, "manifest.json is missing")
    [report] = check_data_dir(config.data_dir, repair=True)
    assert not report.damaged, report
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids
    finally:
        await store.close()


async def test_segments_retention_deleted_are_not_reported_missing(
    tmp_path: Path, event: Callable[..., dict[str, Any]]
) -> None:
    config = StorageConfig(tmp_path / "data", segment_bytes=2048, retention_max_bytes=4096)
    store = await FileStore.open(config)
    for i in range(40):
        await store.append(STREAM, "p", event(i=i))
    assert await store.apply_retention() > 0
    first = store.stream(STREAM).log.first_sequence
    await store.close()
    assert check_data_dir(config.data_dir)[0].problems == []
    store = await FileStore.open(config)
    try:
        assert store.stream(STREAM).log.first_sequence == first > 1
    finally:
        await store.close()


async def test_a_stream_of_the_previous_format_is_read_and_migrated(
    config: StorageConfig,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(20)]
    await store.ack(STREAM, "c", ids[0])
    directory = store.stream(STREAM).log.directory
    await store.close()
    (directory / MANIFEST_FILE).unlink()  # as the previous version wrote it: no manifest, no checksums
    for name in ("meta.json", "consumers.json"):
        doc = orjson.loads((directory / name).read_bytes())
        del doc["_crc"]
        (directory / name).write_bytes(orjson.dumps(doc))
    caplog.set_level(logging.INFO, logger="logserver.filestore")
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[1:]
    finally:
        await store.close()
    assert "migrated" in caplog.text
    for name in ("meta.json", "consumers.json", MANIFEST_FILE):
        assert (directory / name).read_bytes().startswith(b'{"_crc":"')


async def test_a_copy_whose_manifest_is_older_than_its_segments_loads_whole(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(10)]  # rolled once
    directory = store.stream(STREAM).log.directory
    copied_early = (directory / MANIFEST_FILE).read_bytes()  # cp -a copied the manifest here
    ids += [await store.append(STREAM, "p", event(i=i)) for i in range(10, 40)]  # more rolls
    await store.close()
    (directory / MANIFEST_FILE).write_bytes(copied_early)
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids
    finally:
        await store.close()


async def test_a_copy_whose_manifest_is_newer_than_its_last_segments_loads_what_was_copied(
    config: StorageConfig, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(10)]  # rolled once
    log = store.stream(STREAM).log
    directory, active = log.directory, log.segments[-1]
    copied_segment = active.path.read_bytes()  # cp -a copied the active segment here
    while len(log.segments) < 3:  # then it rolled, and the new manifest says it is longer
        ids.append(await store.append(STREAM, "p", event()))
    copied_manifest = (directory / MANIFEST_FILE).read_bytes()
    newest = log.segments[-1].path
    await store.close()
    (directory / MANIFEST_FILE).write_bytes(copied_manifest)
    active.path.write_bytes(copied_segment)
    newest.write_bytes(b"")  # copied before any record reached it
    newest.with_suffix(".idx").unlink(missing_ok=True)
    active.path.with_suffix(".idx").unlink(missing_ok=True)
    store = await FileStore.open(config)
    try:
        kept = [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")]
        assert kept == ids[: len(kept)] and len(kept) == 10  # all the copy holds, in order
    finally:
        await store.close()
