"""The Lua script that applies a batch of one customer's touchpoints atomically.

One call per customer per batch: for each event, in order, the script checks the dedupe set,
marks the event seen and runs its operations, all inside one script, so a crash leaves an
event either wholly applied and seen, or neither. Operations are small, generic and
order-independent (LWW by version, min, max, sums), which is what makes out-of-order
arrival come out as if ordered. `enishi.memory.apply` plans them from touchpoints.

ARGV: now_ms, timeline_max, dedupe_window, messages_since_ms, density_since_day, payload.
The payload is `pack(...)` of, per event: event_id, token count, tokens. Tokens are opcodes
with fixed arity (OPCODES); key operands are indexes into KEYS, which is
`keys.memory_keys(customer_id)`.
Returns one 1 (applied) or 0 (duplicate) per event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from enishi import keys
from enishi.memory import model

# opcode -> operand count (after the opcode); the script and the planner share this table.
OPCODES: Final = {
    "T": 3,  # timeline add: score, event_id, "<name>\0<entry>"
    "L": 5,  # last write wins: hash, versions, field, version, value
    "D": 4,  # last write wins delete (tombstone): hash, versions, field, version
    "F": 5,  # first write wins: hash, versions, field, version, value
    "I": 3,  # HINCRBY: hash, field, n
    "R": 3,  # HINCRBYFLOAT: hash, field, x
    "X": 3,  # keep the larger number: hash, field, x
    "N": 3,  # keep the smaller number: hash, field, x
    "Z": 3,  # ZADD: zset, score, member
    "S": 2,  # SADD: set, member
    "A": 4,  # add to a timeline aggregate: name, count, first_ms, last_ms
}


def key_index(part: str) -> int:
    """The 1-based KEYS index of a memory part."""
    return keys.MEMORY_PARTS.index(part) + 1


_HEADER = "\n".join(
    f"local K_{part.replace(':', '_').upper()} = KEYS[{key_index(part)}]"
    for part in keys.MEMORY_PARTS
)

_BODY = r"""
local arity = {__ARITY__}
local now = ARGV[1]
local timeline_max = tonumber(ARGV[2])
local dedupe_window = tonumber(ARGV[3])
local messages_since = ARGV[4]
local density_since = tonumber(ARGV[5])

local function extreme(hash, field, value, larger)
  local current = tonumber(redis.call('HGET', hash, field))
  local x = tonumber(value)
  if current == nil or (larger and x > current) or (not larger and x < current) then
    redis.call('HSET', hash, field, value)
  end
end

local function versioned(hash, versions, field, version, value, latest)
  local current = redis.call('HGET', versions, field)
  if current and ((latest and current >= version) or (not latest and current <= version)) then
    return
  end
  redis.call('HSET', versions, field, version)
  if value then
    redis.call('HSET', hash, field, value)
  else
    redis.call('HDEL', hash, field)
  end
end

local function aggregate(name, count, first, last)
  redis.call('HINCRBY', K_TIMELINE_AGG, name .. '|c', count)
  extreme(K_TIMELINE_AGG, name .. '|f', first, false)
  extreme(K_TIMELINE_AGG, name .. '|l', last, true)
end

local payload = ARGV[6]
local pos = 1
-- The payload is netstrings ("<length>:<bytes>"): one argument instead of dozens per event,
-- because encoding thousands of separate arguments dominated the client's time.
local function take()
  local colon = string.find(payload, ':', pos, true)
  local length = tonumber(string.sub(payload, pos, colon - 1))
  pos = colon + length + 1
  return string.sub(payload, colon + 1, colon + length)
end

