"""ConsumerCheckpoint: every consumer's position in one stream, as a snapshot plus an ack log.

A position is kept per (consumer, event name): `position` is the highest
sequence up to which every event of that name is acknowledged, and `acked`
holds acknowledged sequences above it (out-of-order acks), so a read skips
them and a restart keeps them.

Rewriting the whole `consumers.json` for every group commit of acks cost a
temp file, two fsyncs and a rename each time (a quarter of a core under ack
load). Instead each group commit appends the new state of the positions it
changed to `consumers.acks`, one checksummed line each, with one write and one
fsync; the last line for a position wins. When the log passes COMPACT_BYTES
(and at close) the state is written as a new snapshot and the log starts
over, like a write-ahead log and its checkpoint:

    consumers.json  {"version":1,"logGeneration":G,"consumers":{...}}
    consumers.acks  a header line for generation G, then one line per changed position

Compaction writes the snapshot (naming generation G+1) durably before it
replaces the log with an empty one of generation G+1, so a crash between the
two leaves a snapshot that already holds the old log's lines, and the old log
is ignored because its generation is not the snapshot's. A torn last line
fails its checksum and is cut at load, as a segment's torn tail is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .atomic_file import fsync_file, replace_atomically, write_all
from .errors import storage_error
from .group_commit import GroupCommit

CHECKPOINT_FILE = "consumers.json"
ACK_LOG_FILE = "consumers.acks"
COMPACT_BYTES = 1024 * 1024  # replaying this much at start-up takes a few tens of milliseconds

log = logging.getLogger("logserver.filestore")


@dataclass(slots=True)
class ConsumerPosition:
    """One (consumer, event name): acknowledged through `position`, and `acked` above it."""

    position: int = 0
    acked: set[int] = field(default_factory=set)


def _log_line(doc: Any) -> bytes:
    body = orjson.dumps(doc)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _header(generation: int) -> bytes:
    return _log_line({"logGeneration": generation})


def _parse_log_line(line: bytes) -> Any:
    """The document of one log line (without its newline), or None if it fails its checksum."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        return orjson.loads(body)
    except (ValueError, orjson.JSONDecodeError):
        return None


