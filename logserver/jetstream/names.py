"""How logserver names map onto JetStream names, subjects and KV keys, and the event ids.

JetStream stream names and subject tokens may not hold spaces, '.', '*', '>' or path
separators, and logserver names are free text: so a stream is named by a digest of its
name (its real name is in the streams bucket), an event name by base64url of its UTF-8
bytes (reversible, so per-name counts from the server decode back to names).
"""

from __future__ import annotations

import base64
import hashlib

from logserver.engine import MAX_SEQUENCE

SEQUENCE_BITS = 58
JS_STREAM_PREFIX = "LS_"
EVENT_SUBJECT_ROOT = "ls"
NOTIFY_SUBJECT_ROOT = "lsn"
STREAMS_BUCKET = "logserver-streams"
CONSUMERS_BUCKET = "logserver-consumers"
BATCH_KEYS_BUCKET = "logserver-batch-keys"


def digest(text: str) -> str:
    """A 128-bit hex digest of `text`: a key or subject token for any name."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def name_token(name: str) -> str:
    """A subject token for an event name: base64url of its UTF-8 bytes, no padding."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii")


def name_from_token(token: str) -> str:
    """The event name `name_token` encoded."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")


def format_event_id(prefix: int, sequence: int) -> str:
    """A UUIDv8 of the stream's 64-bit random prefix and the sequence (the file engine's layout:
    the prefix fills the 48 + 12 bits around the version nibble and 4 bits after the variant,
    the sequence the remaining 58 bits)."""
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
    """(prefix, sequence) of an id `format_event_id` made, else None."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        value = int(text.replace("-", ""), 16)
    except ValueError:
        return None
    if (value >> 76) & 0xF != 0x8 or (value >> 62) & 0b11 != 0b10:
        return None
    prefix = ((value >> 80) << 16) | (((value >> 64) & 0xFFF) << 4) | ((value >> SEQUENCE_BITS) & 0xF)
    return prefix, value & MAX_SEQUENCE


class StreamNames:
    """The JetStream names of one logserver stream (immutable; shared freely)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = digest(name)
        self.js_stream = f"{JS_STREAM_PREFIX}{self.key}"
        self.all_events = f"{EVENT_SUBJECT_ROOT}.{self.key}.*"
        self.all_notifications = f"{NOTIFY_SUBJECT_ROOT}.{self.key}.*"

    def subject(self, event_name: str) -> str:
        """Where events of that name are published."""
        return f"{EVENT_SUBJECT_ROOT}.{self.key}.{name_token(event_name)}"

    def notify_subject(self, event_name: str) -> str:
        """Where gateways announce stored events of that name (the long-poll wake-up)."""
        return f"{NOTIFY_SUBJECT_ROOT}.{self.key}.{name_token(event_name)}"

    def consumer_key(self, consumer_id: str, event_name: str) -> str:
        """The consumers-bucket key of one consumer's state for one event name."""
        return f"{self.key}.{digest(consumer_id)}.{digest(event_name)}"

    @property
    def consumer_keys(self) -> str:
        """A KV filter for every consumer key of this stream."""
        return f"{self.key}.>"


def event_name_of_subject(subject: str) -> str:
    """The event name a stored message's subject carries."""
    return name_from_token(subject.rsplit(".", 1)[1])
