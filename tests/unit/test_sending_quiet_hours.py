"""Quiet hours in the customer's zone: windows that wrap midnight, zones, DST, next allowed."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time

from enishi.sending import quiet_hours
from enishi.sending.quiet_hours import QuietWindow
from enishi.v1 import consent_pb2

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
NIGHT = QuietWindow(time(21, 0), time(8, 0))


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_window_that_wraps_midnight_holds_late_evening_and_early_morning() -> None:
    assert NIGHT.contains(time(23, 30))
    assert NIGHT.contains(time(0, 0))
    assert NIGHT.contains(time(7, 59))
    assert not NIGHT.contains(time(8, 0))  # end is exclusive
    assert not NIGHT.contains(time(20, 59))
    assert NIGHT.contains(time(21, 0))


def test_a_daytime_window_does_not_wrap() -> None:
    lunch = QuietWindow(time(12, 0), time(13, 0))
    assert lunch.contains(time(12, 30))
    assert not lunch.contains(time(13, 0))
    assert not lunch.contains(time(11, 0))


def test_quiet_is_judged_in_the_customer_zone_not_utc() -> None:
    # 13:00 UTC is 22:00 in Tokyo (quiet) and 09:00 in New York (not quiet, EDT).
    now = utc(2025, 6, 2, 13, 0)
    assert quiet_hours.is_quiet(now, NIGHT, TOKYO)
    assert not quiet_hours.is_quiet(now, NIGHT, NEW_YORK)


def test_before_midnight_the_next_allowed_time_is_tomorrow_morning() -> None:
    now = utc(2025, 6, 2, 13, 0)  # 22:00 Tokyo, Monday
    assert quiet_hours.next_allowed(now, NIGHT, TOKYO) == utc(2025, 6, 2, 23, 0)  # 08:00 Tue


def test_after_midnight_the_next_allowed_time_is_the_same_morning() -> None:
    now = utc(2025, 6, 2, 17, 30)  # 02:30 Tokyo, Tuesday
    assert quiet_hours.next_allowed(now, NIGHT, TOKYO) == utc(2025, 6, 2, 23, 0)


def test_outside_quiet_hours_now_is_allowed() -> None:
    now = utc(2025, 6, 2, 3, 0)  # 12:00 Tokyo
    assert quiet_hours.next_allowed(now, NIGHT, TOKYO) == now


def test_a_window_ending_in_a_dst_gap_ends_one_hour_later_on_the_clock() -> None:
    # New York springs forward on 2025-03-09 at 02:00 -> 03:00; a window ending 02:30 ends
    # at 03:30 EDT (07:30 UTC), the gap's length later.
    window = QuietWindow(time(22, 0), time(2, 30))
    now = utc(2025, 3, 9, 4, 0)  # 23:00 EST on the 8th
    assert quiet_hours.next_allowed(now, window, NEW_YORK) == utc(2025, 3, 9, 7, 30)


def test_the_window_end_follows_the_offset_after_a_dst_change() -> None:
    now = utc(2025, 3, 9, 4, 0)  # 23:00 EST; 08:00 next morning is EDT (UTC-4)
    assert quiet_hours.next_allowed(now, NIGHT, NEW_YORK) == utc(2025, 3, 9, 12, 0)


def test_empty_malformed_or_zero_length_quiet_hours_mean_none() -> None:
    assert quiet_hours.window_of(consent_pb2.QuietHours()) is None
    assert quiet_hours.window_of(consent_pb2.QuietHours(start="25:00", end="08:00")) is None
    assert quiet_hours.window_of(consent_pb2.QuietHours(start="09:00", end="09:00")) is None
    assert quiet_hours.window_of(consent_pb2.QuietHours(start="21:00", end="08:00")) == NIGHT


def test_the_zone_is_the_customer_then_the_journey_then_the_platform() -> None:
    assert str(quiet_hours.zone_for("Europe/Paris", "Asia/Tokyo", "UTC")) == "Europe/Paris"
    assert str(quiet_hours.zone_for("", "America/New_York", "UTC")) == "America/New_York"
    assert str(quiet_hours.zone_for("Not/AZone", None, "Asia/Seoul")) == "Asia/Seoul"


def test_a_daytime_window_defers_to_its_end_and_lets_other_times_through() -> None:
    lunch = utc(2025, 3, 4, 3, 30)  # 12:30 Tokyo
    assert quiet_hours.next_allowed(lunch, QuietWindow(time(12), time(13)), TOKYO) == utc(
        2025, 3, 4, 4, 0
    )
    assert quiet_hours.next_allowed(lunch, QuietWindow(time(13), time(14)), TOKYO) == lunch
