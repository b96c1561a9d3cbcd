"""Reads customer memory back as `enishi.v1` messages: the 360 view and the timeline.

CustomerService calls `MemoryReader.customer(...)` for GetCustomer and
`MemoryReader.timeline(...)` for ListTimeline, with a canonical customer id (resolve
identities and aliases first). Phase and density are computed here, at read time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from enishi import keys
from enishi.memory import lifecycle, model
from enishi.v1 import consent_pb2, customer_pb2, identity_pb2

DEFAULT_TIMELINE_LIMIT = 20
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class InvalidPageToken(ValueError):
    """A ListTimeline page token this reader did not issue."""


@dataclass(frozen=True)
class TimelinePage:
    """One page of a customer's timeline, newest first."""

    entries: list[customer_pb2.TimelineEntry]
    next_page_token: str


class MemoryReader:
    """Read-only access to customer memory."""

    def __init__(self, redis: Redis, rules: lifecycle.LifecycleRules | None = None) -> None:
        self._redis = redis
        self._rules = rules or lifecycle.LifecycleRules()

    async def customer(
        self,
        customer_id: str,
        *,
        timeline_limit: int = DEFAULT_TIMELINE_LIMIT,
        now: datetime | None = None,
    ) -> customer_pb2.Customer | None:
        """The 360 view (without active journeys), or None when nothing is remembered."""
        now = now or datetime.now(UTC)
        key = {part: keys.customer(customer_id, part) for part in keys.MEMORY_PARTS}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key[keys.COUNTERS])
            pipe.hgetall(key[keys.TRAITS])
            pipe.hgetall(key[keys.IDENTITY])
            pipe.hgetall(key[keys.IDENTITY_VERSIONS])
            pipe.hgetall(key[keys.CONSENTS])
            pipe.hgetall(key[keys.REACHABILITY])
            pipe.hgetall(key[keys.PREFERENCES])
            pipe.zrange(key[keys.ORDERS], 0, -1, withscores=True)
            pipe.zrange(key[keys.MESSAGES], 0, -1, withscores=True)
            pipe.hgetall(key[keys.DENSITY])
            pipe.smembers(key[keys.MERGED])
            pipe.hgetall(key[keys.TIMELINE_AGGREGATES])
            pipe.zrevrange(key[keys.TIMELINE], 0, max(timeline_limit, 1) - 1)
            (
                counters_raw,
                traits,
                identity,
                identity_versions,
                consents,
                reachability,
                preferences,
                orders,
                messages,
                density,
                merged,
                aggregates,
                newest,
            ) = await pipe.execute()
        if not counters_raw:
            return None
        counters = {k.decode(): v.decode() for k, v in counters_raw.items()}
        view = customer_pb2.Customer(customer_id=customer_id)
        view.identity.CopyFrom(_identity(customer_id, identity, identity_versions))
        view.merged_ids.extend(sorted(m.decode() for m in merged))
        view.traits.CopyFrom(_traits(traits))
        view.counters.CopyFrom(_counters(counters, messages, now))
        facts = lifecycle.PhaseFacts(
            created_ms=_ms(counters, model.CREATED_AT),
            last_activity_ms=max(
                (
                    t
                    for t in (_ms(counters, model.LAST_SEEN_AT), _ms(counters, model.LAST_ORDER_AT))
                    if t is not None
                ),
                default=None,
            ),
            orders_count=int(counters.get(model.ORDERS_COUNT, 0)),
            second_order_ms=int(orders[1][1]) if len(orders) > 1 else None,
        )
        result = lifecycle.phase(facts, self._rules, now)
        view.phase = result.phase  # type: ignore[assignment]
        if result.changed_ms is not None:
            view.phase_changed_at.CopyFrom(model.from_ms(result.changed_ms))
        view.engagement_density = lifecycle.engagement_density(
            {int(d): float(w) for d, w in density.items()}, now
        )
        view.consents.extend(_by_channel(consents, consent_pb2.ChannelConsent))
        view.reachability.extend(_by_channel(reachability, consent_pb2.ChannelReachability))
        for value in preferences.values():
            view.preferences.MergeFromString(value)
        if timeline_limit > 0:
            view.timeline.extend(await self._entries(customer_id, newest))
        view.timeline_aggregates.extend(_aggregates(aggregates))
        _set_time(view.created_at, counters, model.CREATED_AT)
        _set_time(view.updated_at, counters, model.UPDATED_AT)
        return view

    async def timeline(
        self,
        customer_id: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        names: Collection[str] = (),
        kinds: Collection[int] = (),
        before: Timestamp | None = None,
        since: Timestamp | None = None,
    ) -> TimelinePage:
        """Retained timeline entries newest first (by occurred_at, then event_id), filtered.

        The timeline is bounded (model.Retention.timeline_max), so the whole of it is read
        and filtered here rather than paged in Redis.
        """
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else None
        key = keys.customer(customer_id, keys.TIMELINE)
        low = model.to_ms(since) if since is not None else "-inf"
        high = f"({model.to_ms(before)}" if before is not None else "+inf"
        members = cast(
            list[tuple[bytes, float]],
            await self._redis.zrevrangebyscore(key, high, low, withscores=True),
        )
        ordered = [(int(score), member.decode()) for member, score in members]
        if after is not None:
            ordered = [item for item in ordered if item < after]
        entries = await self._entries(customer_id, [eid.encode() for _, eid in ordered])
        matching = [
            entry
            for entry in entries
            if (not names or entry.name in names) and (not kinds or entry.kind in kinds)
        ]
        page = matching[:page_size]
        if len(matching) <= page_size:
            return TimelinePage(page, "")
        last = page[-1]
        return TimelinePage(page, _encode_token((model.to_ms(last.occurred_at), last.event_id)))

    async def _entries(
        self, customer_id: str, event_ids: list[bytes]
    ) -> list[customer_pb2.TimelineEntry]:
        if not event_ids:
            return []
        values = await self._redis.hmget(
            keys.customer(customer_id, keys.TIMELINE_ENTRIES), event_ids
        )
        entries = []
        for value in values:
            if isinstance(value, bytes):
                entries.append(customer_pb2.TimelineEntry.FromString(value.partition(b"\0")[2]))
        return entries


