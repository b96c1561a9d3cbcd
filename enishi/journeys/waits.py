"""When a `wait` step wakes up, and when quiet hours end: pure functions of time and memory.

The interpreter calls these with `workflow.now()`; they read nothing but their arguments (and
the tz database and the `holidays` calendars, both versioned with the deployment). Rules are
in docs/journeys.md ("wait"): local times in the customer's IANA zone, else the journey's
`timezone_fallback`; a local time that does not exist (spring forward) moves forward by the
gap, an ambiguous one (fall back) takes the first occurrence.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Final

import holidays

from enishi.journeys import clock
from enishi.journeys.model import Wait

# How far alignment looks for an allowed day: weekday and holiday rules that allow no day
# in a year and a bit are a mistake, not a reason to loop forever.
MAX_ALIGN_DAYS: Final = 400
_TRAIT_DATE: Final = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})(?:[T ].*)?$")


@dataclass(frozen=True)
class MissingTraitDate:
    """`until_trait` names a trait the customer lacks, or one that holds no date."""

    trait: str


def zone(name: str | None, fallback: str = clock.DEFAULT_TIMEZONE) -> zoneinfo.ZoneInfo:
    """The customer's IANA zone, else `fallback` (also when `name` is unknown to the tz db)."""
    if name and clock.is_timezone(name):
        return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo(fallback)


def wake_at(
    wait: Wait,
    now: datetime,
    *,
    tz: tzinfo,
    calendar: str | None = None,
    traits: Mapping[str, Any] | None = None,
) -> datetime | MissingTraitDate:
    """The instant (UTC) a `wait` step ends, or `MissingTraitDate` (go to `on_missing`).

    `now` must be aware; `calendar` is the step's calendar or the journey's default.
    """
    now = now.astimezone(UTC)
    cal = wait.calendar or calendar
    if wait.until_trait is not None:
        spec = wait.until_trait
        found = _trait_date((traits or {}).get(spec.trait))
        if found is None:
            return MissingTraitDate(spec.trait)
        year, month, day = found
        offset = spec.offset or timedelta(0)
        if spec.yearly or year is None:
            # The first anniversary whose (aligned) instant is still ahead: a birthday
            # greeting at 09:00 is due today even when today's 00:00 has passed.
            this_year = now.astimezone(tz).year
            for candidate_year in range(this_year - 1, this_year + 2):
                earliest = clock.local_instant(_safe_date(candidate_year, month, day), time(), tz)
                earliest += offset
                result = _align(wait, earliest, now, tz, cal, strict=False)
                if result > now:
                    return result
            raise AssertionError("unreachable: some anniversary within two years is ahead")
        earliest = clock.local_instant(_safe_date(year, month, day), time(), tz) + offset
        return max(_align(wait, earliest, now, tz, cal, strict=False), now)
    if wait.for_ is not None:
        return _align(wait, now + wait.for_, now, tz, cal, strict=False)
    return _align(wait, now, now, tz, cal, strict=True)


def is_holiday(day: date, calendar: str) -> bool:
    """True when `day` is a public holiday of `calendar` (a `holidays` country code)."""
    return day in _holidays(calendar, day.year)


@functools.cache
def _holidays(calendar: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(calendar, years=year)


def _align(
    wait: Wait, earliest: datetime, now: datetime, tz: tzinfo, calendar: str | None, *, strict: bool
) -> datetime:
    """The first allowed `at_local` instant at or after `earliest` (after, when `strict`)."""
    if wait.at_local is None:
        return earliest
    allowed = {clock.WEEKDAYS.index(d) for d in wait.weekdays} if wait.weekdays else set(range(7))
    day = earliest.astimezone(tz).date()
    for _ in range(MAX_ALIGN_DAYS):
        candidate = clock.local_instant(day, wait.at_local, tz)
        if (
            (candidate > earliest if strict else candidate >= earliest)
            and day.weekday() in allowed
            and not (wait.skip_holidays and calendar and is_holiday(day, calendar))
        ):
            return candidate
        day += timedelta(days=1)
    raise ValueError(
        f"wait: no allowed day for at_local {wait.at_local:%H:%M} within {MAX_ALIGN_DAYS} days"
    )


def _trait_date(value: Any) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) of a trait holding `YYYY-MM-DD`, `MM-DD` or an ISO time."""
    if not isinstance(value, str):
        return None
    match = _TRAIT_DATE.fullmatch(value.strip())
    if not match:
        return None
    year = int(match.group(1)) if match.group(1) else None
    month, day = int(match.group(2)), int(match.group(3))
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: MM-DD of 02-29 is valid
    except ValueError:
        return None
    return year, month, day


def _safe_date(year: int, month: int, day: int) -> date:
    """The date in `year`; 29 February falls on 28 February in other years."""
    try:
        return date(year, month, day)
    except ValueError:
        return date(year, month, day - 1)
