"""Segment: one append-only JSON-lines file of records, plus its in-memory offsets.

Like Kafka's LogSegment, a segment is named by the first sequence it holds
(`00000000000000000001.log`) and knows where each of its records starts; the
stream log above it decides when to roll. Offsets live in an `array` (4 bytes
per record), never in Python objects per event.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .atomic_file import write_all
from .errors import StorageFull, StorageIOError
from .idempotency import IdempotencyKeys
from .record import MORE_LEN, PREFIX, PREFIX_LEN, check_line

LOG_SUFFIX = ".log"
READ_GAP = 64 * 1024  # read through unwanted records up to this size rather than make another call
READ_SPAN = 1024 * 1024  # but never more than this in one call (a consume reads all it needs, up to this)
INDEX_SUFFIX = ".idx"


def segment_file_name(base: int, suffix: str = LOG_SUFFIX) -> str:
    return f"{base:020d}{suffix}"


def base_of(path: Path) -> int | None:
    stem, suffix = path.stem, path.suffix
    if suffix != LOG_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def storage_error(exc: OSError, what: str) -> StorageFull | StorageIOError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: disk full")
    return StorageIOError(f"{what}: {os.strerror(exc.errno or 0)}")


class Segment:
    def __init__(self, path: Path, base: int) -> None:
        self.path = path
        self.base = base
        self.size = 0
        self.offsets = array("I")
        # One byte per record, 1 once a read has checked its checksum (see event_views).
        self._verified = bytearray()
        self._fd: int | None = None
        self._map: mmap.mmap | None = None  # sealed segments only
        self._sealed_files: SealedSegmentFiles | None = None  # set once sealed: reads share a bound

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def end_sequence(self) -> int:
        """The sequence the next record appended here would get."""
        return self.base + len(self.offsets)

    @property
    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            if self._sealed_files is not None:
                self._sealed_files.opened(self)
        elif self._sealed_files is not None:
            self._sealed_files.used(self)
        return self._fd

    def seal(self, files: SealedSegmentFiles) -> None:
        """No more writes: from now on it is read through a map, one of `files`' bounded few."""
        self.close()
        self._sealed_files = files

    def close(self) -> None:
        was_open = self._fd is not None or self._map is not None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._map = None  # unmapped (and its descriptor closed) once no read holds a view of it
        if was_open and self._sealed_files is not None:
            self._sealed_files.closed(self)

    def _span(self, start: int, end: int) -> memoryview:
        """Bytes [start, end) of the file: a copy from the active segment, which grows; a view
        of a read-only map of a sealed one, which does not (a consume then copies each event
        once, into the answer, instead of every byte of the span first)."""
        if self._sealed_files is None:
            return memoryview(os.pread(self.fd, end - start, start))
        mapped = self._map
        if mapped is None:
            fd = self.fd  # registers with the bound of open sealed segments
            mapped = self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            os.close(fd)  # the map holds a descriptor of its own
            self._fd = None
        else:
            self._sealed_files.used(self)
        return memoryview(mapped)[start:end]

    def append(self, lines: list[bytes]) -> None:
        """Write records in one pwrite; on failure the file is cut back to end with the last good one."""
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        try:
            write_all(self.fd, data, self.size)
        except OSError as exc:
            # If even this fails, the next write starts at self.size and overwrites the remnant.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise storage_error(exc, "append") from exc
        offset = self.size
        for line in lines:
            self.offsets.append(offset)
            offset += len(line)
        self.size = offset

    def record_end(self, index: int) -> int:
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else self.size

    def read_line(self, index: int) -> bytes:
        """The stored line of record `index`, newline included."""
        start = self.offsets[index]
        return bytes(self._span(start, self.record_end(index)))

    def event_views(self, sequences: array[int], lo: int, hi: int, views: list[memoryview]) -> int | None:
        """Append the event part of records `sequences[lo:hi]` (ascending, all in this segment)
        to `views`, checksums verified.

        What `check_line` and `event_start` do per record, in one loop with their lookups
        hoisted: a consume of 100 spends most of its time here. Nearby records are read
        together (see READ_GAP, READ_SPAN). Returns the first sequence whose record fails its
        checksum (nothing more is appended), else None.

        Each record's checksum is checked the first time this process serves it, not on
        every read: the CRC and its hex form were 70% of the loop (zlib's CRC-32 costs 0.4 us
        for 400 bytes here). Damaged bytes are never served; bytes that rot after their first
        read are caught by the first read after a restart, or by `logserver check`.
        """
        offsets, size, base = self.offsets, self.size, self.base
        last, i = len(offsets) - 1, lo
        verified = self._verified
        if len(verified) < len(offsets):
            verified.extend(bytes(len(offsets) - len(verified)))
        crc32, hex_start, crc_end, more_len = zlib.crc32, len(PREFIX), PREFIX_LEN, MORE_LEN
        final = sequences[hi - 1] - base
        final_end = offsets[final + 1] if final < last else size
        while i < hi:
            first = sequences[i] - base
            start = offsets[first]
            end = offsets[first + 1] if first < last else size
            if final_end - start <= READ_SPAN:  # the usual case: the rest in one read, no search
                end, j = final_end, hi
            else:
                j = i + 1
            while j < hi:
                index = sequences[j] - base
                following_end = offsets[index + 1] if index < last else size
                if offsets[index] - end > READ_GAP or following_end - start > READ_SPAN:
                    break
                end = following_end
                j += 1
            data = self._span(start, end)
            for sequence in sequences[i:j]:
                index = sequence - base
                at = offsets[index] - start
                line_end = (offsets[index + 1] if index < last else size) - start - 1  # before the newline
                # Only what follows the checksum is served, and the checksum covers all of it.
                event = data[at + crc_end : line_end]
                if not verified[index]:
                    stored_crc = data[at + hex_start : at + crc_end - 2]
                    if line_end - at <= crc_end + 1 or b"%08x" % crc32(event) != stored_crc:
                        return sequence
                    verified[index] = 1
                views.append(event[more_len:] if event[1] == 0x5F else event)  # '"_more"': a batch's
            i = j
        return None

    def truncate_records(self, count: int) -> None:
        """Forget records from `count` on, in memory and on disk (rollback after a failed fsync)."""
        if count >= len(self.offsets):
            return
        new_size = self.offsets[count]
        os.ftruncate(self.fd, new_size)
        del self.offsets[count:]
        del self._verified[count:]  # a record appended at a cut index is new bytes
        self.size = new_size

    def fsync(self) -> None:
        os.fsync(self.fd)


