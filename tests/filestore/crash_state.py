"""The files a crash leaves: no clean-stop record of the active segment's end."""

from __future__ import annotations

from pathlib import Path

from logserver.filestore.manifest import Manifest, SegmentEntry


def forget_clean_stop(directory: Path) -> None:
    """Make a cleanly closed stream look killed: the active segment's index (written at a clean
    stop) gone and its manifest entry back to what its roll recorded (no records)."""
    manifest = Manifest.load(directory)
    assert manifest is not None
    active = manifest.active
    manifest.segments[-1] = SegmentEntry(active.base, 0, 0)
    manifest.clean = False
    manifest.save(directory)
    (directory / f"{active.base:020d}.idx").unlink(missing_ok=True)
