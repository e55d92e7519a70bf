"""Settings of the file engine, independent of how they were given (flags, env, tests)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from logserver.engine import EngineLimits


class FsyncPolicy(enum.Enum):
    """When appended bytes are forced to disk; every mode hands them to the OS before answering."""

    ALWAYS = "always"  # group commit: an append completes after its fsync
    INTERVAL = "interval"  # a background task fsyncs dirty files every `fsync_interval_ms`
    NEVER = "never"  # the OS decides; a process kill still loses nothing written


@dataclass(frozen=True)
class StorageConfig:
    """The file engine's settings; `limits` are the API's, the same for every engine."""

    data_dir: Path
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 200
    segment_bytes: int = 64 * 1024 * 1024
    # Defaults for every stream (a stream's own limits win); None keeps everything.
    retention_max_age_seconds: float | None = None
    retention_max_bytes: int | None = None
    retention_check_seconds: float = 60.0
    max_open_sealed_segments: int = 256  # read descriptors of sealed segments, all streams together
    limits: EngineLimits = field(default_factory=EngineLimits)
