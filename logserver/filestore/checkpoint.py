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

    consumers.json  {"_crc":"…","version":1,"logGeneration":G,"consumers":{...}}
    consumers.acks  a header line for generation G, then one line per changed position

Compaction writes the snapshot (naming generation G+1) durably before it
replaces the log with an empty one of generation G+1, so a crash between the
two leaves a snapshot that already holds the old log's lines, and the old log
is ignored because its generation is the snapshot's minus one. A torn last line
fails its checksum and is cut at load, as a segment's torn tail is; any other damage
(a bad header, a bad line with good ones after it, a missing log beside a snapshot, a
snapshot failing its checksum) refuses the stream (CheckpointDamaged) until a repair
rebuilds the positions from what passes its checksum (`rebuild`).
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
from .checked_json import decode_checked, encode_checked
from .errors import storage_error
from .group_commit import GroupCommit
from .quarantine import keep_aside

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


class CheckpointDamaged(ValueError):
    """consumers.json or consumers.acks is damaged where recovery may not cut: the stream is refused."""


def _integer(value: Any) -> int:
    """`value` if it is an int (not a bool); TypeError otherwise."""
    if type(value) is not int:
        raise TypeError(f"{value!r} is not an integer")
    return value


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
        """The saved positions; CheckpointDamaged when a file is damaged before its torn tail."""
        checkpoint = cls(path, fsync_each_save)
        snapshot_legacy = checkpoint._load_snapshot()
        checkpoint._replay(snapshot_legacy)
        return checkpoint

    @classmethod
    def rebuild(cls, path: Path, fsync_each_save: bool) -> tuple[ConsumerCheckpoint, list[str]]:
        """What can be trusted of damaged files, for a repair: the snapshot if it passes its
        checksum, then every ack log line that passes its own, in order (the last wins).

        Conservative: a line lost makes its position fall back to an earlier saved one (the
        events are delivered again), never move past what a checksum proves was saved.
        Returns the checkpoint (not yet written) and what was dropped.
        """
        checkpoint = cls(path, fsync_each_save)
        dropped: list[str] = []
        try:
            checkpoint._load_snapshot()
        except CheckpointDamaged as exc:
            checkpoint.positions.clear()
            dropped.append(f"{exc}: its positions are not used")
        try:
            data = checkpoint.log_path.read_bytes()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")
        header = _parse_log_line(lines[0]) if data else None
        if isinstance(header, dict) and isinstance(header.get("logGeneration"), int):
            checkpoint._generation = max(checkpoint._generation, header["logGeneration"])
        bad = 0
        for line in lines[1:]:
            if line and not checkpoint._apply_line(_parse_log_line(line)):
                bad += 1
        if bad:
            dropped.append(f"{ACK_LOG_FILE}: {bad} damaged lines dropped")
        return checkpoint, dropped

    def _load_snapshot(self) -> bool:
        """Read `consumers.json` if it exists; returns whether it was written without a checksum."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            document = decode_checked(data)
            self._generation = _integer(document.doc.get("logGeneration", 0))
            for consumer, names in document.doc["consumers"].items():
                self.positions[consumer] = {
                    name: ConsumerPosition(_integer(entry["position"]), {_integer(s) for s in entry["acked"]})
                    for name, entry in names.items()
                }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointDamaged(f"{CHECKPOINT_FILE} is damaged ({exc})") from None
        return document.legacy

    def _replay(self, snapshot_legacy: bool) -> None:
        """Apply the ack log's lines of the snapshot's generation; cut only a torn tail."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            if self.path.exists() and not snapshot_legacy:
                # Every save writes the log before or with the snapshot (_write_compacted).
                raise CheckpointDamaged(
                    f"{ACK_LOG_FILE} is missing: acks since the last snapshot are lost"
                ) from None
            return
        lines = data.split(b"\n")
        header = _parse_log_line(lines[0])
        if not isinstance(header, dict) or not isinstance(header.get("logGeneration"), int) or len(lines) < 2:
            raise CheckpointDamaged(
                f"{ACK_LOG_FILE}: the header line is damaged; every ack line after it is unread"
            )
        generation = header["logGeneration"]
        if generation == self._generation - 1:
            return  # compaction stopped between its two writes: the snapshot holds these lines
        if generation != self._generation:
            raise CheckpointDamaged(
                f"{ACK_LOG_FILE} is of generation {generation}, {CHECKPOINT_FILE} of {self._generation}: "
                "one of them was replaced or lost"
            )
        good = len(lines[0]) + 1
        for number, line in enumerate(lines[1:-1], 2):  # the piece after the last newline is empty or torn
            if not self._apply_line(_parse_log_line(line)):
                if any(_parse_log_line(later) is not None for later in lines[number:]):
                    raise CheckpointDamaged(
                        f"{ACK_LOG_FILE}: line {number} (byte {good}) is damaged and valid lines follow it"
                    )
                break
            good += len(line) + 1
        if good < len(data):
            kept = keep_aside(self.log_path.parent, ACK_LOG_FILE, good, data[good:])
            log.warning("%s: cut %d bytes of a torn tail (kept in %s)", self.log_path, len(data) - good, kept)
            os.truncate(self.log_path, good)
        self._log_size = good

    def _apply_line(self, doc: Any) -> bool:
        """Set the position one ack log line records; False when the line is not one."""
        if not isinstance(doc, list) or len(doc) != 4:
            return False
        consumer, name, position, acked = doc
        if not (isinstance(consumer, str) and isinstance(name, str) and isinstance(acked, list)):
            return False
        try:
            entry = ConsumerPosition(_integer(position), {_integer(s) for s in acked})
        except TypeError:
            return False
        self.positions.setdefault(consumer, {})[name] = entry
        return True

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
        return encode_checked(
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
            if not self.log_path.exists():  # the first save: a log before the snapshot, so that
                # a snapshot without a log beside it is always damage (see _replay)
                replace_atomically(self.log_path, _header(generation - 1))
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
