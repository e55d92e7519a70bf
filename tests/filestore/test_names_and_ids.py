"""Stream names map to safe, reversible directory names; event ids round-trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.engine import MAX_SEQUENCE, InvalidName, check_stream_name
from logserver.filestore.event_id import EventIdFormatter, format_event_id, parse_event_id
from logserver.filestore.names import stream_dir_name, stream_name_from_dir
from logserver.filestore.record import UtcClock, rfc3339

HOSTILE = ["..", ".", ".hidden", "%2e%2e", "%2F", "a%00b", "~root", "-rf", "CON", "a b\u00e9\u4e2d"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_become_plain_file_names(name: str) -> None:
    encoded = stream_dir_name(name)
    assert "/" not in encoded and "\x00" not in encoded
    assert not encoded.startswith(".") and encoded not in (".", "..")
    assert stream_name_from_dir(encoded) == name


@given(st.text(min_size=1, max_size=255).filter(lambda s: "/" not in s))
def test_encoding_is_reversible_or_hashed(name: str) -> None:
    try:
        check_stream_name(name)
    except InvalidName:
        return
    encoded = stream_dir_name(name)
    assert len(encoded.encode()) <= 200 and "/" not in encoded and not encoded.startswith(".")
    decoded = stream_name_from_dir(encoded)
    assert decoded is None or decoded == name


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 256, "tab\there", "nul\x00", "\x7f", "\ud800"])
def test_invalid_stream_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_stream_name(bad)


@given(st.integers(0, (1 << 64) - 1), st.integers(0, MAX_SEQUENCE))
def test_event_id_round_trips_as_uuid_v8(prefix: int, sequence: int) -> None:
    text = format_event_id(prefix, sequence)
    parsed = uuid.UUID(text)
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert parse_event_id(text) == (prefix, sequence)
    assert parse_event_id(text.upper()) == (prefix, sequence)


@pytest.mark.parametrize("bad", ["", "nope", str(uuid.uuid4()), "0" * 36, "../../etc/passwd" + "x" * 20])
def test_foreign_ids_are_not_parsed(bad: str) -> None:
    assert parse_event_id(bad) is None


@given(st.integers(0, (1 << 64) - 1), st.integers(0, MAX_SEQUENCE))
def test_cached_id_formatter_matches_the_plain_one(prefix: int, sequence: int) -> None:
    assert EventIdFormatter(prefix)(sequence) == format_event_id(prefix, sequence)


def test_utc_clock_formats_like_rfc3339() -> None:
    clock = UtcClock()
    before = rfc3339(datetime.now(UTC))
    stamp = clock.now()
    after = rfc3339(datetime.now(UTC))
    assert before <= stamp <= after and len(stamp) == len(before) == 27
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
