"""Identity resolution: which canonical customer an identity (email, phone, ...) belongs to.

Ingest resolves and registers identities (minting `c_<ULID>` ids for strangers) and merges
customers on Identify; CustomerService reuses the read-only lookups. Nothing is cached: many
ingest processes share the index in Redis (layout in `enishi.keys`, rules in
docs/identity.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from ulid import ULID

from enishi import keys
from enishi.errors import FailedPrecondition
from enishi.v1 import identity_pb2

# Kinds, spelled as the CustomerRef oneof members and as the `<kind>` of keys.identity().
CUSTOMER_ID: Final = "customer_id"
ANONYMOUS_ID: Final = "anonymous_id"
EMAIL: Final = "email"
PHONE: Final = "phone"
LINE_USER_ID: Final = "line_user_id"
PUSH_TOKEN: Final = "push_token"

INDEXED_KINDS: Final = (EMAIL, PHONE, LINE_USER_ID, ANONYMOUS_ID, PUSH_TOKEN)
"""Kinds kept in the identity index, in the order Identify prefers their owner as target."""

# A device identity may move from one known customer to another (a shared tablet, a sold
# phone); a person identity on two known customers is a conflict, never a takeover.
DEVICE_KINDS: Final = frozenset({ANONYMOUS_ID, PUSH_TOKEN})

KIND_ENUM: Final = {
    CUSTOMER_ID: identity_pb2.IDENTITY_KIND_CUSTOMER_ID,
    ANONYMOUS_ID: identity_pb2.IDENTITY_KIND_ANONYMOUS_ID,
    EMAIL: identity_pb2.IDENTITY_KIND_EMAIL,
    PHONE: identity_pb2.IDENTITY_KIND_PHONE,
    LINE_USER_ID: identity_pb2.IDENTITY_KIND_LINE_USER_ID,
    PUSH_TOKEN: identity_pb2.IDENTITY_KIND_PUSH_TOKEN,
}

MINTED_PREFIX: Final = "c_"
MINTED_ID: Final = re.compile(r"c_[0-9A-HJKMNP-TV-Z]{26}")
"""Ids enishi mints for customers first seen by a non-customer-id identity."""

MAX_ID_CHARS: Final = 128
MAX_EMAIL_CHARS: Final = 254
MAX_PUSH_TOKEN_CHARS: Final = 4096
MAX_ALIAS_HOPS: Final = 32

_EMAIL_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_EMAIL_TLD = re.compile(r"([a-z]{2,63}|xn--[a-z0-9-]{1,59})")
_PHONE_SEPARATORS = re.compile(r"[ \-().]")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")
# Control, format (zero-width...), surrogate and private-use characters, line separators.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def is_minted(customer_id: str) -> bool:
    """True for an id enishi minted (`c_` + ULID): an anonymous customer that may be merged."""
    return MINTED_ID.fullmatch(customer_id) is not None


def new_customer_id() -> str:
    """A fresh minted customer id, `c_` + ULID (sortable by creation time)."""
    return f"{MINTED_PREFIX}{ULID()}"


def has_bad_chars(value: str) -> bool:
    """True when `value` holds control, format or other invisible characters."""
    if value.isprintable():  # the common case, in C; only spaces other than ' ' need a look
        return False
    return any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in value)


class InvalidIdentity(ValueError):
    """An identity value that cannot be normalised; the message never repeats the value."""


def normalize(kind: str, value: str) -> str:
    """The value as the index stores it; raises `InvalidIdentity` saying what is wrong.

    Emails are lower-cased, phones lose spaces, dashes, dots and parentheses and must then
    be E.164; the other kinds are taken as given once their shape is checked.
    """
    if not value:
        raise InvalidIdentity("required: must not be empty")
    if kind == EMAIL:
        return _email(value)
    if kind == PHONE:
        return _phone(value)
    if kind == LINE_USER_ID:
        if not _LINE_USER_ID.fullmatch(value):
            raise InvalidIdentity("must be a LINE user id: 'U' and 32 lower-case hex digits")
        return value
    limit = MAX_PUSH_TOKEN_CHARS if kind == PUSH_TOKEN else MAX_ID_CHARS
    if len(value) > limit:
        raise InvalidIdentity(f"at most {limit} characters, got {len(value)}")
    if kind == PUSH_TOKEN:
        if any(ch.isspace() for ch in value) or has_bad_chars(value):
            raise InvalidIdentity("must not contain whitespace or control characters")
    elif has_bad_chars(value) or value != value.strip():
        raise InvalidIdentity("must not contain control characters or surrounding whitespace")
    if kind not in KIND_ENUM:
        raise ValueError(f"unknown identity kind {kind!r}")
    return value


def _email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_CHARS:
        raise InvalidIdentity(f"at most {MAX_EMAIL_CHARS} characters")
    local, at, domain = email.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or len(local) > 64
        or not _EMAIL_LOCAL.fullmatch(local)
        or len(labels) < 2
        or not all(_EMAIL_LABEL.fullmatch(label) for label in labels)
        or not _EMAIL_TLD.fullmatch(labels[-1])
    ):
        raise InvalidIdentity("not a valid email address (local@domain.tld, ASCII)")
    return email


def _phone(value: str) -> str:
    phone = _PHONE_SEPARATORS.sub("", value)
    if not _E164.fullmatch(phone):
        raise InvalidIdentity("must be E.164: '+', country code and number, 8-15 digits")
    return phone


@dataclass(frozen=True)
class Ref:
    """One identity, normalised: `kind` (e.g. `email`) and `value`."""

    kind: str
    value: str

    @property
    def member(self) -> str:
        """The entry in a customer's keys.identities() set: `<kind>:<value>`."""
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Claim:
    """An identity an Identify attaches, with the request field it came from."""

    ref: Ref
    field: str