class SealedSegmentFiles:
    """Keeps at most `limit` sealed segments' files open, closing the least recently read.

    Without it every sealed segment ever read would hold a descriptor until shutdown (a 1 TB
    store: ~16,000). Active segments are not counted: their fsync runs in a thread, and a
    descriptor closed under it could be reused by another file.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._open: OrderedDict[Segment, None] = OrderedDict()

    def opened(self, segment: Segment) -> None:
        self._open[segment] = None
        while len(self._open) > self.limit:
            oldest = next(iter(self._open))
            oldest.close()  # calls closed(), which removes it

    def used(self, segment: Segment) -> None:
        self._open.move_to_end(segment)

    def closed(self, segment: Segment) -> None:
        self._open.pop(segment, None)


@dataclass
class ScanResult:
    valid_end: int  # byte offset after the last good record
    damage: str | None  # what was wrong at valid_end, if anything
    damage_is_tail: bool  # True when no good record follows the damage


def scan_records(
    segment: Segment,
    data: bytes,
    start: int,
    name_sequences: dict[str, array[int]],
    keys: IdempotencyKeys | None = None,
) -> ScanResult:
    """Verify records in `data` (the file from byte `start`), indexing good ones.

    Each good record's offset goes to `segment.offsets`, its sequence to
    `name_sequences[its event name]`, its idempotency key (if any) to `keys`.

    Stops at the first record that is torn, fails its checksum, does not parse or
    is out of sequence, and reports whether any good record follows it: only
    damage with nothing good after it is a torn tail that may be cut away.
    """
    view = memoryview(data)
    pos = 0
    offsets = segment.offsets
    end = len(data)
    damage: str | None = None
    batch: tuple[int, list[str]] | None = None  # (its first offset in data, names) while one is open
    keyed: list[tuple[str, int, str]] = []
    while pos < end:
        newline = data.find(b"\n", pos)
        if newline < 0:
            damage = f"partial record of {end - pos} bytes without a newline"
            break
        line = view[pos:newline]
        if not check_line(line):
            damage = "record fails its checksum"
            break
        try:
            fields: Any = orjson.loads(line)
            sequence = fields["sequence"]
            event_name = fields["event"]["name"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            damage = "record is not a valid event"
            break
        expected = segment.base + len(offsets)
        if sequence != expected or not isinstance(event_name, str):
            damage = f"record has sequence {sequence}, expected {expected}"
            break
        more = fields.get("_more")
        if more is not None and batch is None:
            batch = (pos, [])
        if batch is not None:
            batch[1].append(event_name)
        offsets.append(start + pos)
        sequences = name_sequences.get(event_name)
        if sequences is None:
            sequences = name_sequences[event_name] = array("Q")
        sequences.append(sequence)
        if (key := fields.get("idempotencyKey")) is not None:
            keyed.append((key, sequence, fields.get("receivedAt", "")))
        pos = newline + 1
        if more == "000000":
            batch = None
    damage_is_tail = damage is None or not any(check_line(line) for line in data[pos:].split(b"\n")[1:])
    if batch is not None:  # torn inside a batch: the whole batch goes, or none of it was stored
        pos, names = batch
        del offsets[len(offsets) - len(names) :]
        for event_name in names:
            name_sequences[event_name].pop()
        damage = damage or f"incomplete batch of {len(names)} records at the end"
    if keys is not None:
        kept_end = segment.end_sequence
        for key, sequence, received_at in keyed:
            if sequence < kept_end:
                keys.note_record(key, sequence, received_at)
    segment.size = start + pos
    if damage is None:
        return ScanResult(segment.size, None, True)
    return ScanResult(segment.size, damage, damage_is_tail)
