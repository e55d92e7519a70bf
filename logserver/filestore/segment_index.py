"""The persisted index of a sealed segment, so start-up reads arrays instead of every record.

Format (little-endian):
    b"LSIDX001" | u32 header length | header JSON {base, count, size, names, counts}
    | offsets u32 x count | per name: its sequences u64 x counts[i]
    | u32 CRC-32 of everything before it
A missing, short or checksum-failing index is not an error: the segment is
rescanned (and its records verified) and the index written again.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass

import orjson

from .segment import Segment

MAGIC = b"LSIDX002"
_U32 = struct.Struct("<I")
_NATIVE_IS_LITTLE = sys.byteorder == "little"


def _to_le(arr: array[int]) -> bytes:
    if _NATIVE_IS_LITTLE:
        return arr.tobytes()
    swapped = array(arr.typecode, arr)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(typecode: str, data: bytes | memoryview) -> array[int]:
    arr = array(typecode)
    arr.frombytes(data)
    if not _NATIVE_IS_LITTLE:
        arr.byteswap()
    return arr


def encode_index(
    segment: Segment, name_sequences: dict[str, array[int]], keys: list[list[object]] | None = None
) -> bytes:
    """The index of `segment`; `name_sequences` are the stream's, cut to this segment's range;
    `keys` the idempotency keys whose records start in it."""
    names, per_name = [], []
    for name, sequences in name_sequences.items():
        lo = bisect_left(sequences, segment.base)
        hi = bisect_left(sequences, segment.end_sequence, lo)
        if hi > lo:
            names.append(name)
            per_name.append(sequences[lo:hi])
    header = orjson.dumps(
        {
            "base": segment.base,
            "count": segment.count,
            "size": segment.size,
            "names": names,
            "counts": [len(seqs) for seqs in per_name],
            "keys": keys or [],
        }
    )
    parts = [MAGIC, _U32.pack(len(header)), header, _to_le(segment.offsets)]
    parts.extend(_to_le(seqs) for seqs in per_name)
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


@dataclass
class LoadedIndex:
    """A decoded segment index: the offsets and per-name sequences it holds."""

    offsets: array[int]
    names: list[str]
    name_sequences: list[array[int]]
    size: int
    keys: list[list[object]]


class IndexUnusable(ValueError):
    """The index does not belong to the segment or fails its checksum: rescan instead."""


def decode_index(data: bytes, base: int) -> LoadedIndex:
    if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
        raise IndexUnusable("bad magic or too short")
    (crc,) = _U32.unpack_from(data, len(data) - 4)
    view = memoryview(data)[:-4]
    if zlib.crc32(view) != crc:
        raise IndexUnusable("checksum mismatch")
    (header_len,) = _U32.unpack_from(data, len(MAGIC))
    pos = len(MAGIC) + 4
    header = orjson.loads(view[pos : pos + header_len])
    pos += header_len
    if header["base"] != base:
        raise IndexUnusable(f"index is for base {header['base']}, not {base}")
    count = header["count"]
    offsets = _from_le("I", view[pos : pos + 4 * count])
    pos += 4 * count
    sequences = []
    for n in header["counts"]:
        sequences.append(_from_le("Q", view[pos : pos + 8 * n]))
        pos += 8 * n
    if pos != len(view) or len(offsets) != count:
        raise IndexUnusable("length mismatch")
    return LoadedIndex(offsets, list(header["names"]), sequences, header["size"], header.get("keys", []))