@dataclass(frozen=True)
class Merge:
    """`from_customer_id` was merged into the target, proved by identity kind `matched_by`."""

    from_customer_id: str
    matched_by: str


@dataclass(frozen=True)
class IdentifyOutcome:
    """What an Identify did to the index."""

    customer_id: str
    created: bool
    merged: tuple[Merge, ...]
    """Merges this call made."""
    unpublished: tuple[Merge, ...] = field(default=())
    """Every merge into customer_id whose MERGE touchpoint is not confirmed on Kafka yet
    (this call's and any an earlier, failed call left behind)."""


class IdentityConflict(FailedPrecondition):
    """A person identity already belongs to a different known customer."""

    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field}: already belongs to another known customer; enishi never moves a "
            "person identity between known customers (see docs/identity.md)"
        )
        self.field = field


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _prefix(key_function: Any) -> str:
    # The Lua script builds keys as prefix .. id; prove the layout in enishi.keys allows it.
    prefix = str(key_function(""))
    if key_function("x") != prefix + "x":
        raise RuntimeError(f"{key_function.__name__}: key is not <prefix><id>")
    return prefix


_ALIAS_PREFIX: Final = _prefix(keys.alias)
_IDENTITIES_PREFIX: Final = _prefix(keys.identities)
_PENDING_PREFIX: Final = _prefix(keys.pending_merges)
_INDEX_PREFIX: Final = keys.identity("k", "v")[: -len("k:v")]
if keys.identity("k", "v") != _INDEX_PREFIX + Ref("k", "v").member:
    raise RuntimeError("keys.identity: key is not <prefix><kind>:<value>")

