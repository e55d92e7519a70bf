"""StreamCreator: new streams, each created complete or not at all, within the stream limit."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from logserver.engine import SequenceMismatch, StreamLimitReached, check_stream_name

from .atomic_file import fsync_directory
from .errors import storage_error
from .manifest import Manifest, SegmentEntry
from .metadata import StreamMetadata
from .names import stream_dir_name, stream_name_from_dir
from .record import utc_now_rfc3339
from .segment import segment_file_name

if TYPE_CHECKING:
    from .stream import Stream

log = logging.getLogger("logserver.filestore")

_CREATING = ".creating-"


@dataclass(frozen=True)
class DamagedStream:
    """A stream that could not be loaded: its name and why."""

    name: str
    reason: str


class StreamCreator:
    """Creates streams in `streams_dir` and enters them into the store's `streams`.

    Invariant: `streams` never holds more than `max_streams` entries, and a stream enters it
    only once its directory is complete and durable. Event-loop only: one creation at a time
    runs under `_lock` ("count the streams, then create one" can't overshoot); requests for a
    stream another request is creating wait on its future and then append together. Queued on
    the lock instead, they went on one per event-loop iteration while later requests overtook
    them: a pool of 256 connections starting on a new stream waited up to 3 s for its first
    answers (commit 1637c3e).
    """

    def __init__(
        self,
        streams_dir: Path,
        streams: dict[str, Stream | DamagedStream],
        load: Callable[[Path], Stream],
        max_streams: int,
    ) -> None:
        self.streams_dir = streams_dir
        self._streams = streams
        self._load = load
        self._max_streams = max_streams
        self._lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[None]] = {}  # streams being created, by name

    def stream_directories(self) -> list[Path]:
        """The stream directories to open at start; removes interrupted creations (never answered)."""
        found = []
        for entry in sorted(self.streams_dir.iterdir()):
            if entry.name.startswith(_CREATING):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and not entry.name.startswith("."):
                found.append(entry)
        return found

    async def create(self, name: str, owner: str, expected_last: int | None) -> None:
        """Make sure the stream exists: created by this call, or by a racing one (whose owner wins)."""
        while name not in self._streams:
            pending = self._pending.get(name)
            if pending is None:
                await self._create(name, owner, expected_last)
                return
            await asyncio.wait([pending])  # its outcome is the creator's; this one looks again

    async def _create(self, name: str, owner: str, expected_last: int | None) -> None:
        check_stream_name(name)
        if expected_last not in (None, 0):
            raise SequenceMismatch(expected_last, 0)  # nothing is created for a failed guard
        done = self._pending[name] = asyncio.get_running_loop().create_future()
        try:
            async with self._lock:
                if len(self._streams) >= self._max_streams:
                    raise StreamLimitReached(self._max_streams)
                directory = self.streams_dir / stream_dir_name(name)
                metadata = StreamMetadata(name, owner, utc_now_rfc3339())
                try:
                    await asyncio.to_thread(self._build_directory, directory, metadata)
                    stream = await asyncio.to_thread(self._load, directory)
                except OSError as exc:
                    raise storage_error(exc, "stream creation") from exc
                self._streams[name] = stream
                log.info("stream %r created by producer %r", name, owner)
        finally:
            del self._pending[name]
            done.set_result(None)

    def _build_directory(self, directory: Path, metadata: StreamMetadata) -> None:
        """Build the stream's directory under a temporary name, then rename it into place."""
        staging = self.streams_dir / f"{_CREATING}{secrets.token_hex(8)}"
        staging.mkdir()
        try:
            metadata.save(staging)
            Manifest([SegmentEntry(1, 0, 0)], clean=True).save(staging)
            os.close(os.open(staging / segment_file_name(1), os.O_WRONLY | os.O_CREAT, 0o644))
            fsync_directory(staging)
            os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_directory(self.streams_dir)


def name_of_damaged(directory: Path) -> str | None:
    """A refused stream's name: from its metadata if readable, else from its directory name."""
    try:
        return StreamMetadata.load(directory).name
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return stream_name_from_dir(directory.name)
        except UnicodeDecodeError:
            return None
