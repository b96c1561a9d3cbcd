"""The customer's local time: their time zone, quiet hours, and the next time a send may go.

Every instant is an aware datetime; local times are turned into instants with the tz
database, so DST is handled like the journey language's waits (docs/sending.md,
"Quiet hours"): a local time that does not exist moves forward by the gap, an ambiguous
one takes its first occurrence.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from enishi.journeys import Journey, clock
from enishi.v1 import consent_pb2


@dataclass(frozen=True)
class QuietWindow:
    """Local `[start, end)`; wraps midnight when start > end (21:00-08:00)."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        """Whether the local time of day is inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def zone_for(customer_zone: str, journey_zone: str | None, platform_zone: str) -> zoneinfo.ZoneInfo:
    """The customer's zone, else the journey's `timezone_fallback` (when the journey sets
    one), else the platform's fallback zone. An unknown name counts as none."""
    for name in (customer_zone, journey_zone, platform_zone):
        if name and clock.is_timezone(name):
            return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo(clock.DEFAULT_TIMEZONE)


def customer_zone(customer_zone: str, journey: Journey, platform_zone: str) -> zoneinfo.ZoneInfo:
    """`zone_for` with the journey's rule: its `timezone_fallback` counts only when the
    designer wrote one (the model's default is not a choice the designer made)."""
    written = "timezone_fallback" in journey.model_fields_set
    return zone_for(customer_zone, journey.timezone_fallback if written else None, platform_zone)


def window_of(quiet: consent_pb2.QuietHours) -> QuietWindow | None:
    """The customer's quiet window; None when unset, empty (start == end) or malformed."""
    if not quiet.start or not quiet.end:
        return None
    try:
        start, end = clock.parse_local_time(quiet.start), clock.parse_local_time(quiet.end)
    except ValueError:
        return None  # memory holds what a producer sent; a bad value must not block sends
    return None if start == end else QuietWindow(start, end)


def is_quiet(now: datetime, window: QuietWindow | None, zone: zoneinfo.ZoneInfo) -> bool:
    """Whether `now` falls inside the customer's quiet hours."""
    return window is not None and window.contains(now.astimezone(zone).time())


def next_allowed(now: datetime, window: QuietWindow | None, zone: zoneinfo.ZoneInfo) -> datetime:
    """`now` when outside quiet hours, else the end of the current quiet window (UTC)."""
    if window is None or not is_quiet(now, window, zone):
        return now.astimezone(UTC)
    local = now.astimezone(zone)
    day = local.date()
    if window.start > window.end and local.time() >= window.start:
        day += timedelta(days=1)  # before midnight in a window that wraps: ends tomorrow
    end = clock.local_instant(day, window.end, zone)
    while end <= now:  # only when a DST change folds the end back before now
        day += timedelta(days=1)
        end = clock.local_instant(day, window.end, zone)
    return end
