"""The channel framework's pure parts: what is a dispatch, how long to back off, receipts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from enishi.channels.consumer import Finished, InvalidDispatch, backoff, decode
from enishi.channels.http import HttpReply, outcome_for, retry_after_seconds
from enishi.channels.receipts import receipt_event_id, receipt_touchpoint
from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    topic: str = "dispatch.line"
    partition: int = 0
    offset: int = 0


def _line(**fields: object) -> dispatch_pb2.DispatchEvent:
    event = dispatch_pb2.DispatchEvent(
        dispatch_id="d_1",
        channel=channel_pb2.CHANNEL_LINE,
        customer_id="c1",
        address="U" + "a" * 32,
    )
    event.line.messages.add().update({"type": "text", "text": "hi"})
    for name, value in fields.items():
        setattr(event, name, value)
    return event


def test_a_valid_dispatch_decodes() -> None:
    event = _line()
    assert decode(Rec(b"c1", event.SerializeToString()), "line") == event


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (Rec(b"c1", None), "value: missing"),
        (Rec(b"c1", _line(dispatch_id="").SerializeToString()), "dispatch_id: missing"),
        (Rec(b"c1", _line(channel=1).SerializeToString()), "channel: CHANNEL_EMAIL on the line"),
        (Rec(b"c1", _line(channel=0).SerializeToString()), "channel: CHANNEL_UNSPECIFIED"),
        (Rec(b"c2", _line().SerializeToString()), "customer_id: differs from the record key"),
        (Rec(b"c1", _line(address="").SerializeToString()), "address: missing"),
        (Rec(b"\xff", _line().SerializeToString()), "key: not UTF-8"),
    ],
)
def test_a_record_that_is_not_a_deliverable_dispatch_names_the_field(
    record: Rec, reason: str
) -> None:
    with pytest.raises(InvalidDispatch, match=reason):
        decode(record, "line")


def test_a_dispatch_without_content_for_its_channel_is_refused() -> None:
    event = _line()
    event.ClearField("line")
    with pytest.raises(InvalidDispatch, match="line: missing"):
        decode(Rec(b"c1", event.SerializeToString()), "line")


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    random.seed(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)]:
        delays = [backoff(attempt, None, base=0.5, cap=30.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_backoff_is_never_shorter_than_retry_after_but_caps_an_absurd_one() -> None:
    assert backoff(1, 3.0, base=0.05, cap=0.5) == 3.0
    assert backoff(1, 86400.0, base=0.05, cap=0.5) == 120.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 01 Jan 2025 00:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, "sent"), (201, "sent"), (429, "transient"), (500, "transient"), (503, "transient")]
    + [(408, "transient"), (400, "permanent"), (401, "permanent"), (404, "permanent")],
)
def test_http_statuses_map_to_outcomes(status: int, kind: str) -> None:
    outcome = outcome_for(HttpReply(status, body={"message": "nope"}))
    assert outcome.kind == kind
    if kind != "sent":
        assert outcome.error_code == f"http_{status}"


def test_receipts_have_deterministic_ids_and_the_contract_kinds() -> None:
    reason = dispatch_pb2.DispatchReason(journey_id="j", step_id="s")
    at = datetime.now(UTC)
    sent = receipt_touchpoint(
        dispatch_id="d_1",
        customer_id="c1",
        channel=channel_pb2.CHANNEL_LINE,
        status=dispatch_pb2.DELIVERY_STATUS_SENT,
        provider="line",
        at=at,
        reason=reason,
    )
    again = receipt_touchpoint(
        dispatch_id="d_1",
        customer_id="c1",
        channel=channel_pb2.CHANNEL_LINE,
        status=dispatch_pb2.DELIVERY_STATUS_SENT,
        provider="line",
        at=at + timedelta(seconds=5),
    )
    assert sent.event_id == again.event_id
    assert sent.kind == touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE
    assert (sent.name, sent.channel, sent.customer.customer_id) == ("message.sent", "line", "c1")
    assert sent.receipt.reason == reason
    failed_id = receipt_event_id("d_1", dispatch_pb2.DELIVERY_STATUS_FAILED)
    assert failed_id != sent.event_id


def test_a_finished_delivery_round_trips_through_its_redis_value() -> None:
    receipt = touchpoint_pb2.Touchpoint(event_id="e\n1", name="message.failed")
    finished = Finished(receipt, "line: permanent failure:\nhttp_400")
    decoded = Finished.decode(finished.encode())
    assert decoded.receipt == receipt
    assert decoded.dead_letter_reason == "line: permanent failure: http_400"
