"""The variables CEL conditions see: `customer` from a memory view, `event` from a touchpoint.

One mapping for every place that evaluates a condition (the stream processor's trigger
`where`, the workflow's branches and waits), so `customer.orders_count` means the same thing
everywhere. Documented in docs/journeys.md ("Conditions"). Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from enishi.memory import model
from enishi.v1 import consent_pb2, customer_pb2, touchpoint_pb2

_PHASE_PREFIX = "LIFECYCLE_PHASE_"
_CONSENT_PREFIX = "CONSENT_STATUS_"
_KIND_PREFIX = "TOUCHPOINT_KIND_"


def customer_variables(customer_id: str, view: customer_pb2.Customer | None) -> dict[str, Any]:
    """`customer` for CEL: id, traits, tags, phase, density, counters, preferences, consents.

    A customer nothing is remembered of (`view` None) is a new customer with zero counters,
    so `customer.orders_count == 0` holds rather than failing on a missing field. Unset
    times are `null`.
    """
    if view is None:
        view = customer_pb2.Customer(customer_id=customer_id)
    traits: dict[str, Any] = json_format.MessageToDict(view.traits)
    tags = traits.get("tags")
    counters = view.counters
    phase = customer_pb2.LifecyclePhase.Name(view.phase).removeprefix(_PHASE_PREFIX).lower()
    return {
        "id": customer_id,
        "traits": traits,
        "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
        "phase": "new" if phase == "unspecified" else phase,
        "engagement_density": view.engagement_density,
        "orders_count": counters.orders_count,
        "total_spent": counters.total_spent,
        "currency": counters.currency,
        "events_count": counters.events_count,
        "first_order_at": _time(counters, "first_order_at"),
        "last_order_at": _time(counters, "last_order_at"),
        "last_contact_at": _time(counters, "last_contact_at"),
        "last_seen_at": _time(counters, "last_seen_at"),
        "last_message_at": _time(counters, "last_message_at"),
        "created_at": _time(view, "created_at"),
        "preferences": json_format.MessageToDict(
            view.preferences, preserving_proto_field_name=True
        ),
        "consents": {
            model.channel_name(c.channel): consent_pb2.ConsentStatus.Name(c.status)
            .removeprefix(_CONSENT_PREFIX)
            .lower()
            for c in view.consents
        },
    }


def event_variables(touchpoint: touchpoint_pb2.Touchpoint) -> dict[str, Any]:
    """`event` for CEL: name, props, occurred_at, kind, channel, source, attributes, id."""
    kind = touchpoint_pb2.TouchpointKind.Name(touchpoint.kind).removeprefix(_KIND_PREFIX).lower()
    return {
        "event_id": touchpoint.event_id,
        "name": touchpoint.name,
        "kind": kind,
        "props": json_format.MessageToDict(touchpoint.props),
        "occurred_at": _time(touchpoint, "occurred_at"),
        "channel": touchpoint.channel,
        "source": touchpoint.source,
        "attributes": dict(touchpoint.attributes),
    }


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: Timestamp = getattr(message, name)
    return value.ToDatetime(tzinfo=UTC)
