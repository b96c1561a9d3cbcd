"""Local time in journeys: `HH:MM` times, weekdays, IANA time zones, holiday calendars, cron.

These are the checks behind the language's time fields; the interpreter turns them into
instants in the customer's own time zone (docs/journeys.md, "Time").
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import UTC, date, datetime, time, tzinfo
from typing import Final

import holidays

DEFAULT_TIMEZONE: Final = "Asia/Tokyo"
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LOCAL_TIME_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_LOCAL_TIME: Final = re.compile(LOCAL_TIME_PATTERN)

_CRON_FIELDS: Final = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM: Final = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")


def parse_local_time(text: str) -> time:
    """`"09:30"` → `time(9, 30)`; raises ValueError unless it is 24-hour `HH:MM`."""
    if not _LOCAL_TIME.fullmatch(text):
        raise ValueError(f"bad local time {text!r}: expected 24-hour 'HH:MM', e.g. '09:30'")
    return time(int(text[:2]), int(text[3:]))


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezones() -> frozenset[str]:
    """Every IANA time zone name the tz database knows."""
    return _timezones()


def is_timezone(name: str) -> bool:
    """True for an IANA time zone name the tz database knows, e.g. "Asia/Tokyo"."""
    return name in _timezones()


@functools.cache
def _calendars() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


def is_calendar(code: str) -> bool:
    """True for a holiday calendar the `holidays` library maintains (ISO 3166 code, e.g. "JP")."""
    return code in _calendars()


def check_cron(expression: str) -> None:
    """Raise ValueError unless `expression` is a five-field cron line (names allowed)."""
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; expected 5: "
            "minute hour day-of-month month day-of-week"
        )
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.lower().split(","):
            _check_cron_item(item, what, low, high, names)


def _check_cron_item(item: str, what: str, low: int, high: int, names: tuple[str, ...]) -> None:
    match = _CRON_ITEM.fullmatch(item)
    if not match:
        raise ValueError(f"cron {what}: cannot read {item!r}")
    span, step = match.groups()
    if step is not None and not 1 <= int(step[:4]) <= high:
        raise ValueError(f"cron {what}: step {step} out of range")
    if span == "*":
        return
    bounds = [_cron_value(part, what, low, high, names) for part in span.split("-")]
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise ValueError(f"cron {what}: range {span!r} runs backwards")


def _cron_value(part: str, what: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if part in names:
        return names.index(part) + (0 if what == "day of week" else 1)
    if not part.isdigit() or len(part) > 2 or not low <= int(part) <= high:
        raise ValueError(f"cron {what}: {part!r} is not in {low}-{high}")
    return int(part)


def local_instant(day: date, at: time, tz: tzinfo) -> datetime:
    """`day` at wall time `at` in `tz`, as UTC; a skipped time moves forward by the DST gap.

    fold=0 reads a wall time that does not exist with the offset in force before the change
    (02:30 EST on a spring-forward day is 03:30 EDT) and an ambiguous one as its first
    occurrence, which is what docs/journeys.md promises. Waits, quiet hours and caps windows
    all turn local times into instants here.
    """
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).astimezone(UTC)
