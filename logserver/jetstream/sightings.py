"""Sightings: what this gateway has seen of each stream, to complete reads a lagging replica cut short."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Sightings:
    """Per stream, the highest sequence this gateway saw (in a pub ack, a read, a stream's state
    or a wake-up); per (stream, subject), how far its reads of that subject have looked; and
    how many long-poll readers wait here.

    Invariant: the sequences only grow, and they are hints: a read asks the stream leader for
    more when a replica answers below them, nothing is skipped because of them. Not shared
    with other gateways. Event loop only (no awaits inside: every method is atomic).
    """

    def __init__(self) -> None:
        self._last_seen: dict[str, int] = {}
        # A long-poll that starts later first asks the leader for anything after `covered`
        # (appended between a consume and the wait's subscription, which a wake-up would miss).
        self._covered: dict[tuple[str, str], int] = {}
        self._waiting: dict[str, int] = {}

    def saw(self, stream: str, sequence: int) -> None:
        """Note that `sequence` of `stream` exists."""
        if sequence > self._last_seen.get(stream, 0):
            self._last_seen[stream] = sequence

    def last_seen(self, stream: str) -> int:
        """The highest sequence of `stream` this gateway knows exists (0: none)."""
        return self._last_seen.get(stream, 0)

    def cover(self, stream: str, subject: str, sequence: int) -> None:
        """Note that reads of `subject` have looked up to `sequence`."""
        key = (stream, subject)
        if sequence > self._covered.get(key, 0):
            self._covered[key] = sequence

    def covered(self, stream: str, subject: str) -> int:
        """How far reads of `subject` have looked (0: not at all)."""
        return self._covered.get((stream, subject), 0)

    @contextlib.contextmanager
    def waiting(self, stream: str) -> Iterator[None]:
        """Count one long-poll reader of `stream` while the block runs."""
        self._waiting[stream] = self._waiting.get(stream, 0) + 1
        try:
            yield
        finally:
            self._waiting[stream] -= 1

    def waiting_readers(self, stream: str) -> int:
        """Long-poll readers of `stream` waiting in this gateway now."""
        return self._waiting.get(stream, 0)
