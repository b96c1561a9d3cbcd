"""What a send publishes: the `DispatchEvent` on `dispatch.<channel>`, or the SKIP touchpoint
that tells the timeline why nothing went out (docs/sending.md, "What is published").
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Final

from aiokafka import AIOKafkaProducer
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from enishi import topics, tracing
from enishi.memory import model
from enishi.sending.policy import Recipient
from enishi.sending.render import Rendered
from enishi.v1 import dispatch_pb2, touchpoint_pb2
from workflows.contract import SendRequest

SOURCE: Final = "enishi.journey"
SKIPPED: Final = "message.skipped"
DEFERRED: Final = "message.deferred"


def reason(req: SendRequest, designer: str = "") -> dispatch_pb2.DispatchReason:
    """The why of a send: journey, version, step, trigger event, designer, workflow, template."""
    return dispatch_pb2.DispatchReason(
        journey_id=req.journey_id,
        journey_version=req.version,
        step_id=req.step_id,
        trigger_event_id=req.trigger_event_id,
        designer=req.designer or designer,
        workflow_id=req.workflow_id,
        template_id=req.template_id,
        variant=req.variant,
    )


def build(
    req: SendRequest,
    recipient: Recipient,
    rendered: Rendered,
    now: datetime,
    *,
    designer: str = "",
    expiry: timedelta | None = None,
) -> dispatch_pb2.DispatchEvent:
    """The DispatchEvent of a send decided at `now` (workflow time, so a retry builds the
    same event); `expiry` sets expires_at."""
    if recipient.channel != rendered.channel:
        raise ValueError(f"channel: recipient {recipient.channel} != content {rendered.channel}")
    event = dispatch_pb2.DispatchEvent(
        dispatch_id=req.dispatch_id,
        channel=model.channel_value(recipient.channel),  # type: ignore[arg-type]
        customer_id=req.customer_id,
        address=recipient.address,
        locale=rendered.locale,
        reason=reason(req, designer),
    )
    event.created_at.CopyFrom(timestamp(now))
    if expiry:
        event.expires_at.CopyFrom(timestamp(now + expiry))
    fields = rendered.fields
    if recipient.channel == "email":
        event.email.subject = fields["subject"]
        event.email.text = fields["text"]
        event.email.html = fields.get("html", "")
    elif recipient.channel == "line":
        message = Struct()
        message.update({"type": "text", "text": fields["text"]})
        event.line.messages.append(message)
    elif recipient.channel == "sms":
        event.sms.text = fields["text"]
    elif recipient.channel == "push":
        event.push.title = fields["title"]
        event.push.body = fields["body"]
        event.push.platform = recipient.push_platform
    else:
        raise ValueError(f"channel: unknown channel {recipient.channel!r}")
    return event


def skip_touchpoint(
    req: SendRequest,
    skip_reason: dispatch_pb2.SkipReason.ValueType,
    detail: str,
    now: datetime,
    *,
    channel: str = "",
    deferred_until: datetime | None = None,
    designer: str = "",
) -> touchpoint_pb2.Touchpoint:
    """`message.skipped` (dropped) or `message.deferred` (tried again at `deferred_until`).

    The event id is derived from the dispatch id, the name and the deferral time, so a
    retried activity publishes the same touchpoint and the stream processor keeps one.
    """
    name = DEFERRED if deferred_until is not None else SKIPPED
    until = deferred_until.isoformat() if deferred_until is not None else ""
    digest = hashlib.sha256(f"{req.dispatch_id}\x1f{name}\x1f{until}".encode()).hexdigest()
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id=f"skip-{digest[:32]}",
        customer_id=req.customer_id,
        name=name,
        kind=touchpoint_pb2.TOUCHPOINT_KIND_SKIP,
        source=SOURCE,
        channel=channel,
    )
    touchpoint.customer.customer_id = req.customer_id
    touchpoint.occurred_at.CopyFrom(timestamp(now))
    touchpoint.received_at.CopyFrom(timestamp(now))
    skipped = touchpoint.skipped
    skipped.skip_reason = skip_reason
    skipped.detail = detail
    skipped.dispatch_id = req.dispatch_id
    skipped.reason.CopyFrom(reason(req, designer))
    if channel:
        skipped.channel = model.channel_value(channel)  # type: ignore[assignment]
    if deferred_until is not None:
        skipped.deferred_until.CopyFrom(timestamp(deferred_until))
    return touchpoint


class DispatchPublisher:
    """Publishes a DispatchEvent to `dispatch.<channel>`, keyed by customer id, and waits
    for Kafka's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, event: dispatch_pb2.DispatchEvent, *, traceparent: str = "") -> None:
        """Publish `event`; its record carries the trace context: with tracing on, this
        publish's span (a child of the send activity's); off, `traceparent` (the trigger's,
        passed through) when there is one."""
        topic = topics.dispatch(model.channel_name(event.channel))
        with tracing.span(
            f"publish {topic}",
            kind=tracing.SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "enishi.dispatch_id": event.dispatch_id},
        ):
            headers = tracing.inject_headers([]) or (
                [(tracing.TRACEPARENT, traceparent.encode())] if traceparent else None
            )
            await self._producer.send_and_wait(
                topic,
                value=event.SerializeToString(),
                key=event.customer_id.encode(),
                headers=headers,
            )


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
