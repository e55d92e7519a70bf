"""One event on disk: a JSON line whose first member is a CRC-32 of the rest of the line.

    {"_crc":"1c291ca3","eventId":"…","stream":"…","sequence":7,…}\\n
    |<---- 19 bytes --->|<------- covered by the CRC ------------>|

The line stays valid JSON (so a segment is a JSON-lines file a person can read
with jq), the checksum lets recovery tell a good record from a torn, zero-filled
or garbage one, and a reader serves `{` + the covered bytes as the event without
re-encoding. zlib's CRC-32 is used because it is in the standard library and
runs at memory speed; it detects every burst error up to 32 bits.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

PREFIX = b'{"_crc":"'
PREFIX_LEN = len(PREFIX) + 8 + 2  # prefix, 8 hex digits, '",'
SERVER_FIELDS = frozenset(("_crc", "eventId", "stream", "sequence", "producerId", "receivedAt"))


class DamagedRecord(ValueError):
    """A line that fails its checksum or does not parse."""


def encode_record(server_fields: dict[str, Any], body: dict[str, Any]) -> bytes:
    """The line for one event; server fields win over same-named keys of the body."""
    fields = dict(server_fields)
    for key, value in body.items():
        if key not in SERVER_FIELDS:
            fields[key] = value
    rest = orjson.dumps(fields)[1:]
    return b'%s%08x",%s\n' % (PREFIX, zlib.crc32(rest), rest)


def check_line(line: bytes | memoryview) -> bool:
    """True when `line` (without its newline) carries a matching checksum."""
    if len(line) <= PREFIX_LEN or line[: len(PREFIX)] != PREFIX or line[17:19] != b'",':
        return False
    try:
        expected = int(bytes(line[9:17]), 16)
    except ValueError:
        return False
    return zlib.crc32(line[PREFIX_LEN:]) == expected


def decode_line(line: bytes | memoryview) -> dict[str, Any]:
    """The event a verified line holds, as a dict (recovery and tools only; reads copy bytes)."""
    if not check_line(line):
        raise DamagedRecord("checksum mismatch")
    try:
        value = orjson.loads(b"{" + bytes(line[PREFIX_LEN:]))
    except orjson.JSONDecodeError as exc:
        raise DamagedRecord(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DamagedRecord("not a JSON object")
    return value
