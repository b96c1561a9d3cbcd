"""The Lua script that applies a batch of one customer's touchpoints atomically.

One call per customer per batch: for each event, in order, the script marks the event seen
(or finds it already seen) and runs its operations, all inside one script, so a crash
leaves an event either wholly applied and seen, or neither. Operations are small, generic
and order-independent (LWW by version, min, max, sums), which is what makes out-of-order
arrival come out as if ordered. `enishi.memory.apply` plans them from touchpoints.

KEYS: the customer's memory keys the call needs (`ALWAYS_PARTS` plus those its operations
name), ARGV[1]: which part each key is (one byte per key, its `key_index`),
ARGV[2]: the payload, `pack(...)` of now_ms, timeline_max, dedupe_window,
messages_since_ms, density_since_day, then per event: event_id, token count, tokens.
Tokens are opcodes with fixed arity (OPCODES); key operands are part indexes
(`key_index`, the position in `keys.MEMORY_PARTS`). Returns one byte per event:
"1" applied, "0" duplicate.
"""

from __future__ import annotations

import struct
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
    # an identity, last write wins; when it replaces another address, that channel's
    # reachability record (if any) is overwritten with `reach_value` at the same version:
    # hash, versions, reach_hash, reach_versions, field, version, value, channel, reach_value
    "C": 9,
}

# opcode -> how many of its leading operands are part indexes (the keys it touches).
KEY_OPERANDS: Final = {
    "T": 0,
    "L": 2,
    "D": 2,
    "F": 2,
    "I": 1,
    "R": 1,
    "X": 1,
    "N": 1,
    "Z": 1,
    "S": 1,
    "A": 0,
    "C": 4,
}

# Parts every call declares: the dedupe set, the timeline (T and A operations name no key)
# and what the end-of-call housekeeping trims or stamps. ORDERS is trimmed only by a call
# that added to it, so it is declared only then.
ALWAYS_PARTS: Final = (
    keys.SEEN,
    keys.TIMELINE,
    keys.TIMELINE_ENTRIES,
    keys.TIMELINE_AGGREGATES,
    keys.COUNTERS,
    keys.MESSAGES,
    keys.DENSITY,
)


_KEY_INDEXES: Final = {part: index for index, part in enumerate(keys.MEMORY_PARTS, start=1)}


def key_index(part: str) -> int:
    """The 1-based index of a memory part in `keys.MEMORY_PARTS` (a key operand's value)."""
    return _KEY_INDEXES[part]


_HEADER = "\n".join(
    f"local K_{part.replace(':', '_').upper()} = K[{key_index(part)}]" for part in keys.MEMORY_PARTS
)

_PRELUDE = r"""
local parts = ARGV[1]
local K = {}
for j = 1, #parts do K[string.byte(parts, j)] = KEYS[j] end
"""

