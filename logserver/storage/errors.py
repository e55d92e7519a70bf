"""Exceptions the storage engine raises; the HTTP layer maps each to one status code."""

from __future__ import annotations


class StorageError(Exception):
    """Base class: something the caller may report but must not retry blindly."""


class StreamNotFound(StorageError):
    """The stream does not exist (no successful append created it yet)."""


class EventNotFound(StorageError):
    """The event id does not name an event of this stream."""


class StreamLocked(StorageError):
    """The stream is owned by another producer (single-writer rule)."""


class StreamCorrupt(StorageError):
    """Damage before the tail of the log: the stream is refused until `logserver check --repair`."""


class StorageFull(StorageError):
    """The disk is full (ENOSPC); the failed write was rolled back."""


class StorageIOError(StorageError):
    """A write or fsync failed; the affected appends failed and the log was rolled back."""


class InvalidName(StorageError, ValueError):
    """A stream or event name breaks the naming rules (length, control characters, '/')."""


class DataDirInUse(StorageError):
    """Another process holds the data directory's lock (a server, or a repair)."""


class SequenceMismatch(StorageError):
    """An append's expected last sequence is not the stream's (optimistic concurrency)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected sequence {expected}, stream is at {current}")
        self.expected = expected
        self.current = current