# One atomic step per Identify, so concurrent calls cannot interleave half-merges. KEYS are
# the index keys of the claimed identities; every other key is built from the prefixes in
# ARGV[1..4] (alias, identities, pending merges, index). Decides the target, fails on a
# conflict before writing anything, then merges, re-points and attaches.
_IDENTIFY_LUA: Final = """
local alias_p, set_p, pend_p, id_p = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local explicit, fresh = ARGV[5], ARGV[6]
local n = #KEYS
local function minted(id)
  return #id == 28 and string.match(id, '^c_[0-9A-HJKMNP-TV-Z]+$') ~= nil
end
local function resolve(id)
  for _ = 1, tonumber(ARGV[7]) do
    local nxt = redis.call('GET', alias_p .. id)
    if not nxt then return id end
    id = nxt
  end
  error('enishi identity: alias chain too long')
end
local members, kinds, fields, device, owners = {}, {}, {}, {}, {}
for i = 1, n do
  local a = 7 + (i - 1) * 4
  members[i], kinds[i], fields[i] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  device[i] = ARGV[a + 4] == '1'
  local v = redis.call('GET', KEYS[i])
  owners[i] = v and resolve(v) or false
end
local given = explicit ~= '' and resolve(explicit) or false
local function person_known(i)
  return owners[i] and not device[i] and not minted(owners[i])
end
local target = false
if given and not minted(given) then
  target = given
  for i = 1, n do
    if person_known(i) and owners[i] ~= target then return {'conflict', fields[i]} end
  end
else
  for i = 1, n do
    if person_known(i) then
      if not target then target = owners[i]
      elseif owners[i] ~= target then return {'conflict', fields[i]} end
    end
  end
  target = target or given
  if not target then
    for i = 1, n do
      if owners[i] and not minted(owners[i]) then target = owners[i]; break end
    end
  end
  if not target then
    for i = 1, n do
      if owners[i] then target = owners[i]; break end
    end
  end
end
local created = 0
if not target then target = fresh; created = 1 end
local merged, done = {}, {}
local function merge(x, kind)
  if done[x] then return end
  done[x] = true
  redis.call('SET', alias_p .. x, target)
  for _, m in ipairs(redis.call('SMEMBERS', set_p .. x)) do
    redis.call('SET', id_p .. m, target)
    redis.call('SADD', set_p .. target, m)
  end
  redis.call('DEL', set_p .. x)
  local pend = redis.call('HGETALL', pend_p .. x)
  for j = 1, #pend, 2 do redis.call('HSET', pend_p .. target, pend[j], pend[j + 1]) end
  redis.call('DEL', pend_p .. x)
  redis.call('HSET', pend_p .. target, x, kind)
  merged[#merged + 1] = x
  merged[#merged + 1] = kind
end
if given and given ~= target then merge(given, 'customer_id') end
for i = 1, n do
  local o = owners[i]
  if o and o ~= target then
    if minted(o) then merge(o, kinds[i]) else redis.call('SREM', set_p .. o, members[i]) end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[i], target)
  redis.call('SADD', set_p .. target, members[i])
end
return {'ok', target, created, merged, redis.call('HGETALL', pend_p .. target)}
"""


def _pairs(flat: Sequence[Any]) -> tuple[Merge, ...]:
    return tuple(Merge(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2))


@dataclass
class _Lookup:
    """The state of one distinct ref while resolve_many walks it."""

    ref: Ref
    current: str | None = None
    candidate: str | None = None  # the id this process tries to mint
    hops: int = 0
    register: bool = False  # SADD the ref to its owner's identities set next round


