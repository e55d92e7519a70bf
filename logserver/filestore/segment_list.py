"""SegmentList: one stream's segments in order, and which one holds a sequence."""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise

from .segment import Segment


class SegmentList:
    """The segments of one stream, oldest first; the last is the active one.

    Invariant: bases ascend; each segment starts where the previous ends, or above it where a
    repair skipped sequences (a gap: never served, never reused). Event-loop only; the stream
    log changes it (a roll appends, retention drops the oldest).
    """

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self._bases = [s.base for s in segments]

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def first_sequence(self) -> int:
        return self.segments[0].base

    @property
    def size(self) -> int:
        """Bytes of all segments."""
        return sum(segment.size for segment in self.segments)

    def append(self, segment: Segment) -> None:
        """A new active segment (a roll)."""
        self.segments.append(segment)
        self._bases.append(segment.base)

    def drop_oldest(self, count: int) -> list[Segment]:
        """Forget the `count` oldest segments, never the active one; returns them."""
        assert count < len(self.segments)
        gone = self.segments[:count]
        del self.segments[:count]
        del self._bases[:count]
        return gone

    def holding(self, sequence: int) -> Segment:
        """The segment whose range starts at or before `sequence` (it holds it unless in a gap)."""
        return self.segments[bisect_right(self._bases, sequence) - 1]

    def holds(self, sequence: int) -> bool:
        """Whether a sequence in [first_sequence, next_sequence) is stored (not lost to damage)."""
        return sequence < self.holding(sequence).end_sequence

    def next_held(self, sequence: int) -> int:
        """`sequence`, or the first stored one after it when a repair skipped it."""
        i = bisect_right(self._bases, sequence) - 1
        if i >= 0 and sequence >= self.segments[i].end_sequence and i + 1 < len(self.segments):
            return self.segments[i + 1].base
        return sequence

    @property
    def skipped_count(self) -> int:
        """How many sequences between the first and the next were lost to damage and skipped."""
        return sum(b.base - a.end_sequence for a, b in pairwise(self.segments))
