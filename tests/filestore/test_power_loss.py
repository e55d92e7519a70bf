"""Simulated power loss: rebuild the data dir from only what fsync made durable.

`DurabilityRecorder` wraps `os.fsync`. Before each real fsync it snapshots what
that fsync is about to make durable: a file's bytes, or a directory's entries,
both keyed by inode (so a renamed directory keeps its history) and by a
generation that `os.open(O_CREAT)`/`os.mkdir` bump (inode numbers are reused,
and a stale directory entry must still find the old file's bytes).
`crash_image` then builds the directory tree a power cut would leave: only
durably linked names, only durable bytes, and each file's unsynced tail
dropped, zero-filled or filled with garbage (ext4 delayed allocation, ALICE).
Under fsync=always the engine must recover every append and ack it answered.
"""

from __future__ import annotations

import asyncio
import os
import random
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

REAL_FSYNC = os.fsync
REAL_OPEN = os.open
REAL_MKDIR = os.mkdir


class DurabilityRecorder:
    def __init__(self) -> None:
        self.generation: dict[int, int] = {}
        self.file_bytes: dict[tuple[int, int], bytes] = {}
        self.dir_entries: dict[tuple[int, int], dict[str, tuple[tuple[int, int], bool]]] = {}
        self.fsyncs = 0
        self._lock = threading.RLock()  # crash_image mkdirs through the wrapped os.mkdir

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = REAL_OPEN(path, flags, mode, dir_fd=dir_fd)
        if flags & (os.O_CREAT | os.O_TRUNC):
            info = os.fstat(fd)
            if info.st_size == 0:  # a new file may reuse a dead file's inode number
                with self._lock:
                    self.generation[info.st_ino] = self.generation.get(info.st_ino, 0) + 1
        return fd

    def key(self, ino: int) -> tuple[int, int]:
        return ino, self.generation.get(ino, 0)

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        REAL_MKDIR(path, mode, dir_fd=dir_fd)
        with self._lock:
            ino = os.stat(path, dir_fd=dir_fd).st_ino
            self.generation[ino] = self.generation.get(ino, 0) + 1

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "open", self.open)
        monkeypatch.setattr(os, "mkdir", self.mkdir)

    def fsync(self, fd: int) -> None:
        with self._lock:
            info = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if stat.S_ISDIR(info.st_mode):
                entries = {}
                for entry in os.scandir(path):
                    try:
                        entry_info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # renamed away meanwhile: this fsync cannot have made it durable
                    entries[entry.name] = (self.key(entry_info.st_ino), stat.S_ISDIR(entry_info.st_mode))
                self.dir_entries[self.key(info.st_ino)] = entries
            else:
                with open(f"/proc/self/fd/{fd}", "rb") as reopened:  # fd may be write-only
                    self.file_bytes[self.key(info.st_ino)] = reopened.read()
            self.fsyncs += 1
        REAL_FSYNC(fd)

    def crash_image(self, root: Path, target: Path, tail: str, rng: random.Random) -> None:
        """Rebuild `root` (whose parent's entry was fsynced) under `target` as a power cut leaves it."""
        with self._lock:
            current: dict[tuple[int, int], Path] = {}
            for dirpath, _, filenames in os.walk(root):  # os.walk shrugs off dirs renamed meanwhile
                for filename in filenames:
                    path = Path(dirpath, filename)
                    try:
                        info = path.stat()
                    except FileNotFoundError:
                        continue  # renamed away while we looked
                    if stat.S_ISREG(info.st_mode):  # inode numbers are reused, by directories too
                        current[self.key(info.st_ino)] = path
            self._build(self.key(root.stat().st_ino), target, current, tail, rng)

    def _build(
        self, dir_ino: int, out: Path, current: dict[int, Path], tail: str, rng: random.Random
    ) -> None:
        out.mkdir()
        for name, (ino, is_dir) in self.dir_entries.get(dir_ino, {}).items():
            if is_dir:
                self._build(ino, out / name, current, tail, rng)
                continue
            durable = self.file_bytes.get(ino, b"")
            unsynced = 0
            if (now := current.get(ino)) is not None:
                try:
                    content = now.read_bytes()
                except OSError:
                    content = b""  # gone, or its inode number now names something else
                if content.startswith(durable):  # the same file, grown since its last fsync
                    unsynced = len(content) - len(durable)
            if tail == "zeros":
                durable += b"\0" * unsynced
            elif tail == "garbage":
                durable += rng.randbytes(unsynced)
            (out / name).write_bytes(durable)


