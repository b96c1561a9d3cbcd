"""The DispatchEvent and the SKIP touchpoint: every field, and the why on both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import json_format

from enishi.memory import model
from enishi.memory.apply import plan, timeline_entry
from enishi.sending import dispatch
from enishi.sending.policy import Recipient
from enishi.sending.render import Rendered
from enishi.v1 import channel_pb2, dispatch_pb2, identity_pb2, touchpoint_pb2
from tests.sending_support import request

NOW = datetime(2025, 3, 10, 3, 0, tzinfo=UTC)


def _rendered(channel: str, **fields: str) -> Rendered:
    return Rendered("thanks", channel, "ja", fields)


def test_a_line_dispatch_carries_address_content_locale_times_and_the_why() -> None:
    req = request("c1", variant="v1")
    event = dispatch.build(
        req,
        Recipient("line", "U" + "a" * 32),
        _rendered("line", text="こんにちは"),
        NOW,
        designer="ignored-because-the-request-has-one",
        expiry=timedelta(hours=24),
    )
    assert event.dispatch_id == req.dispatch_id
    assert event.channel == channel_pb2.CHANNEL_LINE
    assert event.customer_id == "c1"
    assert event.address == "U" + "a" * 32
    assert event.locale == "ja"
    assert event.created_at.ToDatetime(tzinfo=UTC) == NOW
    assert event.expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=24)
    assert [json_format.MessageToDict(m) for m in event.line.messages] == [
        {"type": "text", "text": "こんにちは"}
    ]
    assert event.reason == dispatch_pb2.DispatchReason(
        journey_id="sending-test",
        journey_version=1,
        step_id="thanks",
        trigger_event_id="ev-trigger",
        designer="crm-team@shop.example",
        workflow_id="journey:sending-test:c1",
        template_id="thanks",
        variant="v1",
    )


def test_each_channel_fills_its_own_content() -> None:
    req = request("c1")
    email = dispatch.build(
        req,
        Recipient("email", "a@example.jp"),
        _rendered("email", subject="S", text="T", html="<p>H</p>"),
        NOW,
    )
    assert (email.WhichOneof("content"), email.email.subject, email.email.html) == (
        "email",
        "S",
        "<p>H</p>",
    )
    assert not email.HasField("expires_at")
    sms = dispatch.build(req, Recipient("sms", "+819012345678"), _rendered("sms", text="T"), NOW)
    assert (sms.channel, sms.sms.text, sms.address) == (
        channel_pb2.CHANNEL_SMS,
        "T",
        "+819012345678",
    )
    push = dispatch.build(
        req,
        Recipient("push", "tok", identity_pb2.PUSH_PLATFORM_ANDROID),
        _rendered("push", title="A", body="B"),
        NOW,
    )
    assert (push.push.title, push.push.body, push.push.platform) == (
        "A",
        "B",
        identity_pb2.PUSH_PLATFORM_ANDROID,
    )


def test_the_designer_comes_from_the_journey_when_the_request_has_none() -> None:
    event = dispatch.build(
        request("c1", designer=""),
        Recipient("sms", "+819012345678"),
        _rendered("sms", text="T"),
        NOW,
        designer="from-journey",
    )
    assert event.reason.designer == "from-journey"


def test_a_retried_send_builds_the_same_bytes() -> None:
    args = (request("c1"), Recipient("sms", "+819012345678"), _rendered("sms", text="T"), NOW)
    assert dispatch.build(*args).SerializeToString() == dispatch.build(*args).SerializeToString()


def test_a_skip_touchpoint_records_reason_detail_and_the_why() -> None:
    req = request("c1")
    touchpoint = dispatch.skip_touchpoint(
        req, dispatch_pb2.SKIP_REASON_NO_CONSENT, "email: no opt-in", NOW, channel="email"
    )
    assert touchpoint.name == "message.skipped"
    assert touchpoint.kind == touchpoint_pb2.TOUCHPOINT_KIND_SKIP
    assert touchpoint.customer_id == "c1" == touchpoint.customer.customer_id
    assert touchpoint.occurred_at.ToDatetime(tzinfo=UTC) == NOW
    skipped = touchpoint.skipped
    assert skipped.skip_reason == dispatch_pb2.SKIP_REASON_NO_CONSENT
    assert skipped.channel == channel_pb2.CHANNEL_EMAIL
    assert skipped.dispatch_id == req.dispatch_id
    assert skipped.reason.journey_id == "sending-test"
    assert not skipped.HasField("deferred_until")


def test_a_deferral_is_message_deferred_with_its_time_and_its_own_event_id() -> None:
    req = request("c1")
    later = NOW + timedelta(hours=9)
    deferred = dispatch.skip_touchpoint(
        req, dispatch_pb2.SKIP_REASON_QUIET_HOURS, "quiet", NOW, deferred_until=later
    )
    again = dispatch.skip_touchpoint(
        req, dispatch_pb2.SKIP_REASON_QUIET_HOURS, "quiet", NOW, deferred_until=later
    )
    skipped = dispatch.skip_touchpoint(req, dispatch_pb2.SKIP_REASON_QUIET_HOURS, "quiet", NOW)
    assert deferred.name == "message.deferred"
    assert deferred.skipped.deferred_until.ToDatetime(tzinfo=UTC) == later
    assert deferred.event_id == again.event_id != skipped.event_id


def test_the_memory_accepts_a_skip_and_summarises_it_for_the_timeline() -> None:
    touchpoint = dispatch.skip_touchpoint(
        request("c1"), dispatch_pb2.SKIP_REASON_FREQUENCY_CAP, "daily cap 3 reached", NOW
    )
    plan(touchpoint, now_ms=model.datetime_ms(NOW))  # raises when the memory would reject it
    entry = timeline_entry(touchpoint)
    assert entry.summary == "skipped: frequency_cap, daily cap 3 reached"
    assert entry.reason.step_id == "thanks"
