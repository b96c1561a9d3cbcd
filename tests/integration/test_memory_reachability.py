"""Reachability in memory on real Valkey: a dead address makes its channel unreachable until
the customer gives a new one; the same address again changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from enishi.channels import feedback
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.reader import MemoryReader
from enishi.memory.writer import MemoryWriter
from enishi.v1 import channel_pb2, touchpoint_pb2
from tests.integration.stream_support import event, unique

Kind = touchpoint_pb2.TouchpointKind
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def _identify(
    customer: str, minutes: int, *, email: str = "", phone: str = "", token: str = ""
) -> touchpoint_pb2.Touchpoint:
    identify = event(
        customer,
        "customer.identified",
        at=T0 + timedelta(minutes=minutes),
        kind=Kind.TOUCHPOINT_KIND_IDENTIFY,
    )
    identify.identify.identity.email = email
    identify.identify.identity.phone = phone
    if token:
        identify.identify.identity.push_tokens.add(token=token)
    return identify


def _dead(
    customer: str, minutes: int, channel: channel_pb2.Channel.ValueType, reason: str
) -> touchpoint_pb2.Touchpoint:
    return feedback.reachability_touchpoint(
        event_id=unique("reach"),
        customer_id=customer,
        channel=channel,
        reachable=False,
        reason=reason,
        at=T0 + timedelta(minutes=minutes),
    )


async def _apply(redis: Redis, *touchpoints: touchpoint_pb2.Touchpoint) -> None:
    now_ms = model.datetime_ms(T0 + timedelta(days=1))
    await MemoryWriter(redis).apply([plan(t, now_ms=now_ms) for t in touchpoints])


async def _reach(redis: Redis, customer: str) -> dict[str, tuple[bool, str]]:
    view = await MemoryReader(redis).customer(customer, now=T0 + timedelta(days=1))
    assert view is not None
    return {model.channel_name(r.channel): (r.reachable, r.reason) for r in view.reachability}


async def test_a_bounced_email_is_unreachable_until_a_new_address_arrives(redis: Redis) -> None:
    customer = unique("bounce")
    await _apply(redis, _identify(customer, 0, email="old@example.jp"))
    assert await _reach(redis, customer) == {}  # no record for anyone who never bounced

    await _apply(redis, _dead(customer, 10, channel_pb2.CHANNEL_EMAIL, "email.hard_bounce"))
    assert await _reach(redis, customer) == {"email": (False, "email.hard_bounce")}

    # The same address again (an Identify at every login) does not undo the bounce.
    await _apply(redis, _identify(customer, 20, email="old@example.jp"))
    assert await _reach(redis, customer) == {"email": (False, "email.hard_bounce")}

    await _apply(redis, _identify(customer, 30, email="new@example.jp"))
    assert await _reach(redis, customer) == {"email": (True, "email.address_changed")}

    # A bounce from before the change arriving late was about the old address: it loses.
    await _apply(redis, _dead(customer, 15, channel_pb2.CHANNEL_EMAIL, "email.hard_bounce"))
    assert await _reach(redis, customer) == {"email": (True, "email.address_changed")}

    # The new address bouncing later counts again.
    await _apply(redis, _dead(customer, 40, channel_pb2.CHANNEL_EMAIL, "email.hard_bounce"))
    assert await _reach(redis, customer) == {"email": (False, "email.hard_bounce")}


async def test_an_older_identify_arriving_late_does_not_clear_a_bounce(redis: Redis) -> None:
    customer = unique("late")
    await _apply(
        redis,
        _identify(customer, 30, email="now@example.jp"),
        _dead(customer, 40, channel_pb2.CHANNEL_EMAIL, "email.hard_bounce"),
        _identify(customer, 5, email="before@example.jp"),  # loses last-write-wins
    )
    assert await _reach(redis, customer) == {"email": (False, "email.hard_bounce")}
    view = await MemoryReader(redis).customer(customer)
    assert view is not None and view.identity.email == "now@example.jp"


async def test_an_unregistered_push_token_stays_dead_until_a_new_token_arrives(
    redis: Redis,
) -> None:
    customer = unique("push")
    await _apply(
        redis,
        _identify(customer, 0, phone="+819012345678", token="tok-old"),
        _dead(customer, 5, channel_pb2.CHANNEL_PUSH, "push.unregistered"),
        _dead(customer, 6, channel_pb2.CHANNEL_SMS, "sms.invalid_number"),
        _identify(customer, 10, token="tok-old"),
    )
    assert await _reach(redis, customer) == {
        "push": (False, "push.unregistered"),
        "sms": (False, "sms.invalid_number"),
    }
    await _apply(redis, _identify(customer, 20, token="tok-new"))
    assert await _reach(redis, customer) == {
        "push": (True, "push.address_changed"),
        "sms": (False, "sms.invalid_number"),
    }
