"""Durations: the forms designers write parse, and everything else is refused with a reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enishi.journeys.durations import (
    MAX_DURATION,
    DurationError,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1s", timedelta(seconds=1)),
        ("365d", MAX_DURATION),
    ],
)
def test_designer_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0", "zero"),
        ("0d", "zero"),
        ("-1d", "negative"),
        ("", "empty"),
        ("7", "no unit"),
        ("7 days", "bad duration"),
        ("30m1h", "bad duration"),
        ("1d1d", "bad duration"),
        ("366d", "longer than"),
        ("9999999999w", "longer than"),
    ],
)
def test_bad_durations_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(DurationError, match=reason):
        parse_duration(text)


def test_signed_offsets_accept_one_minus() -> None:
    assert parse_duration("-3d", signed=True) == -timedelta(days=3)
    with pytest.raises(DurationError):
        parse_duration("--3d", signed=True)


def test_format_uses_weeks_only_for_whole_weeks() -> None:
    assert format_duration(timedelta(days=30)) == "30d"
    assert format_duration(timedelta(days=14)) == "2w"


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())))
def test_format_then_parse_is_the_same_duration(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
