"""Verify a segment's bytes record by record: what recovery and `logserver check` both read.

Only damage with no good record after it is a torn tail that recovery may cut; anything
else is damage before the tail, which the caller reports.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from .idempotency import IdempotencyKeys
from .record import check_line
from .segment import Segment


@dataclass
class ScanResult:
    """How far a segment's records are good, and what is wrong after that."""

    valid_end: int  # byte offset after the last good record
    damage: str | None  # what was wrong at valid_end, if anything
    damage_is_tail: bool  # True when no good record follows the damage


def scan_records(
    segment: Segment,
    data: bytes,
    start: int,
    name_sequences: dict[str, array[int]],
    keys: IdempotencyKeys | None = None,
    whole_batches_from: int = 0,
) -> ScanResult:
    """Verify records in `data` (the file from byte `start`), indexing good ones.

    Each good record's offset goes to `segment.offsets`, its sequence to
    `name_sequences[its event name]`, its idempotency key (if any) to `keys`.

    Stops at the first record that is torn, fails its checksum, does not parse or
    is out of sequence, and reports whether any good record follows it: only
    damage with nothing good after it is a torn tail that may be cut away. A batch left
    incomplete at the end is dropped whole if it starts at or after byte
    `whole_batches_from` of the file (where a crash may have torn it); before that, every
    record that passes its checksum is kept (a repair split the batch's damaged records off).
    """
    view = memoryview(data)
    pos = 0
    offsets = segment.offsets
    end = len(data)
    damage: str | None = None
    batch: tuple[int, list[str]] | None = None  # (its first offset in data, names) while one is open
    keyed: list[tuple[str, int, str]] = []
    while pos < end:
        newline = data.find(b"\n", pos)
        if newline < 0:
            damage = f"partial record of {end - pos} bytes without a newline"
            break
        line = view[pos:newline]
        if not check_line(line):
            damage = "record fails its checksum"
            break
        try:
            fields: Any = orjson.loads(line)
            sequence = fields["sequence"]
            event_name = fields["event"]["name"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            damage = "record is not a valid event"
            break
        expected = segment.base + len(offsets)
        if sequence != expected or not isinstance(event_name, str):
            damage = f"record has sequence {sequence}, expected {expected}"
            break
        more = fields.get("_more")
        if more is not None and batch is None:
            batch = (pos, [])
        if batch is not None:
            batch[1].append(event_name)
        offsets.append(start + pos)
        sequences = name_sequences.get(event_name)
        if sequences is None:
            sequences = name_sequences[event_name] = array("Q")
        sequences.append(sequence)
        if (key := fields.get("idempotencyKey")) is not None:
            keyed.append((key, sequence, fields.get("receivedAt", "")))
        pos = newline + 1
        if more == "000000":
            batch = None
    damage_is_tail = damage is None or not any(check_line(line) for line in data[pos:].split(b"\n")[1:])
    if batch is not None and start + batch[0] >= whole_batches_from:  # torn inside a batch: all goes
        pos, names = batch
        del offsets[len(offsets) - len(names) :]
        for event_name in names:
            name_sequences[event_name].pop()
        damage = damage or f"incomplete batch of {len(names)} records at the end"
    if keys is not None:
        kept_end = segment.end_sequence
        for key, sequence, received_at in keyed:
            if sequence < kept_end:
                keys.note_record(key, sequence, received_at)
    segment.size = start + pos
    if damage is None:
        return ScanResult(segment.size, None, True)
    return ScanResult(segment.size, damage, damage_is_tail)
