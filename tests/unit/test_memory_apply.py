"""Planning memory operations from touchpoints: what is invalid, what each kind writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enishi import keys
from enishi.memory import model
from enishi.memory.apply import InvalidTouchpoint, Plan, plan, timeline_entry, validate
from enishi.memory.scripts import OPCODES, key_index
from enishi.v1 import channel_pb2, consent_pb2, dispatch_pb2, touchpoint_pb2

Kind = touchpoint_pb2.TouchpointKind
NOW_MS = model.datetime_ms(datetime(2026, 6, 1, tzinfo=UTC))


def _touchpoint(
    name: str = "page.viewed",
    kind: touchpoint_pb2.TouchpointKind.ValueType = Kind.TOUCHPOINT_KIND_EVENT,
) -> touchpoint_pb2.Touchpoint:
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id="01J0000000000000000000000A", customer_id="c1", name=name, kind=kind
    )
    touchpoint.occurred_at.CopyFrom(model.from_ms(NOW_MS - 1000))
    return touchpoint


def _ops(result: Plan) -> list[tuple[str, tuple[object, ...]]]:
    """The plan's tokens split into (opcode, operands)."""
    ops: list[tuple[str, tuple[object, ...]]] = []
    i = 0
    while i < len(result.tokens):
        opcode = str(result.tokens[i])
        arity = OPCODES[opcode]
        ops.append((opcode, tuple(result.tokens[i + 1 : i + 1 + arity])))
        i += 1 + arity
    return ops


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: setattr(t, "event_id", ""), "event_id: missing"),
        (lambda t: setattr(t, "customer_id", ""), "customer_id: missing"),
        (lambda t: setattr(t, "name", ""), "name: missing"),
        (lambda t: t.ClearField("occurred_at"), "occurred_at: missing"),
        (lambda t: setattr(t, "kind", Kind.TOUCHPOINT_KIND_CONSENT), "consent: missing"),
    ],
)
def test_invalid_touchpoints_are_rejected_naming_the_field(change: object, message: str) -> None:
    touchpoint = _touchpoint()
    change(touchpoint)  # type: ignore[operator]
    with pytest.raises(InvalidTouchpoint, match=message):
        plan(touchpoint, now_ms=NOW_MS)


def test_a_record_key_other_than_the_customer_id_is_rejected() -> None:
    with pytest.raises(InvalidTouchpoint, match="customer_id: differs from the record key"):
        validate(_touchpoint(), key="someone-else")


def test_a_merge_must_name_both_customers_distinctly() -> None:
    merge = _touchpoint("identity.merged", Kind.TOUCHPOINT_KIND_MERGE)
    merge.merge.into_customer_id = "c1"
    merge.merge.from_customer_id = "c1"
    with pytest.raises(InvalidTouchpoint, match="merge.from_customer_id"):
        plan(merge, now_ms=NOW_MS)


def test_an_order_counts_its_amount_from_total_when_amount_is_absent() -> None:
    order = _touchpoint("order.completed")
    order.props.update({"total": "1500.5", "currency": "JPY"})
    ops = _ops(plan(order, now_ms=NOW_MS))
    counters = key_index(keys.COUNTERS)
    assert ("I", (counters, model.ORDERS_COUNT, 1)) in ops
    assert ("R", (counters, model.TOTAL_SPENT, 1500.5)) in ops
    assert ("F", (counters, key_index(keys.COUNTERS_VERSIONS), model.CURRENCY)) in [
        (op, args[:3]) for op, args in ops
    ]


def test_an_order_with_a_non_numeric_amount_is_rejected() -> None:
    order = _touchpoint("order.completed")
    order.props.update({"amount": "lots"})
    with pytest.raises(InvalidTouchpoint, match="props.amount"):
        plan(order, now_ms=NOW_MS)


def test_identify_sets_traits_by_version_and_a_null_removes_one() -> None:
    identify = _touchpoint("customer.identified", Kind.TOUCHPOINT_KIND_IDENTIFY)
    identify.identify.traits.update({"plan": "gold", "city": None})
    identify.identify.identity.email = "hana@example.jp"
    ops = _ops(plan(identify, now_ms=NOW_MS))
    version = model.version(NOW_MS - 1000, identify.event_id)
    traits, versions = key_index(keys.TRAITS), key_index(keys.TRAITS_VERSIONS)
    assert ("L", (traits, versions, "plan", version, '"gold"')) in ops
    assert ("D", (traits, versions, "city", version)) in ops
    assert any(op == "C" and args[4] == "email" for op, args in ops)