class IdentityResolver:
    """Resolves refs to canonical customer ids over a shared Redis; no local state."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._identify = redis.register_script(_IDENTIFY_LUA)

    async def resolve_many(self, refs: Sequence[Ref]) -> list[str]:
        """The canonical customer id of each ref, registering strangers under new ids.

        A `customer_id` ref is canonical unless it was merged away (its alias is followed).
        Other kinds are looked up in the index; an unseen one is claimed with SET NX and
        whoever won the race is used. Every round trip is one pipeline for all refs.
        """
        lookups = {ref: _Lookup(ref) for ref in refs}
        follow: list[_Lookup] = []  # current set: check its alias
        fetch: list[_Lookup] = []  # index value unknown yet
        for lookup in lookups.values():
            if lookup.ref.kind == CUSTOMER_ID:
                lookup.current = lookup.ref.value
                follow.append(lookup)
            else:
                fetch.append(lookup)
        mint: list[_Lookup] = []
        while follow or fetch or mint:
            # One MGET per kind of lookup: per-command overhead, not keys, is what costs.
            register = [lookup for lookup in follow if lookup.register]
            async with self._redis.pipeline(transaction=False) as pipe:
                if follow:
                    pipe.mget([keys.alias(lookup.current or "") for lookup in follow])
                if fetch:
                    pipe.mget([keys.identity(lk.ref.kind, lk.ref.value) for lk in fetch])
                for lookup in register:
                    pipe.sadd(keys.identities(lookup.current or ""), lookup.ref.member)
                for lookup in mint:
                    lookup.candidate = new_customer_id()
                    key = keys.identity(lookup.ref.kind, lookup.ref.value)
                    pipe.set(key, lookup.candidate, nx=True)
                    pipe.get(key)
                replies = iter(await pipe.execute())
            aliases = next(replies) if follow else []
            owners = next(replies) if fetch else []
            for lookup in register:
                next(replies)
                lookup.register = False
            next_follow: list[_Lookup] = []
            for lookup, target in zip(follow, aliases, strict=True):
                if target is not None:
                    lookup.hops += 1
                    if lookup.hops > MAX_ALIAS_HOPS:
                        raise RuntimeError("identity: alias chain too long")
                    lookup.current = _text(target)
                    next_follow.append(lookup)
            next_mint: list[_Lookup] = []
            for lookup, owner in zip(fetch, owners, strict=True):
                if owner is None:
                    next_mint.append(lookup)
                else:
                    lookup.current = _text(owner)
                    next_follow.append(lookup)
            for lookup in mint:
                next(replies)
                lookup.current = _text(next(replies))
                # Every racer adds the ref to the winner's set (idempotent); the alias check
                # in the same round catches a winner merged away in the meantime.
                lookup.register = True
                next_follow.append(lookup)
            follow, fetch, mint = next_follow, [], next_mint
        result = []
        for ref in refs:
            current = lookups[ref].current
            assert current is not None
            result.append(current)
        return result

    async def canonical(self, customer_id: str) -> str:
        """`customer_id`, or the customer it was merged into."""
        [resolved] = await self.resolve_many([Ref(CUSTOMER_ID, customer_id)])
        return resolved

    async def lookup(self, ref: Ref) -> str | None:
        """The canonical customer id of `ref`, or None when nobody has it. Registers nothing."""
        if ref.kind == CUSTOMER_ID:
            return await self.canonical(ref.value)
        owner = await self._redis.get(keys.identity(ref.kind, ref.value))
        return None if owner is None else await self.canonical(_text(owner))

    async def identities_of(self, customer_id: str) -> list[Ref]:
        """The indexed identities of a canonical customer, sorted."""
        members = await self._redis.smembers(keys.identities(customer_id))
        refs = []
        for member in sorted(_text(m) for m in members):
            kind, _, value = member.partition(":")
            refs.append(Ref(kind, value))
        return refs

    async def identify(self, customer_id: str, claims: Iterable[Claim]) -> IdentifyOutcome:
        """Attach `claims` to `customer_id` (or, when empty, to whoever they identify).

        Minted customers found by a claim (or a minted `customer_id`) merge into the
        target. Raises `IdentityConflict` naming the field when a person identity belongs
        to a different known customer; then nothing is written.
        """
        claims = list(claims)
        args: list[str | int] = [
            _ALIAS_PREFIX,
            _IDENTITIES_PREFIX,
            _PENDING_PREFIX,
            _INDEX_PREFIX,
            customer_id,
            new_customer_id(),
            MAX_ALIAS_HOPS,
        ]
        for claim in claims:
            args += [
                claim.ref.member,
                claim.ref.kind,
                claim.field,
                "1" if claim.ref.kind in DEVICE_KINDS else "0",
            ]
        reply = await self._identify(
            keys=[keys.identity(c.ref.kind, c.ref.value) for c in claims], args=args
        )
        if _text(reply[0]) == "conflict":
            raise IdentityConflict(_text(reply[1]))
        return IdentifyOutcome(
            customer_id=_text(reply[1]),
            created=bool(int(reply[2])),
            merged=_pairs(reply[3]),
            unpublished=_pairs(reply[4]),
        )

    async def merges_published(self, customer_id: str, merges: Iterable[Merge]) -> None:
        """Forget merges whose MERGE touchpoints Kafka acknowledged."""
        ids = [m.from_customer_id for m in merges]
        if ids:
            await self._redis.hdel(keys.pending_merges(customer_id), *ids)
