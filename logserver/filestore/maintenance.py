"""Offline tools over a data directory: verify/repair (`logserver check`) and consistent backup.

`check` reads every record of every segment (start-up only reads indexes and
the active segment's tail) and compares each persisted index with the records.
`--repair` truncates a damaged log at its first bad record, but never destroys
bytes: what is cut is moved under `<stream>/quarantine/` for a person to inspect.

`backup` copies while a server may be appending. Segments are append-only, so
a copy taken after an append finished holds it; the consumer checkpoint is
copied *before* the segments, so it never points past the copied data
(DURABILITY.md rule 5); a torn last record in the copy is cut by recovery.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .atomic_file import fsync_directory, fsync_file
from .checkpoint import ACK_LOG_FILE, CHECKPOINT_FILE
from .metadata import METADATA_FILE
from .scan import scan_records
from .segment import INDEX_SUFFIX, Segment, base_of
from .segment_index import IndexUnusable, decode_index

QUARANTINE_DIR = "quarantine"


@dataclass
class StreamReport:
    """What `check` found in one stream directory, and what `--repair` did about it."""

    directory: Path
    events: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)


def stream_directories(data_dir: Path) -> list[Path]:
    streams = data_dir / "streams"
    if not streams.is_dir():
        return []
    return sorted(p for p in streams.iterdir() if p.is_dir() and not p.name.startswith("."))


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    return sorted((b, p) for p in directory.iterdir() if (b := base_of(p)) is not None)


def check_stream(directory: Path, repair: bool) -> StreamReport:
    report = StreamReport(directory)
    if not (directory / METADATA_FILE).exists():
        report.problems.append("meta.json is missing")
    paths = segment_paths(directory)
    report.segments = len(paths)
    expected: int | None = None
    for i, (base, path) in enumerate(paths):
        if expected is not None and base != expected:
            report.problems.append(f"{path.name}: starts at {base}, expected {expected} (records missing)")
            if repair:
                _quarantine_from(directory, paths[i:], report)
            return report
        segment = Segment(path, base)
        data = path.read_bytes()
        result = scan_records(segment, data, 0, {})
        report.events += segment.count
        expected = segment.end_sequence
        if result.damage is not None:
            report.problems.append(f"{path.name} at byte {result.valid_end}: {result.damage}")
            if repair:
                _cut(directory, path, data, result.valid_end, report)
                _quarantine_from(directory, paths[i + 1 :], report)
            return report
        _check_index(segment, path, report, repair)
    return report


def _check_index(segment: Segment, path: Path, report: StreamReport, repair: bool) -> None:
    index_path = path.with_suffix(INDEX_SUFFIX)
    if not index_path.exists():
        return  # optional: rebuilt at start
    try:
        index = decode_index(index_path.read_bytes(), segment.base)
    except (IndexUnusable, ValueError, KeyError) as exc:
        problem = f"{index_path.name}: unusable ({exc})"
    else:
        count = len(index.offsets)
        if index.size <= segment.size and index.offsets == segment.offsets[:count]:
            return
        problem = f"{index_path.name}: does not match the segment's records"
    report.problems.append(problem)
    if repair:
        index_path.unlink()
        report.repairs.append(f"removed {index_path.name} (rebuilt at next start)")


def _cut(directory: Path, path: Path, data: bytes, keep: int, report: StreamReport) -> None:
    quarantine = directory / QUARANTINE_DIR
    quarantine.mkdir(exist_ok=True)
    kept_aside = quarantine / f"{path.name}.from-byte-{keep}"
    kept_aside.write_bytes(data[keep:])
    os.truncate(path, keep)
    path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
    report.repairs.append(f"truncated {path.name} to {keep} bytes; {len(data) - keep} bytes in {kept_aside}")


def _quarantine_from(directory: Path, later: list[tuple[int, Path]], report: StreamReport) -> None:
    if not later:
        return
    quarantine = directory / QUARANTINE_DIR
    quarantine.mkdir(exist_ok=True)
    for _, path in later:
        os.replace(path, quarantine / path.name)
        path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)
        report.repairs.append(f"moved {path.name} (after the damage) to {quarantine}")


def check_data_dir(data_dir: Path, repair: bool = False) -> list[StreamReport]:
    reports = [check_stream(d, repair) for d in stream_directories(data_dir)]
    if repair:
        for report in reports:
            if report.repairs:
                fsync_directory(report.directory)
    return reports


def backup(data_dir: Path, destination: Path) -> int:
    """Copy `data_dir` to `destination` (which must not exist); returns bytes copied."""
    if destination.exists():
        raise FileExistsError(f"{destination} already exists")
    copied = 0
    destination.mkdir(parents=True)
    for entry in sorted(data_dir.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            shutil.copy2(entry, destination / entry.name)  # users file and the like
    for directory in stream_directories(data_dir):
        target = destination / "streams" / directory.name
        target.mkdir(parents=True)
        # Order matters: metadata and checkpoint first (its ack log before its snapshot, which a
        # compaction in between makes cover the log), then indexes, then segments oldest first.
        names = [METADATA_FILE, ACK_LOG_FILE, CHECKPOINT_FILE]
        names += [p.name for p in sorted(directory.glob(f"*{INDEX_SUFFIX}"))]
        names += [p.name for _, p in segment_paths(directory)]
        for name in names:
            try:
                shutil.copy2(directory / name, target / name)
            except FileNotFoundError:
                continue  # no checkpoint yet, or a file removed while we copied
            copied += (target / name).stat().st_size
        _fsync_tree(target)
    _fsync_tree(destination)
    if (destination / "streams").exists():
        fsync_directory(destination / "streams")
    return copied


def _fsync_tree(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_file():
            fsync_file(entry)
    fsync_directory(directory)
