"""A token bucket per provider in Redis, shared by every instance of a channel service.

One Lua script refills and takes a token atomically with the Redis server's clock (`TIME`),
so instances on different hosts with skewed clocks share one rate. A caller that gets no
token is told how long to wait and asks again.
"""

from __future__ import annotations

import asyncio
from typing import Final

from redis.asyncio import Redis

from enishi import keys
from enishi.metrics import CHANNEL_RATE_LIMITED_SECONDS

# KEYS[1] bucket; ARGV[1] tokens per second, ARGV[2] bucket size. Returns ms to wait (0: taken).
_TAKE_LUA: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


class TokenBucket:
    """`rate` calls per second with bursts of `burst`, across every process using `bucket`."""

    def __init__(self, redis: Redis, bucket: str, *, rate: float, burst: int) -> None:
        self._redis = redis
        self._key = keys.rate_bucket(bucket)
        self._bucket = bucket
        self._rate = rate
        self._burst = burst
        self._take = redis.register_script(_TAKE_LUA)

    @property
    def unlimited(self) -> bool:
        """True when the rate is 0 (no limit)."""
        return self._rate <= 0

    async def acquire(self) -> float:
        """Wait until a token is taken; returns the seconds waited."""
        if self.unlimited:
            return 0.0
        waited = 0.0
        while True:
            wait_ms = int(await self._take(keys=[self._key], args=[self._rate, self._burst]))
            if wait_ms <= 0:
                if waited:
                    CHANNEL_RATE_LIMITED_SECONDS.labels(self._bucket).inc(waited)
                return waited
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
