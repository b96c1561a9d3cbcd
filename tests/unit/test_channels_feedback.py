"""Provider feedback as touchpoints: a dead address makes its channel unreachable, the same
event whenever the receipt is published; an unsubscribe is a consent change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enishi.channels import feedback
from enishi.channels.receipts import receipt_touchpoint
from enishi.memory.apply import plan
from enishi.memory.model import datetime_ms
from enishi.v1 import channel_pb2, consent_pb2, dispatch_pb2, touchpoint_pb2

AT = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)


def _receipt(
    error_code: str,
    *,
    channel: channel_pb2.Channel.ValueType = channel_pb2.CHANNEL_EMAIL,
    status: dispatch_pb2.DeliveryStatus.ValueType = dispatch_pb2.DELIVERY_STATUS_FAILED,
    permanent: bool = True,
) -> touchpoint_pb2.Touchpoint:
    return receipt_touchpoint(
        dispatch_id="d_1",
        customer_id="c1",
        channel=channel,
        status=status,
        provider="smtp",
        at=AT,
        error_code=error_code,
        permanent=permanent,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


@pytest.mark.parametrize(
    ("channel", "error_code", "reason"),
    [
        (channel_pb2.CHANNEL_EMAIL, "bounced", "email.hard_bounce"),
        (channel_pb2.CHANNEL_PUSH, "unregistered", "push.unregistered"),
        (channel_pb2.CHANNEL_PUSH, "invalid_token", "push.invalid_token"),
        (channel_pb2.CHANNEL_SMS, "invalid_number", "sms.invalid_number"),
    ],
)
def test_a_dead_address_receipt_makes_its_channel_unreachable(
    channel: channel_pb2.Channel.ValueType, error_code: str, reason: str
) -> None:
    receipt = _receipt(error_code, channel=channel)
    implied = feedback.dead_address(receipt)
    assert implied is not None
    assert implied.name == "channel.reachability_changed"
    assert implied.kind == touchpoint_pb2.TOUCHPOINT_KIND_REACHABILITY
    assert implied.customer_id == "c1"
    state = implied.reachability
    assert (state.channel, state.reachable, state.reason) == (channel, False, reason)
    assert state.updated_at.ToDatetime(UTC) == AT
    assert implied.props["dispatch_id"] == "d_1"
    assert implied.trace.traceparent == receipt.trace.traceparent
    # Derived, not minted: the receipt published again brings the same event again.
    assert feedback.dead_address(_receipt(error_code, channel=channel)) == implied
    # And the memory can apply it.
    assert plan(implied, now_ms=datetime_ms(AT)).tokens


@pytest.mark.parametrize(
    "receipt",
    [
        _receipt("smtp_550"),
        _receipt("bounced", permanent=False),
        _receipt("", status=dispatch_pb2.DELIVERY_STATUS_SENT, permanent=False),
        _receipt("expired"),
    ],
)
def test_other_receipts_imply_nothing(receipt: touchpoint_pb2.Touchpoint) -> None:
    assert feedback.dead_address(receipt) is None


def test_receipts_are_published_each_followed_by_what_it_implies() -> None:
    sent = _receipt("", status=dispatch_pb2.DELIVERY_STATUS_SENT, permanent=False)
    bounced = _receipt("bounced")
    published = feedback.with_feedback([bounced, sent])
    assert [t.name for t in published] == [
        "message.failed",
        "channel.reachability_changed",
        "message.sent",
    ]


def test_an_unsubscribe_is_an_email_opt_out_with_its_source_and_dispatch() -> None:
    touchpoint = feedback.unsubscribe_touchpoint(
        event_id="ev-1",
        customer_id="c1",
        channel=channel_pb2.CHANNEL_EMAIL,
        at=AT,
        dispatch_id="d_1",
    )
    assert (touchpoint.name, touchpoint.kind) == (
        "consent.changed",
        touchpoint_pb2.TOUCHPOINT_KIND_CONSENT,
    )
    [consent] = touchpoint.consent.consents
    assert consent.channel == channel_pb2.CHANNEL_EMAIL
    assert consent.status == consent_pb2.CONSENT_STATUS_OPTED_OUT
    assert consent.source == "email.list_unsubscribe"
    assert consent.updated_at.ToDatetime(UTC) == AT
    assert touchpoint.props["dispatch_id"] == "d_1"
    assert plan(touchpoint, now_ms=datetime_ms(AT)).tokens
