"""Segment: one append-only JSON-lines file of records, plus its in-memory offsets.

Like Kafka's LogSegment, a segment is named by the first sequence it holds
(`00000000000000000001.log`) and knows where each of its records starts; the
stream log above it decides when to roll. Offsets live in an `array` (4 bytes
per record), never in Python objects per event.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import zlib
from array import array
from collections import OrderedDict
from pathlib import Path

from .atomic_file import write_all
from .errors import storage_error
from .record import CRC_END, CRC_SEPARATOR, CRC_START, MORE_LEN, PREFIX, PREFIX_LEN, UNDERSCORE, check_line

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


def create_segment_file(directory: Path, base: int) -> Segment:
    """A new empty segment file starting at `base`."""
    path = directory / segment_file_name(base)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))  # no O_EXCL: a failed roll may be retried
    return Segment(path, base)


class Segment:
    """One segment file and its record offsets.

    Invariant: `offsets` holds the start of every record taken, `size` is where the last one
    ends; the file holds every record but those taken since the last `write_pending`, and
    nothing past them that a read would serve (a failed write is cut back). Reads check each
    record's checksum the first time this process serves it (`_verified`). Not thread-safe:
    used from the event loop only, except `fsync`, which the stream log runs in a thread
    while no one closes the descriptor.
    """

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
        self._pending: list[bytes] = []  # records taken by `append`, not yet written
        self._pending_start = 0  # where in the file they go

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
        """Take records for the next `write_pending`: their offsets count from now, their bytes
        reach the file then (one write for every record appended meanwhile)."""
        if not self._pending:
            self._pending_start = self.size
        offset = self.size
        for line in lines:
            self.offsets.append(offset)
            offset += len(line)
        self.size = offset
        self._pending.extend(lines)

    def write_pending(self) -> None:
        """Hand every record taken since the last call to the OS, in one pwrite.

        On failure the file is cut back to end with the last record written before, and the
        records taken stay in `offsets` for the owner's rollback (`truncate_records`).
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            write_all(self.fd, data, self._pending_start)
        except OSError as exc:
            # If even this fails, the next write starts at that offset and overwrites the remnant.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self._pending_start)
            raise storage_error(exc, "append") from exc

    def record_end(self, index: int) -> int:
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else self.size

    def read_line(self, index: int) -> bytes | None:
        """The stored line of record `index`, newline included; None if it fails its checksum."""
        start = self.offsets[index]
        line = bytes(self._span(start, self.record_end(index)))
        verified = self._verification_flags()
        if not verified[index]:
            if not check_line(memoryview(line)[:-1]):
                return None
            verified[index] = 1
        return line

    def _verification_flags(self) -> bytearray:
        """One byte per record, 1 once a read has checked that record's checksum."""
        verified = self._verified
        if len(verified) < len(self.offsets):
            verified.extend(bytes(len(self.offsets) - len(verified)))
        return verified

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
        verified = self._verification_flags()
        crc32, crc_start, crc_end, covered, more_len = zlib.crc32, CRC_START, CRC_END, PREFIX_LEN, MORE_LEN
        prefix, separator = PREFIX, CRC_SEPARATOR
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
                event = data[at + covered : line_end]
                if not verified[index]:
                    crc_start_at = at + crc_start
                    stored_crc = data[crc_start_at : at + crc_end]
                    if (
                        line_end - at <= covered + 1
                        or b"%08x" % crc32(event) != stored_crc
                        or data[at:crc_start_at] != prefix  # not served, but damage all the same
                        or data[at + crc_end : at + covered] != separator
                    ):
                        return sequence
                    verified[index] = 1
                views.append(event[more_len:] if event[1] == UNDERSCORE else event)  # a batch's
            i = j
        return None

    def truncate_records(self, count: int) -> None:
        """Forget records from `count` on, in memory and on disk (rollback after a failed fsync)."""
        if count >= len(self.offsets):
            return
        new_size = self.offsets[count]
        os.ftruncate(self.fd, new_size)
        self._pending.clear()  # all of them lie past the cut: they were taken after it
        del self.offsets[count:]
        del self._verified[count:]  # a record appended at a cut index is new bytes
        self.size = new_size

    def fsync(self) -> None:
        os.fsync(self.fd)


class SealedSegmentFiles:
    """Keeps at most `limit` sealed segments' files open, closing the least recently read.

    Shared by every stream of a store; event-loop only, like the segments it closes.

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
