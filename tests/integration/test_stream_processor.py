"""The stream processor on real Tansu and Valkey: touchpoints in, customer memory out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from enishi.memory.reader import MemoryReader
from enishi.v1 import channel_pb2, consent_pb2, customer_pb2, touchpoint_pb2
from tests.conftest import LocalServers
from tests.integration.stream_support import (
    RecordingHook,
    event,
    eventually,
    new_topic,
    produce,
    running_processor,
    unique,
)

Kind = touchpoint_pb2.TouchpointKind


async def _view(redis: Redis, customer_id: str) -> customer_pb2.Customer:
    view = await MemoryReader(redis).customer(customer_id, timeline_limit=200)
    assert view is not None, customer_id
    return view


def _has_event(redis: Redis, customer_id: str, event_id: str) -> object:
    async def check() -> bool:
        view = await MemoryReader(redis).customer(customer_id, timeline_limit=200)
        return view is not None and any(e.event_id == event_id for e in view.timeline)

    return check


async def test_the_same_event_twice_is_counted_once(servers: LocalServers, redis: Redis) -> None:
    topic = await new_topic(servers.kafka_bootstrap)
    customer = unique("cust")
    order = event(customer, "order.completed", props={"amount": 1200, "currency": "JPY"})
    marker = event(customer, "page.viewed")
    hook = RecordingHook()
    await produce(servers.kafka_bootstrap, topic, [order, order, marker])

    async with running_processor(servers.kafka_bootstrap, redis, topic, hook=hook):
        await eventually(_has_event(redis, customer, marker.event_id))  # type: ignore[arg-type]

    view = await _view(redis, customer)
    assert view.counters.orders_count == 1
    assert view.counters.total_spent == 1200
    assert view.counters.events_count == 2
    assert sorted(e.event_id for e in view.timeline) == sorted([order.event_id, marker.event_id])
    applied = [tp.event_id for batch in hook.batches for tp in batch.applied]
    duplicates = [tp.event_id for batch in hook.batches for tp in batch.duplicates]
    assert sorted(applied) == sorted([order.event_id, marker.event_id])
    assert duplicates == [order.event_id]


async def test_events_out_of_order_leave_traits_and_counters_as_if_ordered(
    servers: LocalServers, redis: Redis
) -> None:
    topic = await new_topic(servers.kafka_bootstrap)
    ordered, shuffled = unique("ordered"), unique("shuffled")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)

    def history(customer: str) -> list[touchpoint_pb2.Touchpoint]:
        first = event(customer, "customer.identified", at=start, kind=Kind.TOUCHPOINT_KIND_IDENTIFY)
        first.identify.traits.update({"name": "Hana", "plan": "free", "city": "Kyoto"})
        second = event(
            customer,
            "customer.identified",
            at=start + timedelta(days=1),
            kind=Kind.TOUCHPOINT_KIND_IDENTIFY,
        )
        second.identify.traits.update({"plan": "gold", "city": None})
        orders = [
            event(
                customer,
                "order.completed",
                at=start + timedelta(hours=hours),
                props={"total": amount, "currency": currency},
            )
            for hours, amount, currency in ((1, 1000, "JPY"), (30, 2500, "USD"), (50, 500, "EUR"))
        ]
        seen = event(customer, "page.viewed", at=start + timedelta(days=2, hours=5))
        return [first, *orders, second, seen]

    in_order = history(ordered)
    reversed_history = list(reversed(history(shuffled)))
    await produce(servers.kafka_bootstrap, topic, [*in_order, *reversed_history])

    async with running_processor(servers.kafka_bootstrap, redis, topic):
        await eventually(_has_event(redis, ordered, in_order[-1].event_id))  # type: ignore[arg-type]
        await eventually(_has_event(redis, shuffled, reversed_history[-1].event_id))  # type: ignore[arg-type]

    a, b = await _view(redis, ordered), await _view(redis, shuffled)
    assert dict(a.traits) == dict(b.traits) == {"name": "Hana", "plan": "gold"}
    assert a.counters == b.counters
    assert a.counters.orders_count == 3
    assert a.counters.total_spent == 4000
    assert a.counters.currency == "JPY"
    assert a.counters.first_order_at.ToDatetime(UTC) == start + timedelta(hours=1)
    assert a.counters.last_order_at.ToDatetime(UTC) == start + timedelta(hours=50)
    assert a.counters.last_seen_at.ToDatetime(UTC) == start + timedelta(days=2, hours=5)
    assert a.phase == b.phase == customer_pb2.LIFECYCLE_PHASE_ACTIVE
    assert [e.name for e in a.timeline] == [e.name for e in b.timeline]


async def test_consent_preferences_and_merge_are_remembered_and_in_the_timeline(
    servers: LocalServers, redis: Redis
) -> None:
    topic = await new_topic(servers.kafka_bootstrap)
    anonymous, known = unique("anon"), unique("cust")
    now = datetime.now(UTC)
    browsing = [event(anonymous, "page.viewed", at=now - timedelta(minutes=m)) for m in (9, 8)]
    signup = event(anonymous, "customer.identified", kind=Kind.TOUCHPOINT_KIND_IDENTIFY)
    signup.identify.traits.update({"newsletter": True})
    consent = event(known, "consent.changed", kind=Kind.TOUCHPOINT_KIND_CONSENT)
    consent.source = "signup_form"
    consent.consent.consents.add(
        channel=channel_pb2.CHANNEL_EMAIL, status=consent_pb2.CONSENT_STATUS_OPTED_IN
    )
    prefs = event(known, "preferences.changed", kind=Kind.TOUCHPOINT_KIND_PREFERENCES)
    prefs.preferences.preferences.preferred_channel = channel_pb2.CHANNEL_LINE
    prefs.preferences.preferences.time_zone = "Asia/Tokyo"
    prefs.preferences.update_mask.paths.append("preferred_channel")
    order = event(known, "order.completed", props={"amount": 100})
    merge = event(known, "identity.merged", kind=Kind.TOUCHPOINT_KIND_MERGE)
    merge.merge.from_customer_id = anonymous
    merge.merge.into_customer_id = known
    late = event(anonymous, "page.viewed")  # ingest was slow to learn of the merge
    await produce(
        servers.kafka_bootstrap, topic, [*browsing, signup, consent, prefs, order, merge, late]
    )

    async with running_processor(servers.kafka_bootstrap, redis, topic):
        await eventually(_has_event(redis, known, late.event_id))  # type: ignore[arg-type]

    view = await _view(redis, known)
    assert list(view.merged_ids) == [anonymous]
    assert dict(view.traits) == {"newsletter": True}
    assert view.counters.events_count == 4  # two views before the merge, the order, one after
    assert view.counters.orders_count == 1
    assert [(c.channel, c.status, c.source) for c in view.consents] == [(1, 1, "signup_form")]
    assert view.preferences.preferred_channel == 2
    assert view.preferences.time_zone == ""  # not in the update mask
    names = {e.name for e in view.timeline}
    assert {"identity.merged", "consent.changed", "preferences.changed"} <= names
    assert await MemoryReader(redis).customer(anonymous) is None
