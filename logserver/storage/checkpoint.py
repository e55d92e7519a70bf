"""ConsumerCheckpoint: every consumer's position in one stream, in one small file.

A position is kept per (consumer, event name): `position` is the highest
sequence up to which every event of that name is acknowledged, and `acked`
holds acknowledged sequences above it (out-of-order acks), so a read skips
them and a restart keeps them. The file is replaced atomically; concurrent
acks share one write through GroupCommit.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .atomic_file import fsync_directory, replace_atomically
from .group_commit import GroupCommit
from .segment import storage_error

CHECKPOINT_FILE = "consumers.json"


@dataclass(slots=True)
class ConsumerPosition:
    position: int = 0
    acked: set[int] = field(default_factory=set)


class ConsumerCheckpoint:
    def __init__(self, path: Path, fsync_each_save: bool) -> None:
        self.path = path
        self._fsync_each_save = fsync_each_save
        self.positions: dict[str, dict[str, ConsumerPosition]] = {}
        self.commit = GroupCommit(self._save)
        self.unsynced = False  # saved without fsync since the last sync()

    @classmethod
    def load(cls, path: Path, fsync_each_save: bool) -> ConsumerCheckpoint:
        checkpoint = cls(path, fsync_each_save)
        if path.exists():
            raw = orjson.loads(path.read_bytes())
            for consumer, names in raw["consumers"].items():
                checkpoint.positions[consumer] = {
                    name: ConsumerPosition(entry["position"], set(entry["acked"]))
                    for name, entry in names.items()
                }
        return checkpoint

    def get(self, consumer: str, event_name: str) -> ConsumerPosition | None:
        names = self.positions.get(consumer)
        return names.get(event_name) if names else None

    def get_or_create(self, consumer: str, event_name: str) -> ConsumerPosition:
        names = self.positions.setdefault(consumer, {})
        found = names.get(event_name)
        if found is None:
            found = names[event_name] = ConsumerPosition()
        return found

    def clamp(self, last_sequence: int) -> int:
        """Pull positions back to the log's end (after a torn tail was cut); returns how many moved."""
        moved = 0
        for names in self.positions.values():
            for entry in names.values():
                beyond = {s for s in entry.acked if s > last_sequence}
                if entry.position > last_sequence or beyond:
                    entry.position = min(entry.position, last_sequence)
                    entry.acked -= beyond
                    moved += 1
        return moved

    def move_to_start(self, first_sequence: int) -> int:
        """After retention: nobody stays positioned before the log's new first sequence."""
        moved = 0
        for names in self.positions.values():
            for entry in names.values():
                if entry.position < first_sequence - 1:
                    entry.position = first_sequence - 1
                    entry.acked = {s for s in entry.acked if s >= first_sequence}
                    moved += 1
        return moved

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "consumers": {
                    consumer: {
                        name: {"position": e.position, "acked": sorted(e.acked)} for name, e in names.items()
                    }
                    for consumer, names in self.positions.items()
                },
            }
        )

    async def _save(self) -> None:
        data = self.encode()  # snapshot on the loop; the thread only writes
        try:
            await asyncio.to_thread(replace_atomically, self.path, data, self._fsync_each_save)
        except OSError as exc:
            raise storage_error(exc, "checkpoint write") from exc
        if not self._fsync_each_save:
            self.unsynced = True

    def sync(self) -> None:
        """fsync the last saved file and its directory (interval mode, shutdown)."""
        self.unsynced = False  # before the fsync: a save racing with it sets it again
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.path.parent)
