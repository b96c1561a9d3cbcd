"""Helpers for the scheduled-trigger tests: customers in memory, journeys in the trigger index.

Customers are written through the real `MemoryWriter` (as the stream processor would); a
journey goes into the index through the registry's own functions (`trigger_entries`,
`replace_journey`), so the audience run reads exactly what production writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from google.protobuf.field_mask_pb2 import FieldMask
from redis.asyncio import Redis

from enishi import keys
from enishi.journeys import Journey, parse_journey
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.writer import MemoryWriter
from enishi.registry import trigger_entries
from enishi.v1 import consent_pb2, touchpoint_pb2
from services.registry.trigger_index import replace_journey


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _touchpoint(
    customer_id: str,
    name: str,
    kind: touchpoint_pb2.TouchpointKind.ValueType,
    at: datetime | None = None,
) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(
        event_id=unique("ev"), customer_id=customer_id, name=name, kind=kind
    )
    tp.occurred_at.CopyFrom(model.from_ms(model.datetime_ms(at or datetime.now(UTC))))
    return tp


async def remember(
    redis: Redis,
    customer_id: str,
    *,
    tags: Sequence[str] = (),
    time_zone: str = "",
    seen_at: datetime | None = None,
) -> None:
    """A customer in memory: a page view (now, or `seen_at`), `tags` as a trait, a zone."""
    events = [
        _touchpoint(customer_id, "page.viewed", touchpoint_pb2.TOUCHPOINT_KIND_EVENT, seen_at)
    ]
    identify = _touchpoint(
        customer_id, "customer.identified", touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY
    )
    identify.identify.traits.update({"tags": list(tags)})
    events.append(identify)
    if time_zone:
        prefs = _touchpoint(
            customer_id, "preferences.updated", touchpoint_pb2.TOUCHPOINT_KIND_PREFERENCES
        )
        prefs.preferences.preferences.CopyFrom(consent_pb2.Preferences(time_zone=time_zone))
        prefs.preferences.update_mask.CopyFrom(FieldMask(paths=["time_zone"]))
        events.append(prefs)
    now_ms = model.datetime_ms(datetime.now(UTC))
    await MemoryWriter(redis).apply([plan(tp, now_ms=now_ms) for tp in events])


def journey(journey_id: str, trigger: str, *, fallback: str = "Asia/Tokyo") -> Journey:
    """A one-wait journey with `trigger` (YAML flow text)."""
    return parse_journey(
        f"id: {journey_id}\nname: {journey_id}\ndesigner: tests\n"
        f"timezone_fallback: {fallback}\nreentry: {{policy: always}}\n"
        f"trigger: {trigger}\nsteps: [{{id: w, wait: {{for: 1d}}}}]\n"
    )


async def publish(redis: Redis, live: Journey | None, journey_id: str, version: int = 1) -> None:
    """Make `live` the journey's entries in the trigger index (None: take it out)."""
    raw = cast(dict[bytes, bytes], await redis.hgetall(keys.TRIGGER_INDEX))
    index = {name.decode(): value for name, value in raw.items()}
    entries = trigger_entries(live, version) if live is not None else {}
    change = replace_journey(index, journey_id, entries)
    async with redis.pipeline(transaction=True) as pipe:
        if change.set:
            pipe.hset(keys.TRIGGER_INDEX, mapping=change.set)  # type: ignore[arg-type]
        if change.delete:
            pipe.hdel(keys.TRIGGER_INDEX, *change.delete)
        pipe.incr(keys.TRIGGER_INDEX_REVISION)
        await pipe.execute()