def test_an_identity_that_addresses_a_channel_carries_that_channels_reachable_again() -> None:
    identify = _touchpoint("customer.identified", Kind.TOUCHPOINT_KIND_IDENTIFY)
    identity = identify.identify.identity
    identity.email, identity.phone, identity.anonymous_id = "hana@example.jp", "+819012345678", "a"
    identity.push_tokens.add(token="tok-1")
    ops = _ops(plan(identify, now_ms=NOW_MS))
    parts = (
        key_index(keys.IDENTITY),
        key_index(keys.IDENTITY_VERSIONS),
        key_index(keys.REACHABILITY),
        key_index(keys.REACHABILITY_VERSIONS),
    )
    changes = {args[4]: args for op, args in ops if op == "C"}
    assert set(changes) == {"email", "phone", "push:tok-1"}
    assert {name: args[7] for name, args in changes.items()} == {
        "email": "email",
        "phone": "sms",
        "push:tok-1": "push",
    }
    assert all(args[:4] == parts for args in changes.values())
    reach = consent_pb2.ChannelReachability.FromString(changes["phone"][8])  # type: ignore[arg-type]
    assert (reach.channel, reach.reachable, reach.reason) == (
        channel_pb2.CHANNEL_SMS,
        True,
        "sms.address_changed",
    )
    assert model.to_ms(reach.updated_at) == NOW_MS - 1000
    # An anonymous id addresses no channel: a plain last-write-wins.
    assert any(op == "L" and args[2] == "anonymous_id" for op, args in ops)


def test_a_message_sent_long_ago_is_counted_but_not_in_the_7_day_window() -> None:
    message = _touchpoint("message.sent", Kind.TOUCHPOINT_KIND_MESSAGE)
    message.receipt.channel = channel_pb2.CHANNEL_EMAIL
    message.occurred_at.CopyFrom(model.from_ms(NOW_MS - 8 * 86_400_000))
    ops = [op for op, _ in _ops(plan(message, now_ms=NOW_MS))]
    assert "Z" not in ops
    assert ("I", (key_index(keys.COUNTERS), "messages:email", 1)) in _ops(
        plan(message, now_ms=NOW_MS)
    )


def test_preferences_change_only_the_fields_in_the_mask() -> None:
    change = _touchpoint("preferences.changed", Kind.TOUCHPOINT_KIND_PREFERENCES)
    change.preferences.preferences.locale = "ja-JP"
    change.preferences.preferences.time_zone = "Asia/Tokyo"
    change.preferences.update_mask.paths.append("locale")
    fields = [args[2] for op, args in _ops(plan(change, now_ms=NOW_MS)) if op == "L"]
    assert fields == ["locale"]


def test_an_unknown_preference_path_is_rejected() -> None:
    change = _touchpoint("preferences.changed", Kind.TOUCHPOINT_KIND_PREFERENCES)
    change.preferences.update_mask.paths.append("shoe_size")
    with pytest.raises(InvalidTouchpoint, match=r"update_mask.paths\[0\]"):
        plan(change, now_ms=NOW_MS)


def test_a_skipped_message_says_why_in_the_timeline() -> None:
    skipped = _touchpoint("message.skipped", Kind.TOUCHPOINT_KIND_SKIP)
    skipped.skipped.skip_reason = dispatch_pb2.SKIP_REASON_FREQUENCY_CAP
    skipped.skipped.detail = "daily cap 3 reached"
    skipped.skipped.reason.journey_id = "f2-second-purchase"
    entry = timeline_entry(skipped)
    assert entry.summary == "skipped: frequency_cap, daily cap 3 reached"
    assert entry.reason.journey_id == "f2-second-purchase"


def test_identify_summaries_never_carry_identity_values() -> None:
    identify = _touchpoint("customer.identified", Kind.TOUCHPOINT_KIND_IDENTIFY)
    identify.identify.identity.email = "hana@example.jp"
    assert "hana" not in timeline_entry(identify).summary
