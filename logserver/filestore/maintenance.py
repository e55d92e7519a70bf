"""Offline verify and repair of a data directory (`logserver check [--repair]`).

`check` reads every file of every stream: each record of each segment against the
manifest (start-up only reads indexes and the active segment's tail), each persisted
index, the metadata and the consumer checkpoint. `--repair` keeps every record that
passes its checksum with its sequence (each intact run becomes a segment of its own; the
lost sequences become a gap the manifest records, never reused), rebuilds meta.json from
the records and the consumer positions from what passes its checksum, and never destroys
bytes: every file it replaces is moved as found under `<stream>/quarantine/`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .atomic_file import fsync_directory, replace_atomically
from .checkpoint import ACK_LOG_FILE, CHECKPOINT_FILE, CheckpointDamaged, ConsumerCheckpoint
from .event_id import parse_event_id
from .manifest import MANIFEST_FILE, Manifest, SegmentEntry
from .metadata import METADATA_FILE, Epoch, StreamMetadata
from .quarantine import QUARANTINE_DIR
from .record import check_line
from .scan import scan_records
from .segment import INDEX_SUFFIX, Segment, base_of, segment_file_name
from .segment_index import IndexUnusable, decode_index


@dataclass
class StreamReport:
    """What `check` found in one stream directory, and what `--repair` did about it."""

    directory: Path
    events: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)  # problems a repair could not fix

    @property
    def damaged(self) -> bool:
        """Whether the stream is still refused: problems, and no repair that fixed them all."""
        return bool(self.problems) and (not self.repairs or bool(self.unrepaired))


@dataclass
class Piece:
    """An intact run of records in one segment file: bytes [start, end), sequences from base."""

    base: int
    start: int
    end: int
    count: int

    @property
    def end_sequence(self) -> int:
        return self.base + self.count


@dataclass
class FileScan:
    """One segment file read record by record: its intact pieces and its damaged byte ranges."""

    path: Path
    data: bytes
    pieces: list[Piece]
    damaged: list[tuple[int, int, str]]  # [start, end) and what was wrong there


def stream_directories(data_dir: Path) -> list[Path]:
    streams = data_dir / "streams"
    if not streams.is_dir():
        return []
    return sorted(p for p in streams.iterdir() if p.is_dir() and not p.name.startswith("."))


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    return sorted((b, p) for p in directory.iterdir() if (b := base_of(p)) is not None)


def scan_file(path: Path, base: int, tail_from: int | None) -> FileScan:
    """Every intact record of a segment file, resynchronising after each damaged stretch.

    `tail_from`: the byte from which a torn tail is an unclean stop's (the active segment's
    end in the manifest), where a batch cut short is dropped whole; None for a sealed one.
    """
    data = path.read_bytes()
    scan = FileScan(path, data, [], [])
    pos, expected = 0, base
    while pos < len(data):
        segment = Segment(path, expected)
        result = scan_records(segment, data[pos:], 0, {}, whole_batches_from=sys.maxsize)
        bad = pos + result.valid_end
        if result.damage is not None and result.damage_is_tail and tail_from is not None and bad >= tail_from:
            segment = Segment(path, expected)  # an unclean stop's torn tail: batches all or nothing
            result = scan_records(segment, data[pos:], 0, {}, whole_batches_from=max(tail_from - pos, 0))
            bad = pos + result.valid_end
        if segment.count:
            scan.pieces.append(Piece(expected, pos, bad, segment.count))
        if result.damage is None:
            break
        resumed = _next_intact_record(data, bad, segment.end_sequence)
        scan.damaged.append((bad, len(data) if resumed is None else resumed[0], result.damage))
        if resumed is None:
            break
        pos, expected = resumed
    return scan


def _next_intact_record(data: bytes, after: int, least_sequence: int) -> tuple[int, int] | None:
    """(offset, sequence) of the first record past the damage at `after` that passes its checksum."""
    newline = data.find(b"\n", after)
    while newline >= 0:
        start = newline + 1
        newline = data.find(b"\n", start)
        line = data[start : newline if newline >= 0 else len(data)]
        if newline >= 0 and check_line(line):
            try:
                sequence = orjson.loads(line)["sequence"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if isinstance(sequence, int) and sequence >= least_sequence:
                return start, sequence
    return None


def check_stream(directory: Path, repair: bool) -> StreamReport:
    """Verify one stream's every file; with `repair`, fix what was found, keeping intact data."""
    report = StreamReport(directory)
    metadata = _check_metadata(directory, report)
    manifest = _check_manifest(directory, metadata, report)
    scans, segments_damaged = _check_segments(directory, manifest, report, repair)
    checkpoint_damaged = _check_checkpoint(directory, report)
    if repair and report.problems:
        quarantine = _quarantine_dir(directory)
        if segments_damaged or manifest is None:
            _repair_segments(directory, manifest, scans, quarantine, report)
        if metadata is None:
            _rebuild_metadata(directory, quarantine, report)
        if checkpoint_damaged:
            _rebuild_checkpoint(directory, quarantine, report)
        fsync_directory(directory)
    return report


