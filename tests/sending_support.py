"""A journey and customer views for the send activity's tests (unit and integration)."""

from __future__ import annotations

import functools
from typing import Any

from enishi.journeys import Journey, parse_journey
from enishi.v1 import channel_pb2, consent_pb2, customer_pb2, identity_pb2
from workflows.contract import SendRequest, dispatch_id, workflow_id

JOURNEY_SOURCE = """
id: sending-test
name: Sending test
designer: crm-team@shop.example
trigger: {event: order.completed}
templates:
  thanks:
    email:
      ja:
        subject: "{{ customer.name | default('お客様') }}様、ご注文ありがとうございます"
        text: "ご注文 {{ customer.last_order.order_id }} を承りました。"
        html: "<p>{{ customer.name }}様</p><p>{{ trigger.props.note }}</p>"
      en:
        subject: "Thank you, {{ customer.name | default('friend') }}"
        text: "We received order {{ customer.last_order.order_id }}."
    line:
      ja: {text: "{{ customer.name }}様、{{ trigger.props.product }}のご購入ありがとうございます！"}
      en: {text: "Thanks for buying {{ trigger.props.product }}, {{ customer.name }}!"}
    sms:
      ja: {text: "ご注文ありがとうございます"}
      en: {text: "Thanks for your order"}
    push:
      ja: {title: "ありがとうございます", body: "{{ journey.id }}"}
      en: {title: "Thank you", body: "{{ journey.id }}"}
  line_only:
    line:
      ja: {text: "LINE だけ"}
      en: {text: "LINE only"}
steps:
  - id: thanks
    send: {channel: preferred, fallback: [line, email], template: thanks}
  - id: line_note
    send: {channel: line, template: line_only}
"""


@functools.cache
def journey() -> Journey:
    """The test journey (validated once; it is immutable)."""
    return parse_journey(JOURNEY_SOURCE)


def request(customer_id: str, **overrides: Any) -> SendRequest:
    """A send of step `thanks` at a daytime instant in Tokyo, unless overridden."""
    wf = workflow_id("sending-test", customer_id)
    values: dict[str, Any] = {
        "workflow_id": wf,
        "journey_id": "sending-test",
        "version": 1,
        "step_id": "thanks",
        "customer_id": customer_id,
        "dispatch_id": dispatch_id(wf, 1, "thanks", 1),
        "channel": "preferred",
        "fallback": ("line", "email"),
        "template_id": "thanks",
        "on_quiet_hours": "defer",
        "trigger_event_id": "ev-trigger",
        "designer": "crm-team@shop.example",
        "now": "2025-03-10T03:00:00+00:00",  # Monday 12:00 in Tokyo
    }
    values.update(overrides)
    return SendRequest(**values)


def customer(
    customer_id: str = "c1",
    *,
    email: str = "",
    phone: str = "",
    line_user_id: str = "",
    push_token: str = "",
    consents: dict[str, consent_pb2.ConsentStatus.ValueType] | None = None,
    unreachable: dict[str, str] | None = None,
    preferred: str = "",
    fallback: tuple[str, ...] = (),
    locale: str = "",
    time_zone: str = "",
    quiet: tuple[str, str] | None = None,
    traits: dict[str, Any] | None = None,
) -> customer_pb2.Customer:
    """A 360 view as MemoryReader returns it."""
    view = customer_pb2.Customer(customer_id=customer_id)
    view.identity.customer_id = customer_id
    view.identity.email = email
    view.identity.phone = phone
    view.identity.line_user_id = line_user_id
    if push_token:
        view.identity.push_tokens.add(token=push_token, platform=identity_pb2.PUSH_PLATFORM_IOS)
    for channel, status in (consents or {}).items():
        view.consents.add(channel=channel_value(channel), status=status)
    for channel, why in (unreachable or {}).items():
        view.reachability.add(channel=channel_value(channel), reachable=False, reason=why)
    if preferred:
        view.preferences.preferred_channel = channel_value(preferred)  # type: ignore[assignment]
    view.preferences.fallback_channels.extend(channel_value(c) for c in fallback)  # type: ignore[misc]
    view.preferences.locale = locale
    view.preferences.time_zone = time_zone
    if quiet is not None:
        view.preferences.quiet_hours.CopyFrom(consent_pb2.QuietHours(start=quiet[0], end=quiet[1]))
    if traits:
        view.traits.update(traits)
    return view


def channel_value(name: str) -> int:
    return int(channel_pb2.Channel.Value(f"CHANNEL_{name.upper()}"))


OPTED_IN = consent_pb2.CONSENT_STATUS_OPTED_IN
OPTED_OUT = consent_pb2.CONSENT_STATUS_OPTED_OUT