def _identity(
    customer_id: str, stored: Mapping[bytes, bytes], versions: Mapping[bytes, bytes]
) -> identity_pb2.Identity:
    identity = identity_pb2.Identity(customer_id=customer_id)
    tokens: list[tuple[bytes, identity_pb2.PushToken]] = []
    for name_bytes, value in stored.items():
        name = name_bytes.decode()
        if name.startswith(model.PUSH_PREFIX):
            tokens.append((versions.get(name_bytes, b""), identity_pb2.PushToken.FromString(value)))
        elif name in model.IDENTITY_FIELDS:
            setattr(identity, name, value.decode())
    tokens.sort(key=lambda item: item[0], reverse=True)  # newest first
    identity.push_tokens.extend(token for _, token in tokens)
    return identity


def _traits(stored: Mapping[bytes, bytes]) -> struct_pb2.Struct:
    traits = struct_pb2.Struct()
    json_format.ParseDict({k.decode(): json.loads(v) for k, v in stored.items()}, traits)
    return traits


def _counters(
    counters: Mapping[str, str], messages: list[tuple[bytes, float]], now: datetime
) -> customer_pb2.Counters:
    result = customer_pb2.Counters(
        orders_count=int(counters.get(model.ORDERS_COUNT, 0)),
        total_spent=float(counters.get(model.TOTAL_SPENT, 0.0)),
        currency=counters.get(model.CURRENCY, ""),
        events_count=int(counters.get(model.EVENTS_COUNT, 0)),
    )
    _set_time(result.first_order_at, counters, model.FIRST_ORDER_AT)
    _set_time(result.last_order_at, counters, model.LAST_ORDER_AT)
    _set_time(result.last_contact_at, counters, model.LAST_CONTACT_AT)
    _set_time(result.last_seen_at, counters, model.LAST_SEEN_AT)
    _set_time(result.last_message_at, counters, model.LAST_MESSAGE_AT)
    now_ms = model.datetime_ms(now)
    day_ago = now_ms - 86_400_000
    week_ago = now_ms - int(model.MESSAGE_WINDOW.total_seconds() * 1000)
    recent: dict[str, list[int]] = {}
    for member, score in messages:
        channel = member.decode().partition(":")[0]
        counts = recent.setdefault(channel, [0, 0])
        counts[0] += score >= day_ago
        counts[1] += score >= week_ago
    for name, value in sorted(counters.items()):
        if not name.startswith(model.MESSAGES_PREFIX):
            continue
        channel = name.removeprefix(model.MESSAGES_PREFIX)
        last_24h, last_7d = recent.get(channel, [0, 0])
        result.messages.add(
            channel=model.channel_value(channel),
            last_24h=last_24h,
            last_7d=last_7d,
            total=int(value),
        )
    return result


_ChannelState = TypeVar(
    "_ChannelState", consent_pb2.ChannelConsent, consent_pb2.ChannelReachability
)


def _by_channel(stored: Mapping[bytes, bytes], message: type[_ChannelState]) -> list[_ChannelState]:
    states = [message.FromString(value) for value in stored.values()]
    return sorted(states, key=lambda state: state.channel)


def _aggregates(stored: Mapping[bytes, bytes]) -> list[customer_pb2.TimelineAggregate]:
    parts: dict[str, dict[str, int]] = {}
    for field_bytes, value in stored.items():
        name, _, which = field_bytes.decode().rpartition("|")
        parts.setdefault(name, {})[which] = int(float(value))
    result = []
    for name in sorted(parts):
        aggregate = customer_pb2.TimelineAggregate(name=name, count=parts[name].get("c", 0))
        aggregate.first_occurred_at.CopyFrom(model.from_ms(parts[name].get("f", 0)))
        aggregate.last_occurred_at.CopyFrom(model.from_ms(parts[name].get("l", 0)))
        result.append(aggregate)
    return result


def _ms(counters: Mapping[str, str], name: str) -> int | None:
    value = counters.get(name)
    return int(float(value)) if value is not None else None


def _set_time(target: Timestamp, counters: Mapping[str, str], name: str) -> None:
    ms = _ms(counters, name)
    if ms is not None:
        target.CopyFrom(model.from_ms(ms))


def _encode_token(position: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}|{position[1]}".encode()).decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        score, _, event_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return int(score), event_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidPageToken("page_token: not a token this service issued") from None
