"""Wait steps wake at the right instant: local times, weekdays, JP holidays, DST, birthdays."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from enishi.journeys.model import Wait
from enishi.journeys.waits import MissingTraitDate, is_holiday, wake_at, zone

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def wait(**fields: Any) -> Wait:
    return Wait.model_validate(fields)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def test_a_plain_duration_is_elapsed_time() -> None:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert wake_at(wait(**{"for": "7d"}), now, tz=TOKYO) == datetime(2025, 3, 8, 12, tzinfo=UTC)


def test_duration_then_the_next_local_time_of_day() -> None:
    now = local(TOKYO, 2025, 3, 3, 15, 0)  # Monday 15:00 JST
    got = wake_at(wait(**{"for": "7d", "at_local": "10:00"}), now, tz=TOKYO)
    assert got == local(TOKYO, 2025, 3, 11, 10, 0)


def test_at_local_alone_is_strictly_after_now() -> None:
    now = local(TOKYO, 2025, 3, 3, 10, 0)
    assert wake_at(wait(at_local="10:00"), now, tz=TOKYO) == local(TOKYO, 2025, 3, 4, 10, 0)
    earlier = local(TOKYO, 2025, 3, 3, 9, 59)
    assert wake_at(wait(at_local="10:00"), earlier, tz=TOKYO) == local(TOKYO, 2025, 3, 3, 10, 0)


def test_only_allowed_weekdays() -> None:
    friday = local(TOKYO, 2025, 3, 7, 12, 0)
    got = wake_at(wait(at_local="09:00", weekdays=["mon", "wed"]), friday, tz=TOKYO)
    assert got == local(TOKYO, 2025, 3, 10, 9, 0)  # the next Monday


def test_japanese_holidays_are_skipped_over_golden_week() -> None:
    friday = local(TOKYO, 2025, 5, 2, 12, 0)
    step = wait(
        **{"for": "1d"},
        at_local="10:00",
        weekdays=["mon", "tue", "wed", "thu", "fri"],
        skip_holidays=True,
    )
    # Sat/Sun are not allowed days; Mon 5 May (Children's Day) and Tue 6 May (substitute
    # holiday) are JP holidays: the first allowed morning is Wednesday the 7th.
    assert wake_at(step, friday, tz=TOKYO, calendar="JP") == local(TOKYO, 2025, 5, 7, 10, 0)
    assert is_holiday(datetime(2025, 5, 6).date(), "JP")


def test_the_step_calendar_overrides_the_journey_calendar() -> None:
    sunday = local(TOKYO, 2025, 1, 12, 12, 0)  # Monday the 13th is Coming of Age Day (JP)
    step = wait(at_local="10:00", skip_holidays=True, calendar="JP")
    assert wake_at(step, sunday, tz=TOKYO, calendar="US") == local(TOKYO, 2025, 1, 14, 10, 0)


def test_daily_time_across_spring_forward_keeps_the_wall_clock() -> None:
    before = local(NEW_YORK, 2025, 3, 8, 10, 30)  # Saturday EST; DST starts Sunday 02:00
    got = wake_at(wait(at_local="10:00"), before, tz=NEW_YORK)
    assert got == datetime(2025, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 EDT (UTC-4)


def test_daily_time_across_fall_back_keeps_the_wall_clock() -> None:
    before = local(NEW_YORK, 2025, 11, 1, 10, 30)  # Saturday EDT; DST ends Sunday 02:00
    got = wake_at(wait(at_local="10:00"), before, tz=NEW_YORK)
    assert got == datetime(2025, 11, 2, 15, 0, tzinfo=UTC)  # 10:00 EST (UTC-5)


def test_a_local_time_skipped_by_spring_forward_moves_forward_by_the_gap() -> None:
    midnight = local(NEW_YORK, 2025, 3, 9, 0, 0)
    got = wake_at(wait(at_local="02:30"), midnight, tz=NEW_YORK)
    assert got == datetime(2025, 3, 9, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_an_ambiguous_local_time_takes_its_first_occurrence() -> None:
    midnight = local(NEW_YORK, 2025, 11, 2, 0, 0)
    got = wake_at(wait(at_local="01:30"), midnight, tz=NEW_YORK)
    assert got == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)  # 01:30 EDT, not EST


@pytest.mark.parametrize("name", [None, "", "Mars/Olympus_Mons"])
def test_a_missing_or_unknown_time_zone_falls_back(name: str | None) -> None:
    assert zone(name, "America/New_York") == NEW_YORK
    assert zone("Asia/Tokyo", "America/New_York") == TOKYO


def test_birthday_is_yearly_and_due_today_while_its_morning_is_ahead() -> None:
    step = wait(until_trait={"trait": "birthday", "yearly": True}, at_local="09:00")
    traits = {"birthday": "1990-07-15"}
    early = local(TOKYO, 2025, 7, 15, 5, 0)
    assert wake_at(step, early, tz=TOKYO, traits=traits) == local(TOKYO, 2025, 7, 15, 9, 0)
    late = local(TOKYO, 2025, 7, 15, 10, 0)
    assert wake_at(step, late, tz=TOKYO, traits=traits) == local(TOKYO, 2026, 7, 15, 9, 0)


def test_birthday_offset_counts_before_the_date() -> None:
    step = wait(until_trait={"trait": "birthday", "offset": "-1d", "yearly": True})
    got = wake_at(step, local(TOKYO, 2025, 7, 1, 0, 0), tz=TOKYO, traits={"birthday": "07-15"})
    assert got == local(TOKYO, 2025, 7, 14, 0, 0)


def test_leap_day_birthday_falls_on_28_february() -> None:
    step = wait(until_trait={"trait": "birthday", "yearly": True}, at_local="09:00")
    got = wake_at(step, local(TOKYO, 2025, 2, 1, 0, 0), tz=TOKYO, traits={"birthday": "2000-02-29"})
    assert got == local(TOKYO, 2025, 2, 28, 9, 0)


def test_a_one_off_trait_date_in_the_past_wakes_now() -> None:
    step = wait(until_trait={"trait": "renewal_on"})
    now = local(TOKYO, 2025, 7, 1, 0, 0)
    assert wake_at(step, now, tz=TOKYO, traits={"renewal_on": "2025-06-01"}) == now
    assert wake_at(step, now, tz=TOKYO, traits={"renewal_on": "2025-08-01"}) == local(
        TOKYO, 2025, 8, 1, 0, 0
    )


@pytest.mark.parametrize("value", [None, 19900715, "someday", "1990-13-01", "02-30"])
def test_a_missing_or_non_date_trait_goes_to_on_missing(value: object) -> None:
    step = wait(until_trait={"trait": "birthday", "yearly": True}, on_missing="fallback")
    traits = {} if value is None else {"birthday": value}
    got = wake_at(step, local(TOKYO, 2025, 7, 1, 0, 0), tz=TOKYO, traits=traits)
    assert got == MissingTraitDate("birthday")
