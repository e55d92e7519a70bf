"""Small durable file operations: atomic replacement (DURABILITY.md rule 2), fsyncs, mkdir -p.

Write a temp file, fsync it, rename it over the target, fsync the directory:
a crash leaves either the old or the new content, never a mix, and once this
returns with `durable=True` the new content survives power loss.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file by path (after a truncate, for a copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(path: Path) -> None:
    """mkdir -p whose new entries survive power loss: each new directory's parent is fsynced."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until every byte is written (a short write is legal on a nearly full disk)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def replace_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, 0)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_directory(path.parent)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted replacements; the target still holds the old content."""
    removed = []
    for entry in directory.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
            entry.unlink()
            removed.append(entry)
    return removed
