"""The memory writer's script on real Valkey: order-independence, retention, message windows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.reader import MemoryReader
from enishi.memory.writer import MemoryWriter
from enishi.v1 import channel_pb2, consent_pb2, customer_pb2, dispatch_pb2, touchpoint_pb2
from tests.integration.stream_support import event, unique

Kind = touchpoint_pb2.TouchpointKind
NOW = datetime.now(UTC).replace(microsecond=0)


def _history(customer: str) -> list[touchpoint_pb2.Touchpoint]:
    """A varied history with ties, tombstones and overrides; event ids fixed per position."""
    at = [NOW - timedelta(hours=h) for h in range(40, 0, -1)]
    items: list[touchpoint_pb2.Touchpoint] = []

    def add(touchpoint: touchpoint_pb2.Touchpoint) -> touchpoint_pb2.Touchpoint:
        touchpoint.event_id = f"E{len(items):04d}"
        items.append(touchpoint)
        return touchpoint

    trait_changes: list[dict[str, Any]] = [
        {"plan": "free", "city": "Kyoto"},
        {"plan": "gold"},
        {"city": None},
        {"plan": "silver"},
    ]
    for index, traits in enumerate(trait_changes):
        identify = add(
            event(
                customer,
                "customer.identified",
                at=at[index * 5],
                kind=Kind.TOUCHPOINT_KIND_IDENTIFY,
            )
        )
        identify.identify.traits.update(traits)
        identify.identify.identity.email = f"v{index}@example.jp"
    tie = add(event(customer, "customer.identified", at=at[15], kind=Kind.TOUCHPOINT_KIND_IDENTIFY))
    tie.identify.traits.update({"tier": "a"})
    tie = add(event(customer, "customer.identified", at=at[15], kind=Kind.TOUCHPOINT_KIND_IDENTIFY))
    tie.identify.traits.update({"tier": "b"})  # same time: the larger event id wins
    for index, amount in enumerate((1000, 250.5, 4000)):
        add(
            event(
                customer,
                "order.completed",
                at=at[2 + index * 7],
                props={"amount": amount, "currency": ["JPY", "USD", "EUR"][index]},
            )
        )
    opted = (consent_pb2.CONSENT_STATUS_OPTED_IN, consent_pb2.CONSENT_STATUS_OPTED_OUT)
    for index, status in enumerate((opted[0], opted[1], opted[0])):
        consent = add(
            event(
                customer, "consent.changed", at=at[3 + index * 9], kind=Kind.TOUCHPOINT_KIND_CONSENT
            )
        )
        consent.consent.consents.add(channel=channel_pb2.CHANNEL_EMAIL, status=status)
    for index in range(4):
        sent = add(
            event(
                customer, "message.sent", at=at[10 + index * 8], kind=Kind.TOUCHPOINT_KIND_MESSAGE
            )
        )
        sent.receipt.channel = (channel_pb2.CHANNEL_EMAIL, channel_pb2.CHANNEL_LINE)[index % 2]
        sent.receipt.dispatch_id = f"d{index}"
        sent.receipt.status = dispatch_pb2.DELIVERY_STATUS_SENT
    add(event(customer, "support.ticket_opened", at=at[11]))
    for hour in (4, 8, 30):
        add(event(customer, "page.viewed", at=at[hour]))
    return items


def _comparable(view: customer_pb2.Customer) -> customer_pb2.Customer:
    view.ClearField("customer_id")
    view.identity.ClearField("customer_id")
    view.ClearField("updated_at")
    return view


async def test_any_arrival_order_and_batching_gives_the_same_memory(redis: Redis) -> None:
    writer = MemoryWriter(redis, model.Retention(timeline_max=10))
    reader = MemoryReader(redis)
    views = []
    for seed in range(6):
        customer = unique(f"order{seed}")
        history = _history(customer)
        if seed:
            random.Random(seed).shuffle(history)
        rng = random.Random(seed + 100)
        position = 0
        while position < len(history):
            size = rng.randint(1, 7)
            batch = history[position : position + size]
            await writer.apply([plan(tp, now_ms=model.datetime_ms(NOW)) for tp in batch], now=NOW)
            position += size
        view = await reader.customer(customer, timeline_limit=50, now=NOW)
        assert view is not None
        views.append(_comparable(view))

    first = views[0]
    for other in views[1:]:
        assert other == first
    assert dict(first.traits) == {"plan": "silver", "tier": "b"}
    assert first.identity.email == "v3@example.jp"
    assert first.counters.orders_count == 3
    assert first.counters.total_spent == 5250.5
    assert first.counters.currency == "JPY"
    assert [(c.channel, c.status) for c in first.consents] == [(1, 1)]
    assert [(m.channel, m.last_24h, m.last_7d, m.total) for m in first.counters.messages] == [
        (1, 1, 2, 2),  # 30 h and 14 h ago
        (2, 2, 2, 2),  # 22 h and 6 h ago
    ]
    assert len(first.timeline) == 10
    assert sum(a.count for a in first.timeline_aggregates) == len(_history("x")) - 10


async def test_the_timeline_keeps_the_newest_entries_and_folds_older_ones_by_name(
    redis: Redis,
) -> None:
    writer = MemoryWriter(redis, model.Retention(timeline_max=3))
    customer = unique("fold")
    hours = [5, 1, 9, 3, 7, 2, 8]
    events = [
        event(customer, "page.viewed" if h % 2 else "cart.updated", at=NOW - timedelta(hours=h))
        for h in hours
    ]
    for touchpoint in events:  # one at a time, out of order
        await writer.apply([plan(touchpoint, now_ms=model.datetime_ms(NOW))], now=NOW)

    page = await MemoryReader(redis).timeline(customer, page_size=10)
    assert [e.occurred_at.ToDatetime(UTC) for e in page.entries] == [
        NOW - timedelta(hours=h) for h in (1, 2, 3)
    ]
    view = await MemoryReader(redis).customer(customer, now=NOW)
    assert view is not None
    folded = {
        a.name: (a.count, a.first_occurred_at.ToDatetime(UTC)) for a in view.timeline_aggregates
    }
    assert folded == {
        "page.viewed": (3, NOW - timedelta(hours=9)),
        "cart.updated": (1, NOW - timedelta(hours=8)),
    }


async def test_timeline_pages_and_filters_newest_first(redis: Redis) -> None:
    writer = MemoryWriter(redis)
    customer = unique("page")
    events = [
        event(
            customer, "page.viewed" if i % 3 else "order.completed", at=NOW - timedelta(minutes=i)
        )
        for i in range(10)
    ]
    await writer.apply([plan(tp, now_ms=model.datetime_ms(NOW)) for tp in events], now=NOW)
    reader = MemoryReader(redis)

    seen: list[str] = []
    token = ""
    while True:
        page = await reader.timeline(customer, page_size=3, page_token=token, names=["page.viewed"])
        seen.extend(entry.event_id for entry in page.entries)
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == [tp.event_id for i, tp in enumerate(events) if i % 3]


async def test_the_same_event_twice_in_one_batch_is_applied_once(redis: Redis) -> None:
    writer = MemoryWriter(redis)
    customer = unique("dup")
    touchpoint = event(customer, "order.completed", props={"amount": 10})
    planned = plan(touchpoint, now_ms=model.datetime_ms(NOW))
    assert await writer.apply([planned, planned], now=NOW) == [True, False]
    view = await MemoryReader(redis).customer(customer, now=NOW)
    assert view is not None
    assert view.counters.orders_count == 1
