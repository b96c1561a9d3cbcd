"""When a schedule trigger is due for a customer: pure functions of time and the time zone.

A `schedule: {at_local, weekdays}` trigger enrolls each customer at `at_local` in their own
time zone. Its Temporal Schedule fires every `GRID` (15 minutes), on the grid that holds
`at_local` (`grid_offset`), and each run enrolls the customers whose local `at_local` of the
day fell inside the run's window, the `GRID` up to and including its scheduled time
(`due`). Every zone in use today is a whole number of quarter hours from UTC, so each
customer's `at_local` falls on a run's time exactly, and consecutive windows never overlap:
each customer is due in exactly one run a day. A `cron` trigger needs none of this: Temporal
fires it in its `timezone` and every customer of the audience is due. Documented in
docs/journeys.md ("Triggers") and docs/journey-runtime.md ("Scheduled triggers").
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, time, timedelta
from typing import Final

from enishi.journeys import clock
from enishi.journeys.waits import zone

GRID: Final = timedelta(minutes=15)
"""How often an `at_local` schedule fires, and the window each run covers."""


def grid_offset(at_local: time) -> timedelta:
    """The offset of the quarter-hour grid (from the hour) that holds `at_local`."""
    return timedelta(minutes=at_local.minute % 15)


def due(
    at_local: time,
    weekdays: tuple[str, ...] | None,
    run_at: datetime,
    time_zone: str | None,
    fallback: str = clock.DEFAULT_TIMEZONE,
) -> bool:
    """Whether a customer in `time_zone` (else `fallback`) is due in the run at `run_at`.

    Due when `at_local` on some local day allowed by `weekdays` (all when None) is inside
    (`run_at` - GRID, `run_at`]. Local times go through `clock.local_instant`, so a time a
    spring-forward skips counts as the instant after the gap and an ambiguous one as its first
    occurrence, as for waits.
    """
    tz = zone(time_zone, fallback)
    return _due(at_local, weekdays, run_at.astimezone(UTC), str(tz.key))


@functools.lru_cache(maxsize=4096)
def _due(at_local: time, weekdays: tuple[str, ...] | None, run_at: datetime, name: str) -> bool:
    tz = zone(name)
    start = run_at - GRID
    allowed = {clock.WEEKDAYS.index(d) for d in weekdays} if weekdays else set(range(7))
    # The window is 15 minutes, so the local day of its start and of its end are the only
    # candidates (they differ around local midnight).
    for day in {start.astimezone(tz).date(), run_at.astimezone(tz).date()}:
        instant = clock.local_instant(day, at_local, tz)
        if start < instant <= run_at and day.weekday() in allowed:
            return True
    return False


def due_anywhere(at_local: time, weekdays: tuple[str, ...] | None, run_at: datetime) -> bool:
    """Whether a customer in any zone of the tz database is due in the run at `run_at`.

    Most runs of the quarter-hour grid fall on no zone's `at_local`: those runs need not read
    a single customer.
    """
    return any(due(at_local, weekdays, run_at, name) for name in clock.timezones())
