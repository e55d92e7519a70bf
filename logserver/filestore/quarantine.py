"""quarantine/: where bytes the server or a repair takes out of a stream's files are kept.

Nothing is destroyed: a torn tail cut at start, and every file `logserver check --repair`
replaces, is kept here as found, for a person to inspect (and delete).
"""

from __future__ import annotations

from pathlib import Path

from .atomic_file import replace_atomically

QUARANTINE_DIR = "quarantine"


def keep_aside(directory: Path, file_name: str, offset: int, data: bytes) -> Path:
    """Keep `data`, cut from `file_name` at byte `offset`, under the stream's quarantine/."""
    quarantine = directory / QUARANTINE_DIR
    quarantine.mkdir(exist_ok=True)
    target = quarantine / f"{file_name}.from-byte-{offset}"
    n = 1
    while target.exists():
        target = quarantine / f"{file_name}.from-byte-{offset}.{n}"
        n += 1
    replace_atomically(target, data)
    return target