class ConsumerCheckpoint:
    """The durable positions of one stream's consumers: `consumers.json` and `consumers.acks`.

    Invariant: the snapshot plus the ack log lines of its generation are the positions last
    saved; `positions` is that plus changes not yet saved (`_changed`). Event-loop only; the
    file writes run in a thread while the group commit guarantees one save at a time.
    """

    def __init__(self, path: Path, fsync_each_save: bool) -> None:
        self.path = path
        self.log_path = path.with_name(ACK_LOG_FILE)
        self._fsync_each_save = fsync_each_save
        self.positions: dict[str, dict[str, ConsumerPosition]] = {}
        self.commit = GroupCommit(self._save)
        self.unsynced = False  # appended without fsync since the last sync()
        self._changed: set[tuple[str, str]] = set()  # positions to log at the next save
        self._generation = 0  # of the log whose lines the snapshot does not hold
        self._log_size: int | None = None  # None: no usable log yet, the next save compacts
        self._compact_next = False

    @classmethod
    def load(cls, path: Path, fsync_each_save: bool) -> ConsumerCheckpoint:
        checkpoint = cls(path, fsync_each_save)
        if path.exists():
            raw = orjson.loads(path.read_bytes())
            checkpoint._generation = raw.get("logGeneration", 0)
            for consumer, names in raw["consumers"].items():
                checkpoint.positions[consumer] = {
                    name: ConsumerPosition(entry["position"], set(entry["acked"]))
                    for name, entry in names.items()
                }
        checkpoint._replay()
        return checkpoint

    def _replay(self) -> None:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        header = _parse_log_line(lines[0])
        if not isinstance(header, dict) or header.get("logGeneration") != self._generation or len(lines) < 2:
            # Compaction stopped between its two writes (the snapshot holds these lines),
            # or the header itself is torn: the next save starts a new log.
            return
        good = len(lines[0]) + 1
        for line in lines[1:-1]:  # the piece after the last newline is empty or torn
            doc = _parse_log_line(line)
            if not isinstance(doc, list) or len(doc) != 4:
                break
            consumer, name, position, acked = doc
            self.positions.setdefault(consumer, {})[name] = ConsumerPosition(position, set(acked))
            good += len(line) + 1
        if good < len(data):
            log.warning("%s: cut %d bytes of a torn tail", self.log_path, len(data) - good)
            os.truncate(self.log_path, good)
        self._log_size = good

    def get(self, consumer: str, event_name: str) -> ConsumerPosition | None:
        names = self.positions.get(consumer)
        return names.get(event_name) if names else None

    def get_or_create(self, consumer: str, event_name: str) -> ConsumerPosition:
        names = self.positions.setdefault(consumer, {})
        found = names.get(event_name)
        if found is None:
            found = names[event_name] = ConsumerPosition()
        return found

    def changed(self, consumer: str, event_name: str) -> None:
        """Mark a position as changed: the next save writes it (request that save via `commit`)."""
        self._changed.add((consumer, event_name))

    def clamp(self, last_sequence: int) -> int:
        """Pull positions back to the log's end (after a torn tail was cut); returns how many moved."""
        moved = 0
        for consumer, names in self.positions.items():
            for name, entry in names.items():
                beyond = {s for s in entry.acked if s > last_sequence}
                if entry.position > last_sequence or beyond:
                    entry.position = min(entry.position, last_sequence)
                    entry.acked -= beyond
                    self.changed(consumer, name)
                    moved += 1
        return moved

    def move_to_start(self, first_sequence: int) -> int:
        """After retention: nobody stays positioned before the log's new first sequence."""
        moved = 0
        for consumer, names in self.positions.items():
            for name, entry in names.items():
                if entry.position < first_sequence - 1:
                    entry.position = first_sequence - 1
                    entry.acked = {s for s in entry.acked if s >= first_sequence}
                    self.changed(consumer, name)
                    moved += 1
        return moved

    def encode(self, generation: int) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "logGeneration": generation,
                "consumers": {
                    consumer: {
                        name: {"position": e.position, "acked": sorted(e.acked)} for name, e in names.items()
                    }
                    for consumer, names in self.positions.items()
                },
            }
        )

    async def close(self) -> None:
        """Write everything as a snapshot, so the next start replays no log."""
        unsaved = self._log_size is None or self._changed or self._log_size > len(_header(self._generation))
        if self.positions and unsaved:
            self._compact_next = True
            await self.commit.wait(self.commit.request())

    async def _save(self) -> None:
        if self._log_size is None or self._log_size >= COMPACT_BYTES or self._compact_next:
            await self._compact()
            return
        changed, self._changed = self._changed, set()
        data = b"".join(
            _log_line([consumer, name, entry.position, sorted(entry.acked)])
            for consumer, name in changed
            if (entry := self.get(consumer, name)) is not None
        )
        if not data:
            return
        offset = self._log_size
        self._log_size += len(data)
        try:
            await asyncio.to_thread(self._append, data, offset)
        except OSError as exc:
            self._log_size = None  # whatever reached the file, the next save starts over from memory
            raise storage_error(exc, "checkpoint write") from exc

    def _append(self, data: bytes, offset: int) -> None:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            write_all(fd, data, offset)
            if self._fsync_each_save:
                os.fsync(fd)
            else:
                self.unsynced = True
        finally:
            os.close(fd)

    async def _compact(self) -> None:
        generation, snapshot = self._next_snapshot()  # on the loop: no ack changes it meanwhile
        await asyncio.to_thread(self._write_compacted, generation, snapshot)

    def compact_now(self) -> None:
        """`_compact` without the event loop, for start-up (before any ack can run)."""
        self._write_compacted(*self._next_snapshot())

    def _next_snapshot(self) -> tuple[int, bytes]:
        """The next generation and its snapshot; the log takes no lines until it is written."""
        self._changed.clear()  # the snapshot holds every position
        self._compact_next = False
        self._log_size = None
        generation = self._generation + 1
        return generation, self.encode(generation)

    def _write_compacted(self, generation: int, snapshot: bytes) -> None:
        # Durable in every fsync mode: the snapshot must be on disk before the log it replaces
        # goes, or a power cut could leave the new log next to the old snapshot.
        header = _header(generation)
        try:
            replace_atomically(self.path, snapshot)
            replace_atomically(self.log_path, header)
        except OSError as exc:
            raise storage_error(exc, "checkpoint write") from exc
        self._generation = generation
        self._log_size = len(header)

    def sync(self) -> None:
        """fsync the ack log (interval mode, shutdown); compaction makes its own writes durable."""
        self.unsynced = False  # before the fsync: a save racing with it sets it again
        if not self.log_path.exists():
            return
        fsync_file(self.log_path)