_BODY = r"""
local arity = {__ARITY__}
local payload = ARGV[2]

-- The payload is tokens, each a 4-byte big-endian length and its bytes, after a 4-byte
-- token count: one argument instead of dozens per event (encoding separate arguments
-- dominated the client), and struct.unpack reads a chunk of tokens in one C call (a
-- string.find/sub loop cost more than the Redis commands themselves).
local left, pos = struct.unpack('>I4', payload)
local chunk, ci, cn = {}, 1, 0
local formats = {}
local function take()
  if ci > cn then
    cn = left < 64 and left or 64
    local format = formats[cn]
    if not format then
      format = '>' .. string.rep('I4c0', cn)
      formats[cn] = format
    end
    chunk = {struct.unpack(format, payload, pos)}
    pos = chunk[cn + 1]
    left = left - cn
    ci = 1
  end
  local token = chunk[ci]
  ci = ci + 1
  return token
end

local now = take()
local timeline_max = tonumber(take())
local dedupe_window = tonumber(take())
local messages_since = take()
local density_since = tonumber(take())

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

-- A new address is not the one that bounced (or was unregistered): the channel's
-- reachability record, when there is one, gives way to `reach_value`. The same address
-- again (an Identify repeated at every login) changes nothing.
local function identity(hash, versions, reach, reach_versions, field, version, value, channel,
                        reach_value)
  local current = redis.call('HGET', versions, field)
  if current and current >= version then return end
  local before = redis.call('HGET', hash, field)
  redis.call('HSET', versions, field, version)
  redis.call('HSET', hash, field, value)
  if before ~= value and redis.call('HEXISTS', reach, channel) == 1 then
    versioned(reach, reach_versions, channel, version, reach_value, true)
  end
end

local function aggregate(name, count, first, last)
  redis.call('HINCRBY', K_TIMELINE_AGG, name .. '|c', count)
  extreme(K_TIMELINE_AGG, name .. '|f', first, false)
  extreme(K_TIMELINE_AGG, name .. '|l', last, true)
end

local orders_added = false

local function run(op)
  if op == 'T' then
    local score, event_id, entry = take(), take(), take()
    redis.call('ZADD', K_TIMELINE, score, event_id)
    redis.call('HSET', K_TIMELINE_ENTRIES, event_id, entry)
  elseif op == 'L' or op == 'F' then
    local hash, versions, field, version, value = take(), take(), take(), take(), take()
    versioned(K[tonumber(hash)], K[tonumber(versions)], field, version, value, op == 'L')
  elseif op == 'D' then
    local hash, versions, field, version = take(), take(), take(), take()
    versioned(K[tonumber(hash)], K[tonumber(versions)], field, version, false, true)
  elseif op == 'I' then
    local key, field, n = take(), take(), take()
    redis.call('HINCRBY', K[tonumber(key)], field, n)
  elseif op == 'R' then
    local key, field, x = take(), take(), take()
    redis.call('HINCRBYFLOAT', K[tonumber(key)], field, x)
  elseif op == 'X' or op == 'N' then
    local key, field, x = take(), take(), take()
    extreme(K[tonumber(key)], field, x, op == 'X')
  elseif op == 'Z' then
    local key, score, member = take(), take(), take()
    local zset = K[tonumber(key)]
    redis.call('ZADD', zset, score, member)
    if zset == K_ORDERS then orders_added = true end
  elseif op == 'S' then
    local key, member = take(), take()
    redis.call('SADD', K[tonumber(key)], member)
  elseif op == 'A' then
    local name, count, first, last = take(), take(), take(), take()
    aggregate(name, count, first, last)
  elseif op == 'C' then
    local hash, versions, reach, reach_versions = take(), take(), take(), take()
    local field, version, value, channel, reach_value = take(), take(), take(), take(), take()
    identity(K[tonumber(hash)], K[tonumber(versions)], K[tonumber(reach)],
             K[tonumber(reach_versions)], field, version, value, channel, reach_value)
  else
    return redis.error_reply('memory script: unknown opcode ' .. tostring(op))
  end
end

local applied = {}
local changed = false
while left > 0 or ci <= cn do
  local event_id = take()
  local count = tonumber(take())
  -- NX adds only an unseen id (and keeps a seen one's score): dedupe and mark in one call.
  if redis.call('ZADD', K_SEEN, 'NX', now, event_id) == 0 then
    for _ = 1, count do take() end
    applied[#applied + 1] = '0'
  else
    local stop = 0
    while stop < count do
      local op = take()
      local err = run(op)
      if err then return err end
      stop = stop + 1 + arity[op]
    end
    applied[#applied + 1] = '1'
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
  -- The set only grows by ZADD, so a call that added none has nothing to trim.
  if orders_added then redis.call('ZREMRANGEBYRANK', K_ORDERS, 2, -1) end
  redis.call('ZREMRANGEBYSCORE', K_MESSAGES, '-inf', '(' .. messages_since)
  local days = redis.call('HKEYS', K_DENSITY)
  for j = 1, #days do
    if tonumber(days[j]) < density_since then redis.call('HDEL', K_DENSITY, days[j]) end
  end
  redis.call('HSET', K_COUNTERS, '__UPDATED_AT__', now)
end
return table.concat(applied)
"""

APPLY_SCRIPT: Final = (
    _PRELUDE
    + _HEADER
    + _BODY.replace(
        "__ARITY__", ", ".join(f"{op} = {count}" for op, count in OPCODES.items())
    ).replace("__UPDATED_AT__", model.UPDATED_AT)
)

_LENGTH: Final = struct.Struct(">I").pack

Packed = tuple[int, bytes]
"""Encoded tokens: how many, and their bytes (without the leading count)."""


def encode(tokens: Iterable[str | bytes | int | float]) -> Packed:
    """Tokens as the payload encodes them: per token a 4-byte big-endian length and its bytes."""
    parts: list[bytes] = []
    append = parts.append
    for token in tokens:
        data = token if token.__class__ is bytes else str(token).encode()
        append(_LENGTH(len(data)))
        append(data)
    return len(parts) // 2, b"".join(parts)


def payload(*packed: Packed) -> bytes:
    """The script's payload: the total token count (4 bytes), then the encoded tokens.
    The script reads it with `struct.unpack(">I4c0I4c0...")`, a chunk per C call."""
    return b"".join([_LENGTH(sum(count for count, _ in packed)), *(data for _, data in packed)])


def pack(tokens: Iterable[str | bytes | int | float]) -> bytes:
    """`tokens` alone as a payload."""
    return payload(encode(tokens))
