"""Receipt touchpoints: what became of a dispatch, on `touchpoints`, with the dispatch's why.

`message.sent` is kind MESSAGE, every other status kind RECEIPT (docs/contracts.md). The
event id is derived from (dispatch id, status), so a receipt published twice (a redelivered
record, a restarted service) is one event to the stream processor.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final, TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp

from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2

Status: TypeAlias = dispatch_pb2.DeliveryStatus.ValueType

NAMES: Final[dict[int, str]] = {
    dispatch_pb2.DELIVERY_STATUS_SENT: "message.sent",
    dispatch_pb2.DELIVERY_STATUS_DELIVERED: "message.delivered",
    dispatch_pb2.DELIVERY_STATUS_OPENED: "message.opened",
    dispatch_pb2.DELIVERY_STATUS_CLICKED: "message.clicked",
    dispatch_pb2.DELIVERY_STATUS_REPLIED: "message.replied",
    dispatch_pb2.DELIVERY_STATUS_FAILED: "message.failed",
    dispatch_pb2.DELIVERY_STATUS_BOUNCED: "message.bounced",
}


def channel_name(channel: int) -> str:
    """`CHANNEL_EMAIL` -> "email" (the topic suffix)."""
    return channel_pb2.Channel.Name(channel).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]


def source(channel: str) -> str:
    """The `source` of touchpoints a channel service writes, e.g. "enishi.channel.email"."""
    return f"enishi.channel.{channel}"


def receipt_event_id(dispatch_id: str, status: Status, discriminator: str = "") -> str:
    """Deterministic event id of a receipt; `discriminator` separates repeatable statuses
    (each click, each reply) of one dispatch."""
    material = f"{dispatch_id}\x1f{int(status)}\x1f{discriminator}".encode()
    return "rcpt-" + hashlib.sha256(material).hexdigest()[:32]


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def receipt_touchpoint(
    *,
    dispatch_id: str,
    customer_id: str,
    channel: int,
    status: Status,
    provider: str,
    at: datetime,
    reason: dispatch_pb2.DispatchReason | None = None,
    provider_message_id: str = "",
    error_code: str = "",
    error_message: str = "",
    permanent: bool = False,
    attempts: int = 0,
    props: dict[str, str] | None = None,
    discriminator: str = "",
    traceparent: str = "",
) -> touchpoint_pb2.Touchpoint:
    """The touchpoint `message.<status>` about one dispatch, keyed by `customer_id`."""
    name = NAMES[int(status)]
    kind = (
        touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE
        if status == dispatch_pb2.DELIVERY_STATUS_SENT
        else touchpoint_pb2.TOUCHPOINT_KIND_RECEIPT
    )
    channel_text = channel_name(channel)
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id=receipt_event_id(dispatch_id, status, discriminator),
        customer_id=customer_id,
        name=name,
        kind=kind,
        source=source(channel_text),
        channel=channel_text,
    )
    touchpoint.customer.customer_id = customer_id
    touchpoint.occurred_at.CopyFrom(_timestamp(at))
    touchpoint.received_at.CopyFrom(_timestamp(at))
    if props:
        touchpoint.props.update(props)
    if traceparent:
        touchpoint.trace.traceparent = traceparent
    receipt = touchpoint.receipt
    receipt.dispatch_id = dispatch_id
    receipt.channel = channel  # type: ignore[assignment]
    receipt.status = status
    receipt.provider = provider
    receipt.provider_message_id = provider_message_id
    receipt.occurred_at.CopyFrom(_timestamp(at))
    receipt.error_code = error_code
    receipt.error_message = error_message
    receipt.permanent = permanent
    receipt.attempts = attempts
    if reason is not None:
        receipt.reason.CopyFrom(reason)
    return touchpoint
