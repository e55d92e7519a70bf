"""system.time: the C fast path of the check never changes its answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from logserver.http.validation import _TIME, _is_valid_time, time_fields_valid

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
    match = _TIME.fullmatch(text)
    assert _is_valid_time(text) == (match is not None and time_fields_valid(match))


def test_edges() -> None:
    assert _is_valid_time("2016-12-31T23:59:60Z")  # a leap second
    assert _is_valid_time("2017-09-06 13:58:12")
    assert _is_valid_time("2017-09-06t13:58:12.1234567z")
    assert not _is_valid_time("2017-09-06T13:58:12+05:75")
    assert not _is_valid_time("2017-09-06 24:00:00")
    assert not _is_valid_time("2017-02-29 00:00:00")
