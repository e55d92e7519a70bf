"""Consistent copy of a data directory while a server may be appending (`logserver backup`).

Segments are append-only, so a copy taken after an append finished holds it; the consumer
checkpoint is copied *before* the segments, so it never points past the copied data
(DURABILITY.md rule 5); a torn last record in the copy is cut by recovery. Runs in one
thread; reads the live directory without its lock, so it relies only on the writers' order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .atomic_file import fsync_directory, fsync_file
from .checkpoint import ACK_LOG_FILE, CHECKPOINT_FILE
from .maintenance import segment_paths, stream_directories
from .manifest import MANIFEST_FILE, Manifest
from .metadata import METADATA_FILE
from .segment import INDEX_SUFFIX, segment_file_name


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
        # The segments are listed before the manifest is copied, so the manifest names every
        # listed one (a roll meanwhile adds an empty one to recreate) and each sealed one is
        # complete when copied; segments retention deleted meanwhile leave its list (below).
        segments = [p.name for _, p in segment_paths(directory)]
        names = [METADATA_FILE, ACK_LOG_FILE, CHECKPOINT_FILE, MANIFEST_FILE]
        names += [p.name for p in sorted(directory.glob(f"*{INDEX_SUFFIX}"))]
        names += segments
        for name in names:
            try:
                shutil.copy2(directory / name, target / name)
            except FileNotFoundError:
                continue  # no checkpoint yet, or a file removed while we copied
            copied += (target / name).stat().st_size
        _forget_segments_retention_deleted(target)
        _fsync_tree(target)
    _fsync_tree(destination)
    if (destination / "streams").exists():
        fsync_directory(destination / "streams")
    return copied


def _forget_segments_retention_deleted(copy: Path) -> None:
    """Drop the copied manifest's first entries whose files retention deleted during the copy."""
    try:
        manifest = Manifest.load(copy)
    except (OSError, ValueError):
        return  # damaged at the source too: the copy reports it as the source would
    if manifest is None:
        return
    entries = manifest.segments
    while len(entries) > 1 and not (copy / segment_file_name(entries[0].base)).exists():
        del entries[0]
    manifest.save(copy)


def _fsync_tree(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_file():
            fsync_file(entry)
    fsync_directory(directory)
