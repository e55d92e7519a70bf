"""One event on disk: a JSON line whose first member is a CRC-32 of the rest of the line.

    {"_crc":"1c291ca3","eventId":"…","stream":"…","sequence":7,…}\\n
    |<---- 19 bytes --->|<------- covered by the CRC ------------>|

The line stays valid JSON (so a segment is a JSON-lines file a person can read
with jq), the checksum lets recovery tell a good record from a torn, zero-filled
or garbage one, and a reader serves `{` + the covered bytes as the event without
re-encoding. zlib's CRC-32 is used because it is in the standard library and
runs at memory speed; it detects every burst error up to 32 bits.

Records of a batch append carry a second fixed-width member after the CRC,
`"_more":"000002",`: how many records of the same batch follow. Recovery cuts
a batch whose last record (`"_more":"000000"`) is missing, so a batch is all
or nothing even when a crash tears it.
"""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

PREFIX = b'{"_crc":"'
CRC_START = len(PREFIX)  # the checksum's 8 hex digits: line[CRC_START:CRC_END]
CRC_END = CRC_START + 8
CRC_SEPARATOR = b'",'
PREFIX_LEN = CRC_END + len(CRC_SEPARATOR)  # the covered bytes start here
MORE_MEMBER = b'"_more":"'
MORE_LEN = len(MORE_MEMBER) + 6 + 2  # member name, 6 digits, '",'
UNDERSCORE = 0x5F  # the first byte of a member name after '"': only "_more" starts with it
MAX_BATCH = 999_999
SERVER_FIELDS = frozenset(
    ("_crc", "_more", "eventId", "stream", "sequence", "producerId", "receivedAt", "idempotencyKey")
)


def rfc3339(moment: datetime) -> str:
    """`receivedAt`'s fixed-width UTC form, so times compare as strings."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UtcClock:
    """`rfc3339(now)` for every append, formatting the date and time once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        moment = time.time()
        second = int(moment)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((moment - second) * 1_000_000):06d}Z"


utc_clock = UtcClock()


def utc_now_rfc3339() -> str:
    """`receivedAt` for a record appended now."""
    return utc_clock.now()


def server_members(
    event_id: str, stream_json: bytes, sequence: int, producer_json: bytes, received_at: str, key: str | None
) -> bytes:
    """The server's members of a record, encoded as orjson would and ending in a comma.

    Built with one bytes format instead of a dict per event: `stream_json` and
    `producer_json` are the names already JSON-encoded, which a stream log does once.
    """
    head = b'"eventId":"%s","stream":%s,"sequence":%d,"producerId":%s,"receivedAt":"%s",' % (
        event_id.encode(),
        stream_json,
        sequence,
        producer_json,
        received_at.encode(),
    )
    if key is not None:
        head += b'"idempotencyKey":%s,' % orjson.dumps(key)
    return head


def encode_record(head: bytes, body: dict[str, Any], more: int | None = None) -> bytes:
    """The line for one event: `head` from `server_members`, then the body's members, of which
    same-named ones lose to the server's.

    `more` marks a batch member: how many records of its batch follow it.
    """
    if SERVER_FIELDS.isdisjoint(body):
        members = orjson.dumps(body)
    else:
        members = orjson.dumps({k: v for k, v in body.items() if k not in SERVER_FIELDS})
    rest = head + members[1:] if len(members) > 2 else head[:-1] + b"}"
    if more is not None:
        rest = b'%s%06d",%s' % (MORE_MEMBER, more, rest)
    return b'%s%08x",%s\n' % (PREFIX, zlib.crc32(rest), rest)


def event_start(line: bytes | memoryview) -> int:
    """Where the event's own members start: after the CRC member, and the batch member if any."""
    return PREFIX_LEN + MORE_LEN if line[PREFIX_LEN + 1] == UNDERSCORE else PREFIX_LEN


def event_members(line: bytes | memoryview) -> memoryview:
    """The event's members of a stored line (newline included), without the opening brace."""
    return memoryview(line)[event_start(line) : -1]


def event_json(line: bytes) -> bytes:
    """The event as GET serves it: `{` and the members, copied once."""
    return b"{" + line[event_start(line) : -1]


def json_array(members: list[bytes | memoryview]) -> bytes:
    """The JSON array of events given as their members without the opening brace.

    The one joiner of every read path: each event's stored bytes are copied once, here.
    """
    if not members:
        return b"[]"
    return b"".join((b"[{", b",{".join(members), b"]"))


def check_line(line: bytes | memoryview) -> bool:
    """True when `line` (without its newline) carries a matching checksum."""
    if len(line) <= PREFIX_LEN or line[:CRC_START] != PREFIX or line[CRC_END:PREFIX_LEN] != CRC_SEPARATOR:
        return False
    try:
        expected = int(bytes(line[CRC_START:CRC_END]), 16)
    except ValueError:
        return False
    return zlib.crc32(line[PREFIX_LEN:]) == expected
