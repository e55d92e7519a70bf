"""NameIndex: per event name, the ascending sequences of that name's events in one stream.

SPEC §3.2's index: compact `array("Q")`s (8 bytes per event), no object per event. A
consume is a binary search into one name's array; an ack finds its event's name with a few
binary searches when the stream has few names.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

# Up to this many event names, `name_of` uses binary searches, not a read of the record.
NAME_SEARCH_LIMIT = 32
_EMPTY: array[int] = array("Q")


class NameIndex:
    """The sequences of every event name of one stream.

    Invariant: each array is ascending and the arrays are disjoint; together they hold
    exactly the stream's stored sequences from its first one on. Event-loop only; the stream
    log is its one writer.
    """

    def __init__(self, by_name: dict[str, array[int]] | None = None) -> None:
        self.by_name: dict[str, array[int]] = by_name if by_name is not None else {}

    def __contains__(self, event_name: str) -> bool:
        return event_name in self.by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def sequences(self, event_name: str) -> array[int]:
        """The name's sequences (an empty array for an unknown name); callers must not change it."""
        return self.by_name.get(event_name, _EMPTY)

    def add(self, names: Iterable[str], first: int) -> None:
        """Index consecutive records from `first` on, of these names."""
        by_name = self.by_name
        for sequence, event_name in enumerate(names, first):
            sequences = by_name.get(event_name)
            if sequences is None:
                sequences = by_name[event_name] = array("Q")
            sequences.append(sequence)

    def extend(self, event_name: str, sequences: array[int]) -> None:
        """Index a run of one name's sequences, all above what it holds (a loaded segment index)."""
        self.by_name.setdefault(event_name, array("Q")).extend(sequences)

    def forget_from(self, sequence: int) -> None:
        """Drop `sequence` and everything after it (a rollback, a cut batch)."""
        for sequences in self.by_name.values():
            del sequences[bisect_left(sequences, sequence) :]

    def forget_before(self, sequence: int) -> None:
        """Drop everything below `sequence` (retention)."""
        for sequences in self.by_name.values():
            del sequences[: bisect_left(sequences, sequence)]

    def count_below(self, event_name: str, end: int) -> int:
        """How many events of that name have a sequence below `end`."""
        return bisect_left(self.sequences(event_name), end)

    def counts_below(self, end: int) -> dict[str, int]:
        """Per name (sorted, names without events left out): events below `end`."""
        return {
            name: n for name, sequences in sorted(self.by_name.items()) if (n := bisect_left(sequences, end))
        }

    def name_of(self, sequence: int) -> str | None:
        """The name whose array holds `sequence`; None when there are too many names to search
        (the caller reads the record instead: a per-event name array would cost bytes per event)."""
        if len(self.by_name) > NAME_SEARCH_LIMIT:
            return None
        for name, sequences in self.by_name.items():
            i = bisect_left(sequences, sequence)
            if i < len(sequences) and sequences[i] == sequence:
                return name
        return None

    def between(self, event_name: str, start: int, end: int) -> Iterator[int]:
        """The name's sequences in [start, end)."""
        sequences = self.sequences(event_name)
        for i in range(bisect_left(sequences, start), bisect_left(sequences, end)):
            yield sequences[i]
