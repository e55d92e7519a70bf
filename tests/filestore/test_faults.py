"""Full disk and I/O errors: the failed operation is reported, nothing stored is damaged,
and the log works again once the fault clears."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logserver.engine import StorageFull, StorageIOError
from logserver.filestore import FileStore, StorageConfig
from logserver.filestore.segment import Segment

Reader = Callable[..., Awaitable[list[dict[str, Any]]]]
STREAM = "orders"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so ENOSPC comes from the kernel (needs root, as on CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_real_full_disk_fails_appends_cleanly_and_recovers(
    small_disk: Path, event: Callable[..., dict[str, Any]], read_events: Reader
) -> None:
    config = StorageConfig(small_disk / "data", segment_bytes=64 * 1024)
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(50)]
    ballast = small_disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    failures = 0
    for i in range(20):
        try:
            ids.append(await store.append(STREAM, "p", event(i=100 + i)))
        except StorageFull:
            failures += 1
    assert failures > 0
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids
    ballast.unlink()
    ids.append(await store.append(STREAM, "p", event(i=999)))
    await store.ack(STREAM, "c", ids[0])
    await store.close()
    store = await FileStore.open(config)  # and every record on disk verifies
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == ids[1:]
    finally:
        await store.close()


async def test_short_write_then_enospc_leaves_no_partial_record(
    config: StorageConfig,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await FileStore.open(config)
    ids = [await store.append(STREAM, "p", event(i=i)) for i in range(3)]
    real_pwrite = os.pwrite
    calls = 0

    def half_then_enospc(fd: int, data: Any, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_pwrite(fd, bytes(data)[: len(data) // 2], offset)  # a short write reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(StorageFull):
        await store.append(STREAM, "p", event(i=3))
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    ids.append(await store.append(STREAM, "p", event(i=4)))
    await store.close()
    store = await FileStore.open(config)
    try:
        got = await read_events(store, STREAM, "OrderPlaced", "c")
        assert [e["eventId"] for e in got] == ids and [e["payload"]["i"] for e in got] == [0, 1, 2, 4]
    finally:
        await store.close()


async def test_failed_fsync_fails_the_batch_and_rolls_back_instead_of_retrying(
    config: StorageConfig,
    event: Callable[..., dict[str, Any]],
    read_events: Reader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await FileStore.open(config)
    kept = [await store.append(STREAM, "p", event(i=i)) for i in range(3)]
    real_fsync = Segment.fsync
    failing = True

    def eio_once(self: Segment) -> None:
        nonlocal failing
        if failing:
            failing = False
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(self)

    monkeypatch.setattr(Segment, "fsync", eio_once)
    with pytest.raises(StorageIOError):
        await store.append(STREAM, "p", event(i=100))
    assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == kept
    kept.append(await store.append(STREAM, "p", event(i=3)))  # rolls back, then appends
    got = await read_events(store, STREAM, "OrderPlaced", "c")
    assert [e["payload"]["i"] for e in got] == [0, 1, 2, 3] and got[-1]["sequence"] == 4
    await store.close()
    store = await FileStore.open(config)
    try:
        assert [e["eventId"] for e in await read_events(store, STREAM, "OrderPlaced", "c")] == kept
    finally:
        await store.close()
