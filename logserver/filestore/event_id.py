"""Event ids: UUIDv8 strings that carry the stream's epoch prefix and the event's sequence.

Layout (RFC 9562 UUIDv8, 122 free bits): the 64-bit random epoch prefix fills
the 48 + 12 bits around the version nibble and the 4 bits after the variant;
the remaining 58 bits hold the sequence. A lookup therefore needs no per-event
map: the prefix names an epoch of the stream, the sequence the record.
A new epoch (new random prefix) starts whenever a process first appends to a
stream, so a restored backup never reissues an id the original server gave out.
"""

from __future__ import annotations

import re

from logserver.engine import MAX_SEQUENCE

SEQUENCE_BITS = 58
assert MAX_SEQUENCE == (1 << SEQUENCE_BITS) - 1
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def format_event_id(prefix: int, sequence: int) -> str:
    value = (
        ((prefix >> 16) << 80)
        | (0x8 << 76)
        | (((prefix >> 4) & 0xFFF) << 64)
        | (0b10 << 62)
        | ((prefix & 0xF) << SEQUENCE_BITS)
        | sequence
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_event_id(text: str) -> tuple[int, int] | None:
    """(epoch prefix, sequence), or None when `text` is not an id this server could have made."""
    if len(text) != 36 or _CANONICAL.fullmatch(text) is None:
        return None
    value = int(text.replace("-", ""), 16)  # uuid.UUID costs several times more per ack
    if (value >> 76) & 0xF != 0x8 or (value >> 62) & 0b11 != 0b10:
        return None
    prefix = ((value >> 80) << 16) | (((value >> 64) & 0xFFF) << 4) | ((value >> SEQUENCE_BITS) & 0xF)
    return prefix, value & MAX_SEQUENCE


class EventIdFormatter:
    """`format_event_id` for one epoch: below 2**48 a sequence only changes the last 12 hex
    digits, so the other 24 characters are formatted once."""

    def __init__(self, prefix: int) -> None:
        self.prefix = prefix
        self._head = format_event_id(prefix, 0)[:24]

    def __call__(self, sequence: int) -> str:
        if sequence < 1 << 48:
            return f"{self._head}{sequence:012x}"
        return format_event_id(self.prefix, sequence)