def _check_metadata(directory: Path, report: StreamReport) -> StreamMetadata | None:
    try:
        return StreamMetadata.load(directory)
    except FileNotFoundError:
        report.problems.append(f"{METADATA_FILE} is missing: owner and id epochs unknown")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{METADATA_FILE} is damaged ({exc}): owner and id epochs unknown")
    return None


def _check_manifest(
    directory: Path, metadata: StreamMetadata | None, report: StreamReport
) -> Manifest | None:
    try:
        manifest = Manifest.load(directory)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{MANIFEST_FILE} is damaged ({exc}): which segments exist is unknown")
        return None
    if manifest is None and (metadata is None or not metadata.legacy):
        report.problems.append(f"{MANIFEST_FILE} is missing: which segments exist is unknown")
    return manifest


def _check_segments(
    directory: Path, manifest: Manifest | None, report: StreamReport, repair: bool
) -> tuple[list[FileScan], bool]:
    """Scan every segment file against the manifest; also whether any record is lost or damaged."""
    files = dict(segment_paths(directory))
    entries = {e.base: e for e in manifest.segments} if manifest is not None else {}
    first = manifest.segments[0].base if manifest is not None else 0
    active = manifest.active if manifest is not None else None
    scans: list[FileScan] = []
    before = len(report.problems)
    last_end: int | None = None
    for base, path in sorted(files.items()):
        if base < first:
            continue  # a retention that stopped before deleting it; the next start deletes it
        entry = entries.get(base)
        is_active = (active is not None and base == active.base) or (manifest is None and base == max(files))
        scan = scan_file(path, base, (active.size if active is not None else 0) if is_active else None)
        scans.append(scan)
        report.segments += 1
        report.events += sum(p.count for p in scan.pieces)
        for start, end, damage in scan.damaged:
            report.problems.append(f"{path.name} bytes {start}-{end}: {damage}")
        held = scan.pieces[-1].end_sequence if scan.pieces else base
        if manifest is not None and entry is None:
            report.problems.append(f"{path.name} is not in {MANIFEST_FILE}")
        elif entry is not None and held < entry.end_sequence:
            report.problems.append(
                f"{path.name} holds records up to {held - 1}, {MANIFEST_FILE} records up to "
                f"{entry.end_sequence - 1}: sequences {held}-{entry.end_sequence - 1} lost"
            )
        elif entry is not None and not is_active and len(scan.data) != entry.size:
            report.problems.append(
                f"{path.name} holds {len(scan.data)} bytes, {MANIFEST_FILE} records {entry.size}"
            )
        if manifest is None and last_end is not None and base != last_end:
            report.problems.append(f"{path.name} starts at {base}, expected {last_end} (records missing)")
        last_end = held
    for entry in manifest.segments if manifest is not None else []:
        if entry.base not in files and entry.count:
            report.problems.append(
                f"{segment_file_name(entry.base)} is missing: sequences "
                f"{entry.base}-{entry.end_sequence - 1} lost"
            )
    damaged = len(report.problems) > before
    for scan in scans:
        if not scan.damaged:
            _check_index(scan, report, repair)
    return scans, damaged


def _check_index(scan: FileScan, report: StreamReport, repair: bool) -> None:
    """A persisted index must describe the segment's records (it is rebuilt when removed)."""
    index_path = scan.path.with_suffix(INDEX_SUFFIX)
    if not index_path.exists() or not scan.pieces:
        return
    piece = scan.pieces[0]
    segment = Segment(scan.path, piece.base)
    scan_records(segment, scan.data, 0, {})
    try:
        index = decode_index(index_path.read_bytes(), piece.base)
    except (IndexUnusable, ValueError, KeyError) as exc:
        problem = f"{index_path.name}: unusable ({exc}); rebuilt from the segment at the next start"
    else:
        count = len(index.offsets)
        if index.size <= segment.size and index.offsets == segment.offsets[:count]:
            return
        problem = f"{index_path.name}: does not match the segment's records"
    report.problems.append(problem)
    if repair:
        index_path.unlink()  # only an accelerator: the next start rescans and rewrites it
        report.repairs.append(f"removed {index_path.name} (rebuilt at the next start)")


def _check_checkpoint(directory: Path, report: StreamReport) -> bool:
    """Load the consumer checkpoint from a copy (loading may cut a torn tail); True if damaged."""
    with tempfile.TemporaryDirectory() as scratch:
        for name in (CHECKPOINT_FILE, ACK_LOG_FILE):
            if (directory / name).exists():
                shutil.copyfile(directory / name, Path(scratch) / name)
        try:
            ConsumerCheckpoint.load(Path(scratch) / CHECKPOINT_FILE, False)
        except CheckpointDamaged as exc:
            report.problems.append(str(exc))
            return True
    return False


def _quarantine_dir(directory: Path) -> Path:
    quarantine = directory / QUARANTINE_DIR
    quarantine.mkdir(exist_ok=True)
    return quarantine


