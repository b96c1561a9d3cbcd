"""What providers tell us about the customer, turned into touchpoints that change memory.

A channel service learns things beyond "sent" or "failed": the address is dead (an SMTP
5xx at RCPT TO, FCM `UNREGISTERED`, an SMS provider's `invalid_number`), the customer
blocked the LINE account, the customer clicked "unsubscribe". Each becomes a touchpoint on
`touchpoints`, applied by the stream processor like any other, so the next send's policy
check sees it and falls back to the next channel instead of failing again
(docs/channels.md, "Feedback").

- a permanent failure whose `error_code` says the address is dead (`ADDRESS_ERRORS`) →
  `channel.reachability_changed` (REACHABILITY, `reachable: false`), derived from the
  `message.failed` receipt, so a republished receipt brings the same event (same id) again;
- a one-click unsubscribe → `consent.changed` (CONSENT, `OPTED_OUT`, source
  `email.list_unsubscribe`), the same touchpoint CustomerService.UpdatePreferences writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from enishi.channels.receipts import channel_name, source
from enishi.touchpoints import CONSENT_CHANGED
from enishi.v1 import channel_pb2, consent_pb2, touchpoint_pb2

REACHABILITY_CHANGED: Final = "channel.reachability_changed"
UNSUBSCRIBE_SOURCE: Final = "email.list_unsubscribe"

# Error codes an adapter returns when the address itself is dead (not the message, not the
# provider), and the reachability reason each becomes: `<channel>.<reason>`.
BOUNCED: Final = "bounced"  # SMTP 5xx at RCPT TO: no such mailbox
UNREGISTERED: Final = "unregistered"  # FCM: the app was removed, the token expired
INVALID_TOKEN: Final = "invalid_token"  # FCM: not a registration token at all
INVALID_NUMBER: Final = "invalid_number"  # SMS: no such number, or it cannot take SMS
ADDRESS_ERRORS: Final = {
    BOUNCED: "hard_bounce",
    UNREGISTERED: "unregistered",
    INVALID_TOKEN: "invalid_token",
    INVALID_NUMBER: "invalid_number",
}


def is_dead_address(error_code: str) -> bool:
    """Whether a permanent failure with `error_code` means the address cannot be reached."""
    return error_code in ADDRESS_ERRORS


def _event_id(kind: str, *parts: str) -> str:
    material = "\x1f".join((kind, *parts)).encode()
    return f"{kind}-" + hashlib.sha256(material).hexdigest()[:32]


def _touchpoint(
    kind: touchpoint_pb2.TouchpointKind.ValueType,
    name: str,
    *,
    event_id: str,
    customer_id: str,
    channel: channel_pb2.Channel.ValueType,
    at: datetime,
    received_at: datetime | None = None,
    props: dict[str, str] | None = None,
) -> touchpoint_pb2.Touchpoint:
    channel_text = channel_name(channel)
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id=event_id,
        customer_id=customer_id,
        name=name,
        kind=kind,
        source=source(channel_text),
        channel=channel_text,
    )
    touchpoint.customer.customer_id = customer_id
    touchpoint.occurred_at.FromDatetime(at)
    touchpoint.received_at.FromDatetime(received_at or at)
    if props:
        touchpoint.props.update(props)
    return touchpoint


def reachability_touchpoint(
    *,
    event_id: str,
    customer_id: str,
    channel: channel_pb2.Channel.ValueType,
    reachable: bool,
    reason: str,
    at: datetime,
    received_at: datetime | None = None,
    props: dict[str, str] | None = None,
    traceparent: str = "",
) -> touchpoint_pb2.Touchpoint:
    """`channel.reachability_changed`: the channel can (not) reach the customer, and why."""
    touchpoint = _touchpoint(
        touchpoint_pb2.TOUCHPOINT_KIND_REACHABILITY,
        REACHABILITY_CHANGED,
        event_id=event_id,
        customer_id=customer_id,
        channel=channel,
        at=at,
        received_at=received_at,
        props=props,
    )
    if traceparent:
        touchpoint.trace.traceparent = traceparent
    state = touchpoint.reachability
    state.channel = channel
    state.reachable = reachable
    state.reason = reason
    state.updated_at.FromDatetime(at)
    return touchpoint


def dead_address(receipt: touchpoint_pb2.Touchpoint) -> touchpoint_pb2.Touchpoint | None:
    """The REACHABILITY touchpoint a `message.failed` receipt implies, or None.

    Deterministic in the receipt (event id from the dispatch id), so a receipt published
    again after a crash brings a duplicate the stream processor drops.
    """
    detail = receipt.receipt
    if receipt.name != "message.failed" or not detail.permanent:
        return None
    reason = ADDRESS_ERRORS.get(detail.error_code)
    if reason is None:
        return None
    channel = detail.channel
    return reachability_touchpoint(
        event_id=_event_id("reach", detail.dispatch_id, detail.error_code),
        customer_id=receipt.customer_id,
        channel=channel,
        reachable=False,
        reason=f"{channel_name(channel)}.{reason}",
        at=detail.occurred_at.ToDatetime(UTC),
        props={"dispatch_id": detail.dispatch_id},
        traceparent=receipt.trace.traceparent,
    )


def with_feedback(
    receipts: Sequence[touchpoint_pb2.Touchpoint],
) -> list[touchpoint_pb2.Touchpoint]:
    """`receipts`, each followed by the touchpoint it implies for memory (if any)."""
    published: list[touchpoint_pb2.Touchpoint] = []
    for receipt in receipts:
        published.append(receipt)
        implied = dead_address(receipt)
        if implied is not None:
            published.append(implied)
    return published


def unsubscribe_touchpoint(
    *,
    event_id: str,
    customer_id: str,
    channel: channel_pb2.Channel.ValueType,
    at: datetime,
    dispatch_id: str = "",
) -> touchpoint_pb2.Touchpoint:
    """`consent.changed`: the customer opted out of `channel` through a List-Unsubscribe link."""
    touchpoint = _touchpoint(
        touchpoint_pb2.TOUCHPOINT_KIND_CONSENT,
        CONSENT_CHANGED,
        event_id=event_id,
        customer_id=customer_id,
        channel=channel,
        at=at,
        props={"dispatch_id": dispatch_id} if dispatch_id else None,
    )
    consent = touchpoint.consent.consents.add()
    consent.channel = channel
    consent.status = consent_pb2.CONSENT_STATUS_OPTED_OUT
    consent.source = UNSUBSCRIBE_SOURCE
    consent.updated_at.FromDatetime(at)
    return touchpoint