local function run(op)
  if op == 'T' then
    local score, event_id, entry = take(), take(), take()
    redis.call('ZADD', K_TIMELINE, score, event_id)
    redis.call('HSET', K_TIMELINE_ENTRIES, event_id, entry)
  elseif op == 'L' or op == 'F' then
    local hash, versions, field, version, value = take(), take(), take(), take(), take()
    versioned(KEYS[tonumber(hash)], KEYS[tonumber(versions)], field, version, value, op == 'L')
  elseif op == 'D' then
    local hash, versions, field, version = take(), take(), take(), take()
    versioned(KEYS[tonumber(hash)], KEYS[tonumber(versions)], field, version, false, true)
  elseif op == 'I' then
    local key, field, n = take(), take(), take()
    redis.call('HINCRBY', KEYS[tonumber(key)], field, n)
  elseif op == 'R' then
    local key, field, x = take(), take(), take()
    redis.call('HINCRBYFLOAT', KEYS[tonumber(key)], field, x)
  elseif op == 'X' or op == 'N' then
    local key, field, x = take(), take(), take()
    extreme(KEYS[tonumber(key)], field, x, op == 'X')
  elseif op == 'Z' then
    local key, score, member = take(), take(), take()
    redis.call('ZADD', KEYS[tonumber(key)], score, member)
  elseif op == 'S' then
    local key, member = take(), take()
    redis.call('SADD', KEYS[tonumber(key)], member)
  elseif op == 'A' then
    local name, count, first, last = take(), take(), take(), take()
    aggregate(name, count, first, last)
  else
    return redis.error_reply('memory script: unknown opcode ' .. tostring(op))
  end
end

local applied = {}
local changed = false
while pos <= #payload do
  local event_id = take()
  local count = tonumber(take())
  if redis.call('ZSCORE', K_SEEN, event_id) then
    for _ = 1, count do take() end
    applied[#applied + 1] = 0
  else
    redis.call('ZADD', K_SEEN, now, event_id)
    local stop = 0
    while stop < count do
      local op = take()
      local err = run(op)
      if err then return err end
      stop = stop + 1 + arity[op]
    end
    applied[#applied + 1] = 1
    changed = true
  end
end

if changed then
  local size = redis.call('ZCARD', K_TIMELINE)
  if size > timeline_max then
    local old = redis.call('ZRANGE', K_TIMELINE, 0, size - timeline_max - 1, 'WITHSCORES')
    for j = 1, #old, 2 do
      local value = redis.call('HGET', K_TIMELINE_ENTRIES, old[j])
      local name = '?'
      if value then
        name = string.sub(value, 1, string.find(value, '\0', 1, true) - 1)
      end
      aggregate(name, 1, old[j + 1], old[j + 1])
      redis.call('HDEL', K_TIMELINE_ENTRIES, old[j])
    end
    redis.call('ZREMRANGEBYRANK', K_TIMELINE, 0, size - timeline_max - 1)
  end
  redis.call('ZREMRANGEBYRANK', K_SEEN, 0, -(dedupe_window + 1))
  -- Only the two earliest orders matter (first order, and the second: the habit forming).
  redis.call('ZREMRANGEBYRANK', K_ORDERS, 2, -1)
  redis.call('ZREMRANGEBYSCORE', K_MESSAGES, '-inf', '(' .. messages_since)
  local days = redis.call('HKEYS', K_DENSITY)
  for j = 1, #days do
    if tonumber(days[j]) < density_since then redis.call('HDEL', K_DENSITY, days[j]) end
  end
  redis.call('HSET', K_COUNTERS, '__UPDATED_AT__', now)
end
return applied
"""

APPLY_SCRIPT: Final = _HEADER + _BODY.replace(
    "__ARITY__", ", ".join(f"{op} = {count}" for op, count in OPCODES.items())
).replace("__UPDATED_AT__", model.UPDATED_AT)


def pack(tokens: Iterable[str | bytes | int | float]) -> bytes:
    """Tokens as the script's payload: netstrings, `<length>:<bytes>` each."""
    parts: list[bytes] = []
    for token in tokens:
        data = token if isinstance(token, bytes) else str(token).encode()
        parts.append(b"%d:" % len(data))
        parts.append(data)
    return b"".join(parts)
