"""The storage engine: streams of checksummed JSON-lines segments under one data directory.

It knows nothing of HTTP. `EventStore` is its whole public surface; the
modules below it each do one job (Kafka's Log -> LogSegment -> OffsetIndex).
"""

from .config import FsyncPolicy, StorageConfig
from .store import EventStore

__all__ = ["EventStore", "FsyncPolicy", "StorageConfig"]
