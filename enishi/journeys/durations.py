"""Durations as journey designers write them: `30m`, `7d`, `2w`, `1h30m`.

A duration is one or more `<integer><unit>` parts, units in falling order (w, d, h, m, s),
each unit at most once. Limits: at least one second, at most `MAX_DURATION` (365 days): a
journey that needs to wait longer should be triggered again later, not hold a timer for years.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
PATTERN: Final = r"^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
SIGNED_PATTERN: Final = r"^-?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
MAX_DURATION: Final = timedelta(days=365)
# Digits per part: enough for any duration under the limit in seconds, short enough that
# int() never meets a million-digit number from hostile input.
_MAX_DIGITS: Final = 9
_PART: Final = re.compile(r"([0-9]+)([wdhms])")
_WHOLE: Final = re.compile(PATTERN)


class DurationError(ValueError):
    """The text is not a duration the journey language accepts; the message says why."""


def parse_duration(text: str, *, signed: bool = False) -> timedelta:
    """`"1h30m"` → `timedelta(hours=1, minutes=30)`; raises DurationError with the reason.

    `signed=True` allows one leading `-` (offsets such as "3 days before a birthday").
    """
    body = text.strip()
    negative = signed and body.startswith("-")
    if negative:
        body = body[1:]
    if not body:
        raise DurationError("empty duration; write e.g. '30m', '7d', '2w', '1h30m'")
    if body.startswith("-"):
        raise DurationError(f"negative duration {text!r}; durations count forward")
    if body.isdigit() and len(body) <= _MAX_DIGITS:
        if int(body) == 0:
            raise DurationError(f"duration {text!r} is zero; the shortest is '1s'")
        raise DurationError(f"duration {text!r} has no unit: write e.g. '{body}m' or '{body}d'")
    if not _WHOLE.fullmatch(body):
        raise DurationError(
            f"bad duration {text!r}: expected <number><unit> parts in order w, d, h, m, s "
            "(e.g. '30m', '7d', '1h30m')"
        )
    seconds = 0
    for digits, unit in _PART.findall(body):
        if len(digits) > _MAX_DIGITS:
            raise DurationError(f"duration {text!r} is longer than {format_duration(MAX_DURATION)}")
        seconds += int(digits) * UNITS[unit]
    if seconds == 0:
        raise DurationError(f"duration {text!r} is zero; the shortest is '1s'")
    value = timedelta(seconds=seconds)
    if value > MAX_DURATION:
        raise DurationError(
            f"duration {text!r} is longer than the limit {format_duration(MAX_DURATION)}"
        )
    return -value if negative else value


def format_duration(value: timedelta) -> str:
    """The canonical text of a duration: `timedelta(days=8)` → `"1w1d"`; parses back equal."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds == 0:
        return "0s"
    parts = []
    # Weeks only when the days are whole weeks: "30d" reads better than "4w2d".
    units = (
        UNITS if (seconds // UNITS["d"]) % 7 == 0 else {u: n for u, n in UNITS.items() if u != "w"}
    )
    for unit, size in units.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
