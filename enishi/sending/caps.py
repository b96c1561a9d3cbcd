"""Frequency caps: an atomic check-and-reserve in Redis, one Lua script call per send.

Per customer, across all journeys and channels, per local day and per local ISO week, and
per channel per local day (docs/sending.md, "Frequency caps"). A reservation remembers the
dispatch id, so a retried send is counted once and keeps its channel.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from redis.asyncio import Redis

from enishi import keys
from enishi.journeys.clock import local_instant

DAY_TTL_SECONDS: Final = 3 * 86_400
WEEK_TTL_SECONDS: Final = 9 * 86_400
# Long enough for any retry of the activity; a send retried later than this counts again.
RESERVATION_TTL_SECONDS: Final = 9 * 86_400

# KEYS: day hash, week counter, reservation. ARGV: day cap, week cap, day ttl, week ttl,
# reservation ttl, then (channel, channel cap) pairs in the order to try. Caps of 0 are off.
# Returns {status, channel}: status "reserved" (earlier, by this dispatch id), "ok" (now),
# "week", "day" (the customer's cap is reached) or "channel" (every channel's cap is).
RESERVE_SCRIPT: Final = """
local existing = redis.call('GET', KEYS[3])
if existing then return {'reserved', existing} end
local day_cap, week_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local week = tonumber(redis.call('GET', KEYS[2]) or '0')
if week_cap > 0 and week >= week_cap then return {'week', ''} end
local total = tonumber(redis.call('HGET', KEYS[1], '*') or '0')
if day_cap > 0 and total >= day_cap then return {'day', ''} end
for i = 6, #ARGV, 2 do
  local channel, cap = ARGV[i], tonumber(ARGV[i + 1])
  local used = tonumber(redis.call('HGET', KEYS[1], channel) or '0')
  if cap == 0 or used < cap then
    redis.call('HINCRBY', KEYS[1], '*', 1)
    redis.call('HINCRBY', KEYS[1], channel, 1)
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
    redis.call('SET', KEYS[3], channel, 'EX', ARGV[5])
    return {'ok', channel}
  end
end
return {'channel', ''}
"""

# KEYS as above; ARGV: the channel reserved. Undoes a reservation made in the same windows.
RELEASE_SCRIPT: Final = """
local existing = redis.call('GET', KEYS[3])
if existing ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[3])
if tonumber(redis.call('HGET', KEYS[1], '*') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], '*', -1)
end
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 1
"""


@dataclass(frozen=True)
class CapLimits:
    """Caps per customer: all channels per day and per week, and per channel per day (0: off)."""

    day: int
    week: int
    channel_day: Mapping[str, int]


@dataclass(frozen=True)
class Windows:
    """The local day and ISO week `now` falls in, and when each ends (UTC)."""

    day: str
    week: str
    day_ends: datetime
    week_ends: datetime


def windows(now: datetime, zone: zoneinfo.ZoneInfo) -> Windows:
    """Calendar windows in the customer's zone: the day from 00:00, the week from Monday."""
    local = now.astimezone(zone).date()
    iso = local.isocalendar()
    tomorrow = local + timedelta(days=1)
    next_monday = local + timedelta(days=7 - local.weekday())
    return Windows(
        day=local.isoformat(),
        week=f"{iso.year}-W{iso.week:02d}",
        day_ends=local_instant(tomorrow, datetime.min.time(), zone),
        week_ends=local_instant(next_monday, datetime.min.time(), zone),
    )


@dataclass(frozen=True)
class Reserved:
    """Caps are reserved on `channel`; `earlier` when a previous attempt reserved them."""

    channel: str
    earlier: bool


@dataclass(frozen=True)
class Capped:
    """A cap is reached: which one, and when its window frees."""

    cap: Literal["day", "week", "channel"]
    frees_at: datetime
    detail: str


class FrequencyCaps:
    """Reserves and releases cap slots for one send."""

    def __init__(self, redis: Redis, limits: CapLimits) -> None:
        self._redis = redis
        self._limits = limits
        self._reserve = redis.register_script(RESERVE_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def reserve(
        self,
        customer_id: str,
        dispatch_id: str,
        channels: Sequence[str],
        now: datetime,
        zone: zoneinfo.ZoneInfo,
    ) -> Reserved | Capped:
        """Reserve one message on the first of `channels` under its cap, atomically."""
        win = windows(now, zone)
        argv: list[str | int] = [
            self._limits.day,
            self._limits.week,
            DAY_TTL_SECONDS,
            WEEK_TTL_SECONDS,
            RESERVATION_TTL_SECONDS,
        ]
        for channel in channels:
            argv += [channel, self._limits.channel_day.get(channel, 0)]
        status_raw, channel_raw = await self._reserve(
            keys=self._keys(customer_id, dispatch_id, win), args=argv
        )
        status, channel = _text(status_raw), _text(channel_raw)
        if status in ("ok", "reserved"):
            return Reserved(channel, earlier=status == "reserved")
        if status == "week":
            return Capped("week", win.week_ends, f"weekly cap {self._limits.week} reached")
        if status == "day":
            return Capped("day", win.day_ends, f"daily cap {self._limits.day} reached")
        caps = ", ".join(f"{c} {self._limits.channel_day.get(c, 0)}" for c in channels)
        return Capped("channel", win.day_ends, f"daily channel caps reached ({caps})")

    async def release(
        self,
        customer_id: str,
        dispatch_id: str,
        channel: str,
        now: datetime,
        zone: zoneinfo.ZoneInfo,
    ) -> bool:
        """Give back a reservation nothing was sent for; False when there was none."""
        win = windows(now, zone)
        released = await self._release(
            keys=self._keys(customer_id, dispatch_id, win), args=[channel]
        )
        return bool(released)

    @staticmethod
    def _keys(customer_id: str, dispatch_id: str, win: Windows) -> list[str]:
        return [
            keys.cap_day(customer_id, win.day),
            keys.cap_week(customer_id, win.week),
            keys.cap_reservation(customer_id, dispatch_id),
        ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
