"""LogLoader: recovery. Opens one stream directory and returns it loaded, or says why it can't.

Start-up time grows with the number of segments, not events: a sealed segment is loaded
from its persisted index; only what an index lacks (the active segment's tail, a missing or
unusable index) is scanned record by record. A torn tail of the last segment is cut and
logged; damage anywhere else refuses the stream (StreamCorrupt) until repaired.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from logserver.engine import EngineError, StreamCorrupt

from .atomic_file import fsync_directory, fsync_file, remove_temp_files, replace_atomically
from .checkpoint import CHECKPOINT_FILE, ConsumerCheckpoint
from .config import FsyncPolicy, StorageConfig
from .consumers import ConsumerState
from .idempotency import IdempotencyKeys
from .metadata import StreamMetadata
from .name_index import NameIndex
from .scan import scan_records
from .segment import (
    INDEX_SUFFIX,
    SealedSegmentFiles,
    Segment,
    base_of,
    create_segment_file,
    segment_file_name,
)
from .segment_index import IndexUnusable, LoadedIndex, decode_index, encode_index
from .stream import Stream
from .stream_log import StreamLog

log = logging.getLogger("logserver.filestore")


class LogLoader:
    """Loads one stream directory: metadata, segments (index or scan), checkpoint.

    Owns the directory only while loading; the returned Stream owns it after. Runs before
    the stream is served (start-up, creation), in one thread at a time.
    """

    def __init__(self, directory: Path, config: StorageConfig, sealed_files: SealedSegmentFiles) -> None:
        self.directory = directory
        self.config = config
        self.sealed_files = sealed_files
        self.names = NameIndex()
        self.keys = IdempotencyKeys(config.limits.idempotency_window_seconds)
        self.name = directory.name  # until the metadata is read

    def load(self) -> Stream:
        """The loaded stream; raises StreamCorrupt on damage that recovery may not cut."""
        metadata = self._metadata()
        self.name = metadata.name
        for leftover in remove_temp_files(self.directory):
            log.warning("stream %r: removed leftover temp file %s", self.name, leftover.name)
        segments = self._segments()
        checkpoint = ConsumerCheckpoint.load(
            self.directory / CHECKPOINT_FILE, self.config.fsync is FsyncPolicy.ALWAYS
        )
        self.keys.expire()
        for sealed in segments[:-1]:
            sealed.seal(self.sealed_files)
        stream_log = StreamLog(
            self.directory,
            metadata,
            segments,
            self.names,
            self.keys,
            self.config.fsync,
            self.config.segment_bytes,
            self.sealed_files,
        )
        self._clamp(checkpoint, stream_log.next_sequence - 1)
        return Stream(stream_log, ConsumerState(stream_log, checkpoint))

    def _metadata(self) -> StreamMetadata:
        try:
            return StreamMetadata.load(self.directory)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StreamCorrupt(f"metadata unreadable: {exc}") from None

    def _segments(self) -> list[Segment]:
        """Every segment, contiguous, each loaded; a new empty first one for an empty stream."""
        paths = sorted((b, p) for p in self.directory.iterdir() if (b := base_of(p)) is not None)
        if not paths:
            create_segment_file(self.directory, 1)
            fsync_directory(self.directory)
            paths = [(1, self.directory / segment_file_name(1))]
        segments: list[Segment] = []
        for i, (base, path) in enumerate(paths):
            if segments and base != segments[-1].end_sequence:
                raise StreamCorrupt(
                    f"segment {path.name} starts at {base}, "
                    f"expected {segments[-1].end_sequence}: records are missing"
                )
            segment = Segment(path, base)
            self._load_segment(segment, is_last=i == len(paths) - 1)
            segments.append(segment)
        return segments

    def _load_segment(self, segment: Segment, is_last: bool) -> None:
        """Fill a segment's arrays from its persisted index, scanning only what the index lacks.

        A sealed segment must match its index or scan clean; the last segment may
        have a torn tail, which is cut away and logged.
        """
        file_size = segment.path.stat().st_size
        index = self._index_of(segment)
        if index is not None and (index.size == file_size or (is_last and index.size < file_size)):
            segment.offsets, segment.size = index.offsets, index.size
            for event_name, sequences in zip(index.names, index.name_sequences, strict=True):
                self.names.extend(event_name, sequences)
            for key, first, count, received_at in index.keys:
                self.keys.add(str(key), int(first), int(count), str(received_at))  # type: ignore[call-overload]
            start = index.size
        else:
            start = 0
        if start == file_size:
            return
        with open(segment.path, "rb") as f:
            f.seek(start)
            data = f.read()
        result = scan_records(segment, data, start, self.names.by_name, self.keys)
        if result.damage is None:
            if not is_last:
                self._write_index(segment)
            return
        where = f"{segment.path.name} at byte {result.valid_end}"
        if not is_last or not result.damage_is_tail:
            raise StreamCorrupt(
                f"damage before the end of the log in {where}: {result.damage}; "
                "run 'logserver check --repair' to truncate it"
            )
        dropped = file_size - result.valid_end
        log.warning(
            "stream %r: cut torn tail of %s: %s (%d bytes dropped)", self.name, where, result.damage, dropped
        )
        os.truncate(segment.path, result.valid_end)
        fsync_file(segment.path)

    def _index_of(self, segment: Segment) -> LoadedIndex | None:
        """The segment's persisted index, or None when it is missing or unusable (then: a scan)."""
        path = segment.path.with_suffix(INDEX_SUFFIX)
        try:
            return decode_index(path.read_bytes(), segment.base)
        except FileNotFoundError:
            return None
        except (IndexUnusable, ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("index %s unusable (%s); rescanning the segment", path, exc)
            return None

    def _write_index(self, segment: Segment) -> None:
        """Persist a rescanned sealed segment's index, so the next start reads it instead."""
        keys = self.keys.in_range(segment.base, segment.end_sequence)
        index = encode_index(segment, self.names.by_name, keys)
        try:
            replace_atomically(segment.path.with_suffix(INDEX_SUFFIX), index)
        except OSError as exc:
            log.warning("stream %r: could not write index of %s: %s", self.name, segment.path.name, exc)

    def _clamp(self, checkpoint: ConsumerCheckpoint, last_sequence: int) -> None:
        """Pull consumer positions back to the log's end (a torn tail was cut), and save them."""
        moved = checkpoint.clamp(last_sequence)
        if not moved:
            return
        log.warning("stream %r: %d consumer positions clamped to the log end", self.name, moved)
        # Saved now: new appends reuse the cut sequences, and a crash before the next ack
        # must not bring back positions that would count them as acknowledged.
        try:
            checkpoint.compact_now()
        except EngineError as exc:  # the next save retries it; refusing to start helps nobody
            log.error("stream %r: clamped positions not saved yet: %s", self.name, exc)