def event(name: str, i: int) -> dict[str, Any]:
    return {"event": {"name": name, "version": 1}, "payload": {"i": i, "pad": "x" * (i % 50)}}


@pytest.mark.parametrize("tail", ["dropped", "zeros", "garbage"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_power_loss_keeps_every_answered_append_and_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: str, seed: int
) -> None:
    recorder = DurabilityRecorder()
    recorder.install(monkeypatch)
    rng = random.Random(seed)
    data = tmp_path / "data"
    config = StorageConfig(data, fsync=FsyncPolicy.ALWAYS, segment_bytes=1500)
    store = await FileStore.open(config)
    answered: dict[str, list[str]] = {}
    acked: dict[tuple[str, str], list[str]] = {}
    images: list[tuple[Path, dict[str, list[str]], dict[tuple[str, str], list[str]]]] = []
    done = asyncio.Event()

    async def producer(stream: str, count: int, acks: bool = True) -> None:
        for i in range(count):
            event_id = await store.append(stream, "p", event("A" if i % 3 else "B", i))
            answered.setdefault(stream, []).append(event_id)
            if acks and i % 4 == 0:
                await store.ack(stream, "c", event_id)
                acked.setdefault((stream, "c"), []).append(event_id)

    def take_image() -> None:
        if done.is_set():
            return
        target = tmp_path / f"crash-{len(images)}"
        recorder.crash_image(data, target, tail, rng)
        images.append(
            (target, {k: list(v) for k, v in answered.items()}, {k: list(v) for k, v in acked.items()})
        )
        asyncio.get_running_loop().call_later(rng.uniform(0.005, 0.05), take_image)

    asyncio.get_running_loop().call_later(0.01, take_image)
    await asyncio.gather(
        *(producer(f"stream {n}", 60) for n in range(3)),
        producer("stream 0", 40),
        producer("never acked", 60, acks=False),  # no checkpoint writes that fsync its directory too
    )
    done.set()
    await store.close()
    assert len(images) >= 3 and recorder.fsyncs > 20

    for target, answered_then, acked_then in images:
        restored = await FileStore.open(StorageConfig(target, segment_bytes=1500))
        try:
            for stream_name, ids in answered_then.items():
                stream = restored.stream(stream_name)
                stored = [_event_id(stream.log.read_line(s)) for s in range(1, stream.log.next_sequence)]
                kept = [i for i in stored if i in set(ids)]
                assert kept == ids, f"{target.name}: {stream_name} lost answered events"
            for (stream_name, consumer), ids in acked_then.items():
                stream = restored.stream(stream_name)
                for event_id in ids:
                    sequence = stream.log.resolve(event_id)
                    entry = stream.consumers.checkpoint.get(consumer, stream.log.event_name(sequence))
                    assert entry is not None, f"{target.name}: ack of {event_id} lost"
                    assert sequence <= entry.position or sequence in entry.acked, (
                        f"{target.name}: {stream_name}: ack of sequence {sequence} lost"
                    )
        finally:
            await restored.close()


def _event_id(line: bytes) -> str:
    import orjson

    value: str = orjson.loads(line)["eventId"]
    return value


def test_recorder_notices_an_unsynced_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model itself: a file renamed into place without a directory fsync is gone after the crash."""
    recorder = DurabilityRecorder()
    recorder.install(monkeypatch)
    root = tmp_path / "root"
    root.mkdir()
    recorder.fsync_dir = _fsync_dir(recorder)  # type: ignore[attr-defined]
    recorder.fsync_dir(root)  # type: ignore[attr-defined]
    (root / "synced").write_bytes(b"kept")
    with open(root / "synced", "rb+") as f:
        recorder.fsync(f.fileno())
    recorder.fsync_dir(root)  # type: ignore[attr-defined]
    (root / "unsynced").write_bytes(b"lost")
    (root / "synced").write_bytes(b"kept and more")
    recorder.crash_image(root, tmp_path / "image", "dropped", random.Random(0))
    assert sorted(p.name for p in (tmp_path / "image").iterdir()) == ["synced"]
    assert (tmp_path / "image" / "synced").read_bytes() == b"kept"


def _fsync_dir(recorder: DurabilityRecorder) -> Callable[[Path], None]:
    def fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            recorder.fsync(fd)
        finally:
            os.close(fd)

    return fsync_dir
