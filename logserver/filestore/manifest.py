"""Manifest: the durable record of which segments a stream has and where each ends.

    manifest.json  {"_crc":"…","version":1,"segments":[[base,count,size],…]}

One entry per segment file, oldest first. Every entry but the last is a sealed segment and
exact: its file holds `count` records in `size` bytes. The last is the active segment and a
lower bound: what was durable when it was last recorded (its roll, or the last clean stop);
only records beyond it may be cut as a torn tail after an unclean stop. A gap between two
entries (`base` above the previous entry's end) is a run of sequences lost to damage and
skipped by `logserver check --repair`: never served, never reused.

Written before the files it describes change (a roll names the new segment before creating
it; retention forgets segments before deleting them), so a crash leaves at most an empty
active segment to recreate or leftovers of a retention below the first entry.

`clean` says the manifest was written by a clean stop (or a repair) and nothing has rolled
since: then it is the whole truth. Otherwise the data dir may be a copy taken while the
server ran (`cp -a` copies files in no particular order), where the manifest can be older
than the segments (rolls after it was copied: later segments it does not list) or newer
(a sealed segment copied before its last records were written, later ones still empty);
the loader accepts exactly those two shapes (see LogLoader._as_copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from .atomic_file import replace_atomically
from .checked_json import ChecksumFailed, decode_checked, encode_checked

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One segment as the manifest records it: first sequence, records and bytes."""

    base: int
    count: int
    size: int

    @property
    def end_sequence(self) -> int:
        return self.base + self.count


@dataclass
class Manifest:
    """The segments of one stream. Changed only under the stream log's exclusive lock (roll,
    close, retention) or offline (load, repair)."""

    segments: list[SegmentEntry]
    clean: bool = False  # written by a clean stop (or offline): no roll or retention since

    def encode(self) -> bytes:
        entries = [[e.base, e.count, e.size] for e in self.segments]
        return encode_checked({"version": 1, "clean": self.clean, "segments": entries})

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """The manifest in `data`; ChecksumFailed (a ValueError) when it is damaged."""
        document = decode_checked(data)
        if document.legacy:
            raise ChecksumFailed("manifest without a checksum")
        try:
            entries = [SegmentEntry(int(b), int(c), int(s)) for b, c, s in document.doc["segments"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ChecksumFailed(f"segments unreadable ({exc})") from None
        if not entries or any(b.base < a.end_sequence for a, b in pairwise(entries)):
            raise ChecksumFailed("segments empty or overlapping")
        return cls(entries, document.doc.get("clean") is True)

    @classmethod
    def load(cls, directory: Path) -> Manifest | None:
        """The stream's manifest; None when there is none (a stream of the previous format)."""
        try:
            data = (directory / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            return None
        return cls.decode(data)

    def save(self, directory: Path) -> None:
        replace_atomically(directory / MANIFEST_FILE, self.encode())

    @property
    def active(self) -> SegmentEntry:
        return self.segments[-1]

    def skipped(self) -> list[tuple[int, int]]:
        """The [first, end) runs of sequences lost to damage and skipped by a repair."""
        return [(a.end_sequence, b.base) for a, b in pairwise(self.segments) if b.base > a.end_sequence]
