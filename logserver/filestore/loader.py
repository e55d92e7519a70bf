"""LogLoader: recovery. Opens one stream directory and returns it loaded, or says why it can't.

Start-up time grows with the number of segments, not events: a sealed segment is loaded
from its persisted index; only what an index lacks (the active segment's tail, a missing or
unusable index) is scanned record by record. The manifest says which segments must exist
and where each ends: a missing, shortened or extra segment file is damage, not retention or
a torn tail. A torn tail of the last segment beyond what the manifest records is cut and
logged; damage anywhere else (in any file) refuses the stream (StreamCorrupt) until repaired.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from logserver.engine import EngineError, StreamCorrupt

from .atomic_file import fsync_directory, fsync_file, remove_temp_files, replace_atomically
from .checkpoint import CHECKPOINT_FILE, CheckpointDamaged, ConsumerCheckpoint
from .config import FsyncPolicy, StorageConfig
from .consumers import ConsumerState
from .idempotency import IdempotencyKeys
from .manifest import MANIFEST_FILE, Manifest, SegmentEntry
from .metadata import METADATA_FILE, StreamMetadata
from .name_index import NameIndex
from .quarantine import keep_aside
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
        """The loaded stream; raises StreamCorrupt on any damage that recovery may not cut."""
        try:
            return self._load()
        except StreamCorrupt:
            raise
        except CheckpointDamaged as exc:
            raise StreamCorrupt(str(exc)) from None
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise StreamCorrupt(f"unreadable: {type(exc).__name__}: {exc}") from None

    def _load(self) -> Stream:
        metadata = self._metadata()
        self.name = metadata.name
        for leftover in remove_temp_files(self.directory):
            log.warning("stream %r: removed leftover temp file %s", self.name, leftover.name)
        manifest = self._manifest(metadata)
        segments = self._segments(manifest)
        checkpoint = ConsumerCheckpoint.load(
            self.directory / CHECKPOINT_FILE, self.config.fsync is FsyncPolicy.ALWAYS
        )
        self.keys.expire()
        for sealed in segments[:-1]:
            sealed.seal(self.sealed_files)
        if manifest is None or metadata.legacy:
            manifest = self._migrate(metadata, segments, checkpoint)
        stream_log = StreamLog(
            self.directory,
            metadata,
            segments,
            self.names,
            self.keys,
            self.config.fsync,
            self.config.segment_bytes,
            self.sealed_files,
            manifest,
        )
        self._clamp(checkpoint, stream_log.next_sequence - 1)
        return Stream(stream_log, ConsumerState(stream_log, checkpoint))

    def _metadata(self) -> StreamMetadata:
        try:
            return StreamMetadata.load(self.directory)
        except FileNotFoundError:
            raise StreamCorrupt(f"{METADATA_FILE} is missing: owner and id epochs unknown") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StreamCorrupt(f"{METADATA_FILE} is damaged ({exc}): owner and id epochs unknown") from None

    def _manifest(self, metadata: StreamMetadata) -> Manifest | None:
        """The stream's manifest; None for a stream of the previous format (built from its files)."""
        try:
            manifest = Manifest.load(self.directory)
        except (OSError, ValueError) as exc:
            raise StreamCorrupt(
                f"{MANIFEST_FILE} is damaged ({exc}): which segments exist is unknown"
            ) from None
        if manifest is None and not metadata.legacy:
            raise StreamCorrupt(f"{MANIFEST_FILE} is missing: which segments exist is unknown")
        return manifest

    def _migrate(
        self, metadata: StreamMetadata, segments: list[Segment], checkpoint: ConsumerCheckpoint
    ) -> Manifest:
        """A stream of the previous format: write its manifest and checksummed metadata."""
        sealed = [SegmentEntry(s.base, s.count, s.size) for s in segments[:-1]]
        manifest = Manifest([*sealed, SegmentEntry(segments[-1].base, 0, 0)])  # nothing known synced
        manifest.save(self.directory)
        metadata.save(self.directory)
        metadata.legacy = False
        if checkpoint.positions:
            checkpoint.compact_now()
        log.info("stream %r: migrated to checksummed metadata and a segment manifest", self.name)
        return manifest

    def _segment_files(self) -> dict[int, Path]:
        return {b: p for p in self.directory.iterdir() if (b := base_of(p)) is not None}

    def _segments(self, manifest: Manifest | None) -> list[Segment]:
        """Every segment, each loaded and matching the manifest."""
        files = self._segment_files()
        if manifest is None:
            return self._segments_without_manifest(files)
        self._remove_retention_leftovers(files, manifest.segments[0].base)
        entries = list(manifest.segments)
        exact = [True] * (len(entries) - 1) + [False]  # the active entry is a lower bound
        if not manifest.clean:
            self._as_copied(entries, exact, files)
        listed = {e.base for e in entries}
        extra = sorted(b for b in files if b not in listed)
        if extra:
            raise StreamCorrupt(
                f"segment file {files[extra[0]].name} is not in {MANIFEST_FILE}: "
                "it was added, or the manifest lost it"
            )
        segments: list[Segment] = []
        for i, entry in enumerate(entries):
            is_last = i == len(entries) - 1
            path = files.get(entry.base)
            if path is None:
                if not (is_last and entry.count == 0):
                    raise StreamCorrupt(
                        f"segment file {segment_file_name(entry.base)} is missing: "
                        f"{entry.count} records from sequence {entry.base} lost"
                    )
                create_segment_file(self.directory, entry.base)  # a roll stopped before creating it
                fsync_directory(self.directory)
                path = self.directory / segment_file_name(entry.base)
            segment = Segment(path, entry.base)
            self._load_segment(segment, entry, exact[i], is_last)
            segments.append(segment)
        if entries != manifest.segments:
            sealed = [SegmentEntry(s.base, s.count, s.size) for s in segments[:-1]]
            Manifest([*sealed, SegmentEntry(segments[-1].base, 0, 0)]).save(self.directory)
        return segments

    def _as_copied(self, entries: list[SegmentEntry], exact: list[bool], files: dict[int, Path]) -> None:
        """Accept the two shapes a copy taken while the server ran may have (see manifest.py).

        Only after no clean stop: rolls after the manifest was copied leave later segment files
        it does not list (each a lower bound now); a manifest copied after a roll may record a
        sealed segment longer than its copy, when every later segment's copy is still empty.
        """
        for base in sorted(b for b in files if b > entries[-1].base):
            log.warning(
                "stream %r: %s is newer than %s (a live copy?)", self.name, files[base].name, MANIFEST_FILE
            )
            entries.append(SegmentEntry(base, 0, 0))
            exact.append(False)
        sizes = [files[e.base].stat().st_size if e.base in files else 0 for e in entries]
        last = max((i for i, size in enumerate(sizes) if size), default=0)
        if last < len(entries) - 1 and sizes[last] < entries[last].size:
            log.warning(
                "stream %r: %s is shorter than %s records and no later segment holds a record "
                "(a live copy?): it is the active segment again",
                self.name,
                files[entries[last].base].name,
                MANIFEST_FILE,
            )
            for later in entries[last + 1 :]:
                if later.base in files:
                    files.pop(later.base).unlink()
            del entries[last + 1 :], exact[last + 1 :]
            entries[last], exact[last] = SegmentEntry(entries[last].base, 0, 0), False

    def _remove_retention_leftovers(self, files: dict[int, Path], first_base: int) -> None:
        """Segments below the manifest's first: retention forgot them and stopped before deleting."""
        for base in sorted(b for b in files if b < first_base):
            path = files.pop(base)
            path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
            path.unlink()
            log.info("stream %r: removed %s, which retention had already dropped", self.name, path.name)

    def _segments_without_manifest(self, files: dict[int, Path]) -> list[Segment]:
        """A stream of the previous format: the files as found, which must be contiguous."""
        paths = sorted(files.items())
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
            self._load_segment(segment, None, False, is_last=i == len(paths) - 1)
            segments.append(segment)
        return segments

    def _load_segment(self, segment: Segment, entry: SegmentEntry | None, exact: bool, is_last: bool) -> None:
        """Fill a segment's arrays from its persisted index, scanning only what the index lacks.

        A segment must hold at least what its manifest entry records (`exact`: no more
        either) and match its index, or scan clean; the last segment may have a torn tail
        beyond what its entry records, which is cut away and logged.
        """
        file_size = segment.path.stat().st_size
        if entry is not None and (file_size < entry.size or (exact and file_size != entry.size)):
            raise StreamCorrupt(
                f"{segment.path.name} holds {file_size} bytes, {MANIFEST_FILE} records "
                f"{entry.size}: records from sequence {entry.base} on may be lost"
            )
        index = self._index_of(segment, entry)
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
        # Only an unclean stop's tail may hold a torn batch; before it, a batch a repair split
        # is kept as it is.
        batches_torn_from = 0 if entry is None else entry.size if is_last else sys.maxsize
        result = scan_records(segment, data, start, self.names.by_name, self.keys, batches_torn_from)
        kept_enough = entry is None or (result.valid_end >= entry.size and segment.count >= entry.count)
        if result.damage is None and kept_enough:
            if not is_last:
                self._write_index(segment)
            return
        where = f"{segment.path.name} at byte {result.valid_end}"
        if not is_last or not result.damage_is_tail or not kept_enough:
            lost = f"sequence {segment.end_sequence} on"
            raise StreamCorrupt(
                f"damage before the end of the log in {where}: {result.damage or 'records missing'}; "
                f"records from {lost} unreadable"
            )
        dropped = file_size - result.valid_end
        kept = keep_aside(
            self.directory, segment.path.name, result.valid_end, data[result.valid_end - start :]
        )
        log.warning(
            "stream %r: cut torn tail of %s: %s (%d bytes, kept in %s)",
            self.name,
            where,
            result.damage,
            dropped,
            kept,
        )
        os.truncate(segment.path, result.valid_end)
        fsync_file(segment.path)

    def _index_of(self, segment: Segment, entry: SegmentEntry | None) -> LoadedIndex | None:
        """The segment's persisted index, or None when it is missing, unusable or disagrees with
        the manifest (then: a scan, which rebuilds it)."""
        path = segment.path.with_suffix(INDEX_SUFFIX)
        try:
            index = decode_index(path.read_bytes(), segment.base)
        except FileNotFoundError:
            if entry is not None and entry.count:
                log.warning("stream %r: index %s is missing; rescanning the segment", self.name, path.name)
            return None
        except (IndexUnusable, ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("stream %r: index %s unusable (%s); rescanning", self.name, path.name, exc)
            return None
        if entry is not None and index.size < entry.size:
            log.warning("stream %r: index %s ends before its manifest entry", self.name, path.name)
            return None
        return index

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
