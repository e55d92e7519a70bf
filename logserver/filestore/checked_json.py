"""Checksummed JSON files: `{"_crc":"<8 hex>",` + the document's members, like a record.

The CRC-32 covers every byte after the comma, so a flipped byte, an edited value, a cut or
an appended piece all fail it. A file without the `_crc` member was written by a version
that kept none: it is read as long as it parses (`legacy`), and the next write adds one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

_PREFIX = b'{"_crc":"'
_HEAD_LEN = len(_PREFIX) + 8 + 2  # prefix, 8 hex digits, '",'


class ChecksumFailed(ValueError):
    """The file carries a checksum that does not match its bytes, or is not a document at all."""


@dataclass(frozen=True)
class CheckedDocument:
    """A decoded file: its document, and whether it was written without a checksum."""

    doc: dict[str, Any]
    legacy: bool


def encode_checked(doc: dict[str, Any], indent: bool = False) -> bytes:
    """`doc` as a checksummed JSON object (a non-empty dict without a `_crc` key)."""
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    rest = body[1:] + b"\n"
    return b'%s%08x",%s' % (_PREFIX, zlib.crc32(rest), rest)


def decode_checked(data: bytes) -> CheckedDocument:
    """The document in `data`; ChecksumFailed when its checksum or its JSON is wrong."""
    if data.startswith(_PREFIX):
        rest = data[_HEAD_LEN:]
        try:
            stored = int(data[len(_PREFIX) : _HEAD_LEN - 2], 16)
        except ValueError:
            raise ChecksumFailed("checksum member unreadable") from None
        if data[_HEAD_LEN - 2 : _HEAD_LEN] != b'",' or zlib.crc32(rest) != stored:
            raise ChecksumFailed("checksum mismatch")
        legacy = False
    else:
        legacy = True
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ChecksumFailed(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ChecksumFailed("not a JSON object")
    doc.pop("_crc", None)
    return CheckedDocument(doc, legacy)
