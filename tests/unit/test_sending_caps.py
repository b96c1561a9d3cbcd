"""Frequency cap windows: the customer's local day and ISO week, and when each frees."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime

from enishi import keys
from enishi.sending.caps import windows

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
LONDON = zoneinfo.ZoneInfo("Europe/London")


def test_the_day_is_the_customer_local_date_not_the_utc_date() -> None:
    now = datetime(2025, 3, 9, 16, 0, tzinfo=UTC)  # Sunday 16:00 UTC = Monday 01:00 Tokyo
    tokyo = windows(now, TOKYO)
    assert tokyo.day == "2025-03-10"
    assert tokyo.day_ends == datetime(2025, 3, 10, 15, 0, tzinfo=UTC)  # Tue 00:00 JST
    assert windows(now, LONDON).day == "2025-03-09"


def test_the_week_is_the_local_iso_week_ending_at_local_monday_midnight() -> None:
    now = datetime(2025, 3, 9, 16, 0, tzinfo=UTC)
    tokyo = windows(now, TOKYO)  # Monday in Tokyo: a new week
    assert tokyo.week == "2025-W11"
    assert tokyo.week_ends == datetime(2025, 3, 16, 15, 0, tzinfo=UTC)
    london = windows(now, LONDON)  # still Sunday in London
    assert london.week == "2025-W10"
    assert london.week_ends == datetime(2025, 3, 10, 0, 0, tzinfo=UTC)


def test_the_iso_week_year_differs_from_the_calendar_year_around_new_year() -> None:
    now = datetime(2024, 12, 30, 3, 0, tzinfo=UTC)
    assert windows(now, TOKYO).week == "2025-W01"


def test_a_day_with_a_dst_change_ends_at_local_midnight() -> None:
    now = datetime(2025, 3, 30, 12, 0, tzinfo=UTC)  # London springs forward that day
    assert windows(now, LONDON).day_ends == datetime(2025, 3, 30, 23, 0, tzinfo=UTC)


def test_cap_keys_share_the_customer_hash_tag() -> None:
    for key in (
        keys.cap_day("c1", "2025-03-10"),
        keys.cap_week("c1", "2025-W11"),
        keys.cap_reservation("c1", "d_x"),
    ):
        assert key.startswith("enishi:c:{c1}:cap:")
