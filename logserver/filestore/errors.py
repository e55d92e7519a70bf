"""How the file engine reports OS failures: the errno -> engine-error mapping, in one place."""

from __future__ import annotations

import errno
import os

from logserver.engine import EngineError, StorageFull, StorageIOError


class DataDirInUse(EngineError):
    """Another process holds the data directory's lock (a server, or a repair)."""


def storage_error(exc: OSError, what: str) -> StorageFull | StorageIOError:
    """The engine error for an OSError raised while doing `what` (ENOSPC/EDQUOT: disk full)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: disk full")
    return StorageIOError(f"{what}: {os.strerror(exc.errno or 0)}")