def _set_aside(path: Path, quarantine: Path) -> Path:
    """Move a damaged file under quarantine/ (never overwriting an earlier one); returns where."""
    target = quarantine / path.name
    n = 1
    while target.exists():
        target = quarantine / f"{path.name}.{n}"
        n += 1
    os.replace(path, target)
    return target


def _repair_segments(
    directory: Path, manifest: Manifest | None, scans: list[FileScan], quarantine: Path, report: StreamReport
) -> None:
    """Keep every intact piece as a segment of its own; the lost sequences become a gap."""
    if manifest is None and (directory / MANIFEST_FILE).exists():
        kept_aside = _set_aside(directory / MANIFEST_FILE, quarantine)
        report.repairs.append(f"moved {MANIFEST_FILE} to {kept_aside}; rebuilt from the segment files")
    pieces: list[tuple[Piece, FileScan]] = []
    for scan in scans:
        for piece in scan.pieces:
            if pieces and piece.base < pieces[-1][0].end_sequence:
                report.repairs.append(
                    f"dropped records {piece.base}-{piece.end_sequence - 1} of {scan.path.name}: "
                    "they repeat sequences already kept"
                )
                continue
            pieces.append((piece, scan))
    for scan in scans:
        whole = len(scan.pieces) == 1 and scan.pieces[0].start == 0 and scan.pieces[0].end == len(scan.data)
        if not whole:
            kept_aside = _set_aside(scan.path, quarantine)
            scan.path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
            report.repairs.append(f"moved {scan.path.name} to {kept_aside} ({len(scan.data)} bytes as found)")
    entries: list[SegmentEntry] = []
    for piece, scan in pieces:
        path = directory / segment_file_name(piece.base)
        if not path.exists():
            replace_atomically(path, scan.data[piece.start : piece.end])
            report.repairs.append(f"kept records {piece.base}-{piece.end_sequence - 1} in {path.name}")
        entries.append(SegmentEntry(piece.base, piece.count, piece.end - piece.start))
    recorded_end = manifest.active.end_sequence if manifest is not None else 1
    end = max(recorded_end, entries[-1].end_sequence if entries else 1)
    if not entries or entries[-1].end_sequence < end:
        replace_atomically(directory / segment_file_name(end), b"")  # appends go on after the lost
        entries.append(SegmentEntry(end, 0, 0))
    Manifest(entries, clean=True).save(directory)
    skipped = Manifest(entries).skipped()
    if manifest is not None and entries[0].base > manifest.segments[0].base:
        skipped.insert(0, (manifest.segments[0].base, entries[0].base))
    lost = ", ".join(f"{a}-{b - 1}" for a, b in skipped) or "none"
    report.repairs.append(f"wrote {MANIFEST_FILE}; sequences lost and skipped (never reused): {lost}")


def _rebuild_metadata(directory: Path, quarantine: Path, report: StreamReport) -> None:
    """meta.json from the records: the stream's name and owner, its id epochs, its creation time."""
    first: dict[str, object] | None = None
    epochs: list[Epoch] = []
    for _, path in segment_paths(directory):
        for line in path.read_bytes().splitlines():
            if not check_line(line):
                continue
            record = orjson.loads(line)
            first = first or record
            parsed = parse_event_id(str(record.get("eventId")))
            if parsed is not None and (not epochs or epochs[-1].prefix != parsed[0]):
                epochs.append(Epoch(parsed[0], parsed[1]))
    if first is None:
        report.unrepaired.append(f"{METADATA_FILE} cannot be rebuilt: no record names the stream's owner")
        return
    if (directory / METADATA_FILE).exists():
        report.repairs.append(f"moved {METADATA_FILE} to {_set_aside(directory / METADATA_FILE, quarantine)}")
    name, owner, created_at = str(first["stream"]), str(first["producerId"]), str(first["receivedAt"])
    StreamMetadata(name, owner, created_at, epochs).save(directory)
    report.repairs.append(
        f"rebuilt {METADATA_FILE} from the records: owner {owner!r}, {len(epochs)} id epochs, created "
        f"{created_at} (its first kept record); the stream's own retention limits, if any, must be set again"
    )


def _rebuild_checkpoint(directory: Path, quarantine: Path, report: StreamReport) -> None:
    """Consumer positions from what passes its checksum; anything lost is delivered again."""
    checkpoint, dropped = ConsumerCheckpoint.rebuild(directory / CHECKPOINT_FILE, True)
    for name in (CHECKPOINT_FILE, ACK_LOG_FILE):
        if (directory / name).exists():
            report.repairs.append(f"moved {name} to {_set_aside(directory / name, quarantine)}")
    checkpoint.compact_now()
    report.repairs.extend(dropped)
    report.repairs.append(
        f"rebuilt consumer positions of {len(checkpoint.positions)} consumers from what passed its "
        "checksum; events whose acks were lost are delivered again"
    )


def check_data_dir(data_dir: Path, repair: bool = False) -> list[StreamReport]:
    return [check_stream(d, repair) for d in stream_directories(data_dir)]
