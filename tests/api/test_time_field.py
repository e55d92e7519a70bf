"""system.time: the C fast path of the check never changes its answer."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from logserver.http.validation import _TIME, _is_valid_time


def field_by_field(text: str) -> bool:
    """The rule written out: a real calendar date, hour <= 23, minute <= 59, second <= 60
    (RFC 3339's leap second), an offset of at most 23:59."""
    match = _TIME.fullmatch(text)
    if match is None:
        return False
    if match[4]:
        hour, minute, second = int(match[5]), int(match[6]), int(match[7])
    else:
        hour, minute, second = int(match[8]), int(match[9]), int(match[10])
        if match[11] is not None and (int(match[11]) > 23 or int(match[12]) > 59):
            return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return hour <= 23 and minute <= 59 and second <= 60


two = st.integers(0, 99).map(lambda n: f"{n:02d}")
times = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y:04d}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    st.integers(0, 9999),
    two,
    two,
    st.sampled_from([" ", "T", "t", "x"]),
    two,
    two,
    two,
    st.sampled_from(["", ".5", ".123456", ".1234567"]),
    st.one_of(
        st.sampled_from(["", "Z", "z"]),
        st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), two, two),
    ),
)


@given(times)
def test_the_fast_path_agrees_with_the_rule(text: str) -> None:
    assert _is_valid_time(text) == field_by_field(text)


def test_edges() -> None:
    assert _is_valid_time("2016-12-31T23:59:60Z")  # a leap second
    assert _is_valid_time("2017-09-06 13:58:12")
    assert _is_valid_time("2017-09-06t13:58:12.1234567z")
    assert not _is_valid_time("2017-09-06T13:58:12+05:75")
    assert not _is_valid_time("2017-09-06 24:00:00")
    assert not _is_valid_time("2017-02-29 00:00:00")
