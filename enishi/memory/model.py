"""Customer memory's vocabulary: counter names, retention, ordering versions, time in ms.

Everything here is pure. The stream processor's writer and CustomerService's reader both
use it, so a counter name or a retention rule is spelled once (documented in docs/keys.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from enishi.v1 import channel_pb2, touchpoint_pb2

Kind = touchpoint_pb2.TouchpointKind

ORDER_COMPLETED: Final = "order.completed"
SUPPORT_DOMAIN: Final = "support."
# Which order props hold the money, tried in this order; the proto documents `amount`,
# many shops send `total`.
ORDER_AMOUNT_PROPS: Final = ("amount", "total")
ORDER_CURRENCY_PROP: Final = "currency"

# Counter fields of keys.COUNTERS.
ORDERS_COUNT: Final = "orders_count"
TOTAL_SPENT: Final = "total_spent"
EVENTS_COUNT: Final = "events_count"
CURRENCY: Final = "currency"
FIRST_ORDER_AT: Final = "first_order_at"
LAST_ORDER_AT: Final = "last_order_at"
LAST_CONTACT_AT: Final = "last_contact_at"
LAST_SEEN_AT: Final = "last_seen_at"
LAST_MESSAGE_AT: Final = "last_message_at"
CREATED_AT: Final = "created_at"
UPDATED_AT: Final = "updated_at"
MESSAGES_PREFIX: Final = "messages:"  # + channel name: messages sent ever on that channel

SUMMED_COUNTERS: Final = (ORDERS_COUNT, EVENTS_COUNT)  # plus MESSAGES_PREFIX fields
EARLIEST_COUNTERS: Final = (FIRST_ORDER_AT, CREATED_AT)
LATEST_COUNTERS: Final = (LAST_ORDER_AT, LAST_CONTACT_AT, LAST_SEEN_AT, LAST_MESSAGE_AT)

# Identity fields of keys.IDENTITY; push tokens are PUSH_PREFIX + token.
IDENTITY_FIELDS: Final = ("anonymous_id", "email", "phone", "line_user_id")
PUSH_PREFIX: Final = "push:"

PREFERENCE_FIELDS: Final = (
    "preferred_channel",
    "fallback_channels",
    "locale",
    "time_zone",
    "quiet_hours",
)

MESSAGE_WINDOW: Final = timedelta(days=7)
DENSITY_WINDOW_DAYS: Final = 30

# Weighted touchpoints for engagement density: what the customer does, not what we send.
# A purchase says more than a page view; a reply more than an open.
DENSITY_EVENT_WEIGHT: Final = 1.0
DENSITY_NAME_WEIGHTS: Final = {
    ORDER_COMPLETED: 3.0,
    "message.opened": 1.0,
    "message.clicked": 2.0,
    "message.replied": 3.0,
}

_MS_PER_DAY: Final = 86_400_000
# LWW versions compare as strings: fixed-width milliseconds, then the event id as tie-break,
# so two replicas applying the same events in any order pick the same winner.
_VERSION_MS_DIGITS: Final = 15


@dataclass(frozen=True)
class Retention:
    """How much of each customer the memory keeps (documented in docs/keys.md)."""

    timeline_max: int = 200
    """Newest timeline entries kept in full; older ones fold into per-name aggregates."""
    dedupe_window: int = 10_000
    """Newest applied event ids remembered per customer for dedupe."""


def to_ms(ts: Timestamp) -> int:
    """Milliseconds since the epoch (0 for an unset timestamp)."""
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def from_ms(ms: int) -> Timestamp:
    """A Timestamp at `ms` milliseconds since the epoch."""
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def datetime_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(moment.timestamp() * 1000)


def ms_datetime(ms: int) -> datetime:
    """The aware UTC datetime `ms` milliseconds after the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def day(ms: int) -> int:
    """The UTC day number (days since the epoch) of `ms`."""
    return ms // _MS_PER_DAY


def version(occurred_ms: int, event_id: str) -> str:
    """The last-write-wins version of a write: later occurred_at wins, then larger event id."""
    return f"{max(occurred_ms, 0):0{_VERSION_MS_DIGITS}d}{event_id}"


def version_ms(value: str) -> int:
    """The occurred_at (ms) a version was made from."""
    return int(value[:_VERSION_MS_DIGITS])


def channel_name(channel: int) -> str:
    """`email` for CHANNEL_EMAIL: the lower-case suffix, as in topic names."""
    return channel_pb2.Channel.Name(channel).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]


def channel_value(name: str) -> int:
    """CHANNEL_EMAIL for `email`."""
    return int(channel_pb2.Channel.Value(f"CHANNEL_{name.upper()}"))


def density_weight(kind: int, name: str) -> float:
    """How much one touchpoint counts towards engagement density."""
    if name in DENSITY_NAME_WEIGHTS:
        return DENSITY_NAME_WEIGHTS[name]
    if kind in (Kind.TOUCHPOINT_KIND_EVENT, Kind.TOUCHPOINT_KIND_UNSPECIFIED):
        return DENSITY_EVENT_WEIGHT
    return 0.0
