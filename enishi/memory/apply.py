"""From a touchpoint to memory operations: what each kind changes, and what is invalid.

`plan(touchpoint, now_ms=...)` is pure: it returns the script tokens (see
`enishi.memory.scripts`) that apply one touchpoint, or raises `InvalidTouchpoint` naming
the field. `merge_plan(...)` turns a merged customer's memory into the operations that
fold it into the surviving customer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from enishi import keys
from enishi.memory import model
from enishi.memory.scripts import OPCODES, key_index
from enishi.v1 import consent_pb2, customer_pb2, dispatch_pb2, touchpoint_pb2

Token = str | bytes | int | float
Kind = touchpoint_pb2.TouchpointKind

# Which detail each non-EVENT kind must carry.
_DETAIL_OF_KIND = {
    touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY: "identify",
    touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE: "receipt",
    touchpoint_pb2.TOUCHPOINT_KIND_RECEIPT: "receipt",
    touchpoint_pb2.TOUCHPOINT_KIND_CONSENT: "consent",
    touchpoint_pb2.TOUCHPOINT_KIND_PREFERENCES: "preferences",
    touchpoint_pb2.TOUCHPOINT_KIND_REACHABILITY: "reachability",
    touchpoint_pb2.TOUCHPOINT_KIND_MERGE: "merge",
    touchpoint_pb2.TOUCHPOINT_KIND_SKIP: "skipped",
    touchpoint_pb2.TOUCHPOINT_KIND_JOURNEY: "journey",
}

# The channel each identity addresses. A new address makes that channel reachable again
# (a bounce, an unregistered token or an unfollow was about the old one); a push token is
# new when the customer had no such token.
IDENTITY_CHANNELS = {"email": "email", "phone": "sms", "line_user_id": "line"}
ADDRESS_CHANGED = "address_changed"

ZSET_PARTS = (keys.SEEN, keys.TIMELINE, keys.ORDERS, keys.MESSAGES)
SET_PARTS = (keys.MERGED,)
# LWW hashes and the hash holding their versions.
VERSIONED_PARTS = {
    keys.TRAITS: keys.TRAITS_VERSIONS,
    keys.IDENTITY: keys.IDENTITY_VERSIONS,
    keys.CONSENTS: keys.CONSENTS_VERSIONS,
    keys.REACHABILITY: keys.REACHABILITY_VERSIONS,
    keys.PREFERENCES: keys.PREFERENCES_VERSIONS,
}


class InvalidTouchpoint(ValueError):
    """A touchpoint the memory cannot apply; the message names the field."""


@dataclass
class Plan:
    """One event's operations as script tokens (opcode, then its operands), and whose."""

    event_id: str
    customer_id: str
    merge_from: str | None = None
    """For a MERGE: the customer whose memory the writer folds in before applying."""
    tokens: list[Token] = field(default_factory=list)

    def _op(self, opcode: str, *operands: Token) -> None:
        assert len(operands) == OPCODES[opcode], opcode
        self.tokens.append(opcode)
        self.tokens.extend(operands)

    def timeline(self, occurred_ms: int, event_id: str, name: str, entry: bytes) -> None:
        """Add an entry to the timeline (older ones fold into aggregates in the script)."""
        self._op("T", occurred_ms, event_id, name.encode() + b"\0" + entry)

    def latest(self, part: str, name: str, version: str, value: Token | None) -> None:
        """Set (or with None, remove) `name` in a versioned part if `version` is newer."""
        hash_index, versions_index = key_index(part), key_index(VERSIONED_PARTS[part])
        if value is None:
            self._op("D", hash_index, versions_index, name, version)
        else:
            self._op("L", hash_index, versions_index, name, version, value)

    def identity(self, name: str, version: str, value: Token, channel: str) -> None:
        """Set identity `name` if `version` is newer; when that replaces another address,
        `channel`'s reachability record (if any) becomes reachable (`<channel>.address_changed`)."""
        at = model.from_ms(model.version_ms(version))
        reachable = consent_pb2.ChannelReachability(
            channel=model.channel_value(channel),  # type: ignore[arg-type]
            reachable=True,
            reason=f"{channel}.{ADDRESS_CHANGED}",
            updated_at=at,
        )
        self._op(
            "C",
            key_index(keys.IDENTITY),
            key_index(keys.IDENTITY_VERSIONS),
            key_index(keys.REACHABILITY),
            key_index(keys.REACHABILITY_VERSIONS),
            name,
            version,
            value,
            channel,
            reachable.SerializeToString(),
        )

    def earliest(self, part: str, versions: str, name: str, version: str, value: Token) -> None:
        """Set `name` if `version` is older than the one stored (first write wins)."""
        self._op("F", key_index(part), key_index(versions), name, version, value)

    def add(self, part: str, name: str, amount: int) -> None:
        self._op("I", key_index(part), name, amount)

    def add_float(self, part: str, name: str, amount: float) -> None:
        self._op("R", key_index(part), name, amount)

    def maximum(self, part: str, name: str, value: int) -> None:
        self._op("X", key_index(part), name, value)

    def minimum(self, part: str, name: str, value: int) -> None:
        self._op("N", key_index(part), name, value)

    def zadd(self, part: str, score: int, member: Token) -> None:
        self._op("Z", key_index(part), score, member)

    def sadd(self, part: str, member: Token) -> None:
        self._op("S", key_index(part), member)

    def aggregate(self, name: str, count: int, first_ms: int, last_ms: int) -> None:
        self._op("A", name, count, first_ms, last_ms)


def occurred_ms(touchpoint: touchpoint_pb2.Touchpoint) -> int:
    """When the touchpoint happened (ms); received_at when the producer sent no time."""
    if touchpoint.HasField("occurred_at"):
        return model.to_ms(touchpoint.occurred_at)
    return model.to_ms(touchpoint.received_at)


def validate(touchpoint: touchpoint_pb2.Touchpoint, key: str | None = None) -> None:
    """Raise `InvalidTouchpoint` when the memory cannot apply it."""
    if not touchpoint.event_id:
        raise InvalidTouchpoint("event_id: missing")
    if not touchpoint.customer_id:
        raise InvalidTouchpoint("customer_id: missing")
    if key is not None and key != touchpoint.customer_id:
        raise InvalidTouchpoint("customer_id: differs from the record key")
    if not touchpoint.name:
        raise InvalidTouchpoint("name: missing")
    if not touchpoint.HasField("occurred_at") and not touchpoint.HasField("received_at"):
        raise InvalidTouchpoint("occurred_at: missing (and no received_at)")
    detail = _DETAIL_OF_KIND.get(touchpoint.kind)
    if detail is not None and touchpoint.WhichOneof("detail") != detail:
        kind = Kind.Name(touchpoint.kind)
        raise InvalidTouchpoint(f"{detail}: missing, required by kind {kind}")
    if touchpoint.kind == touchpoint_pb2.TOUCHPOINT_KIND_MERGE:
        merge = touchpoint.merge
        if not merge.from_customer_id:
            raise InvalidTouchpoint("merge.from_customer_id: missing")
        if merge.into_customer_id != touchpoint.customer_id:
            raise InvalidTouchpoint("merge.into_customer_id: differs from customer_id")
        if merge.from_customer_id == merge.into_customer_id:
            raise InvalidTouchpoint("merge.from_customer_id: equals into_customer_id")


def plan(touchpoint: touchpoint_pb2.Touchpoint, *, now_ms: int, validated: bool = False) -> Plan:
    """The operations that apply `touchpoint` to its customer's memory (not the merge fold).

    `validated=True` skips `validate`, for a caller that has just run it (with the key).
    """
    if not validated:
        validate(touchpoint)
    at = occurred_ms(touchpoint)
    event_id, name, kind = touchpoint.event_id, touchpoint.name, touchpoint.kind
    at_version = model.version(at, event_id)
    result = Plan(event_id, touchpoint.customer_id)
    entry = timeline_entry(touchpoint)
    result.timeline(at, event_id, name, entry.SerializeToString())
    result.minimum(keys.COUNTERS, model.CREATED_AT, at)
    weight = model.density_weight(kind, name)
    if weight:
        result.add_float(keys.DENSITY, str(model.day(at)), weight)

    if kind in (touchpoint_pb2.TOUCHPOINT_KIND_EVENT, touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED):
        _plan_event(result, touchpoint, at, at_version)
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY:
        _plan_identify(result, touchpoint.identify, at_version)
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE:
        channel = model.channel_name(touchpoint.receipt.channel)
        result.add(keys.COUNTERS, model.MESSAGES_PREFIX + channel, 1)
        result.maximum(keys.COUNTERS, model.LAST_MESSAGE_AT, at)
        if at >= now_ms - int(model.MESSAGE_WINDOW.total_seconds() * 1000):
            result.zadd(keys.MESSAGES, at, f"{channel}:{event_id}")
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_CONSENT:
        for index, consent in enumerate(touchpoint.consent.consents):
            stored = consent_pb2.ChannelConsent()
            stored.CopyFrom(consent)
            stored.source = consent.source or touchpoint.source
            _plan_channel_state(result, keys.CONSENTS, f"consent.consents[{index}]", stored, at)
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_REACHABILITY:
        _plan_channel_state(result, keys.REACHABILITY, "reachability", touchpoint.reachability, at)
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_PREFERENCES:
        _plan_preferences(result, touchpoint.preferences, at_version)
    elif kind == touchpoint_pb2.TOUCHPOINT_KIND_MERGE:
        result.merge_from = touchpoint.merge.from_customer_id
        result.sadd(keys.MERGED, touchpoint.merge.from_customer_id)
    return result


def _plan_event(
    result: Plan, touchpoint: touchpoint_pb2.Touchpoint, at: int, at_version: str
) -> None:
    result.add(keys.COUNTERS, model.EVENTS_COUNT, 1)
    result.maximum(keys.COUNTERS, model.LAST_SEEN_AT, at)
    if touchpoint.name.startswith(model.SUPPORT_DOMAIN):
        result.maximum(keys.COUNTERS, model.LAST_CONTACT_AT, at)
    if touchpoint.name != model.ORDER_COMPLETED:
        return
    props = touchpoint.props.fields
    result.add(keys.COUNTERS, model.ORDERS_COUNT, 1)
    amount = _order_amount(touchpoint)
    if amount:
        result.add_float(keys.COUNTERS, model.TOTAL_SPENT, amount)
    currency = props.get(model.ORDER_CURRENCY_PROP)
    if currency is not None and currency.string_value:
        result.earliest(
            keys.COUNTERS, keys.COUNTERS_VERSIONS, model.CURRENCY, at_version, currency.string_value
        )
    result.minimum(keys.COUNTERS, model.FIRST_ORDER_AT, at)
    result.maximum(keys.COUNTERS, model.LAST_ORDER_AT, at)
    result.zadd(keys.ORDERS, at, touchpoint.event_id)


def _order_amount(touchpoint: touchpoint_pb2.Touchpoint) -> float:
    for prop in model.ORDER_AMOUNT_PROPS:
        value = touchpoint.props.fields.get(prop)
        if value is None:
            continue
        which = value.WhichOneof("kind")
        if which == "number_value":
            return value.number_value
        if which == "string_value":
            try:
                return float(value.string_value)
            except ValueError:
                raise InvalidTouchpoint(f"props.{prop}: not a number") from None
    return 0.0


def _plan_identify(result: Plan, identify: touchpoint_pb2.IdentifyDetail, at_version: str) -> None:
    traits: dict[str, Any] = json_format.MessageToDict(identify.traits)
    for trait, value in traits.items():
        encoded = None if value is None else json.dumps(value, separators=(",", ":"))
        result.latest(keys.TRAITS, trait, at_version, encoded)
    identity = identify.identity
    for kind in model.IDENTITY_FIELDS:
        value = getattr(identity, kind)
        if not value:
            continue
        channel = IDENTITY_CHANNELS.get(kind)
        if channel is None:
            result.latest(keys.IDENTITY, kind, at_version, value)
        else:
            result.identity(kind, at_version, value, channel)
    for token in identity.push_tokens:
        if token.token:
            result.identity(
                model.PUSH_PREFIX + token.token, at_version, token.SerializeToString(), "push"
            )


def _plan_channel_state(
    result: Plan,
    part: str,
    path: str,
    state: consent_pb2.ChannelConsent | consent_pb2.ChannelReachability,
    at: int,
) -> None:
    if state.channel == 0:
        raise InvalidTouchpoint(f"{path}.channel: unspecified")
    stored = copy.deepcopy(state)
    if not stored.HasField("updated_at"):
        stored.updated_at.CopyFrom(model.from_ms(at))
    changed_version = model.version(model.to_ms(stored.updated_at), result.event_id)
    result.latest(
        part, model.channel_name(state.channel), changed_version, stored.SerializeToString()
    )


def _plan_preferences(
    result: Plan, change: touchpoint_pb2.PreferencesChange, at_version: str
) -> None:
    paths = list(change.update_mask.paths) or list(model.PREFERENCE_FIELDS)
    for index, path in enumerate(paths):
        if path not in model.PREFERENCE_FIELDS:
            raise InvalidTouchpoint(
                f"preferences.update_mask.paths[{index}]: unknown field {path!r}, "
                f"expected one of {', '.join(model.PREFERENCE_FIELDS)}"
            )
        only = consent_pb2.Preferences()
        if path == "fallback_channels":
            only.fallback_channels.extend(change.preferences.fallback_channels)
        elif path == "quiet_hours":
            only.quiet_hours.CopyFrom(change.preferences.quiet_hours)
        else:
            setattr(only, path, getattr(change.preferences, path))
        result.latest(keys.PREFERENCES, path, at_version, only.SerializeToString())


def timeline_entry(touchpoint: touchpoint_pb2.Touchpoint) -> customer_pb2.TimelineEntry:
    """The touchpoint as the timeline remembers it, with a one-line summary for people."""
    entry = customer_pb2.TimelineEntry(
        kind=touchpoint.kind or touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
        event_id=touchpoint.event_id,
        name=touchpoint.name,
        source=touchpoint.source,
        channel=touchpoint.channel,
    )
    entry.occurred_at.CopyFrom(model.from_ms(occurred_ms(touchpoint)))
    if touchpoint.HasField("props"):
        entry.props.CopyFrom(touchpoint.props)
    detail = touchpoint.WhichOneof("detail")
    if detail == "receipt":
        receipt = touchpoint.receipt
        entry.dispatch_id = receipt.dispatch_id
        entry.reason.CopyFrom(receipt.reason)
        entry.status = receipt.status
        status = dispatch_pb2.DeliveryStatus.Name(receipt.status)
        entry.summary = (
            f"{model.channel_name(receipt.channel)} "
            f"{status.removeprefix('DELIVERY_STATUS_').lower()}"
        )
        if receipt.error_code:
            entry.summary += f": {receipt.error_code}"
    elif detail == "skipped":
        skipped = touchpoint.skipped
        entry.dispatch_id = skipped.dispatch_id
        entry.reason.CopyFrom(skipped.reason)
        why = dispatch_pb2.SkipReason.Name(skipped.skip_reason).removeprefix("SKIP_REASON_")
        entry.summary = f"{touchpoint.name.removeprefix('message.')}: {why.lower()}"
        if skipped.detail:
            entry.summary += f", {skipped.detail}"
    elif detail == "consent":
        entry.summary = "consent: " + ", ".join(
            f"{model.channel_name(c.channel)} "
            f"{consent_pb2.ConsentStatus.Name(c.status).removeprefix('CONSENT_STATUS_').lower()}"
            for c in touchpoint.consent.consents
        )
    elif detail == "preferences":
        paths = touchpoint.preferences.update_mask.paths or model.PREFERENCE_FIELDS
        entry.summary = "preferences: " + ", ".join(paths)
    elif detail == "reachability":
        reach = touchpoint.reachability
        state = "reachable" if reach.reachable else f"unreachable ({reach.reason})"
        entry.summary = f"{model.channel_name(reach.channel)} {state}"
    elif detail == "merge":
        merge = touchpoint.merge
        entry.summary = f"merged {merge.from_customer_id} into {merge.into_customer_id}"
    elif detail == "identify":
        # Which identities and traits changed, never their values: summaries are shown widely.
        identity = touchpoint.identify.identity
        known = [kind for kind in model.IDENTITY_FIELDS if getattr(identity, kind)]
        if identity.push_tokens:
            known.append("push_token")
        traits = sorted(touchpoint.identify.traits.fields)
        entry.summary = f"identified: {', '.join(known) or '-'}; traits: {', '.join(traits) or '-'}"
    elif detail == "journey":
        journey = touchpoint.journey
        entry.summary = f"{touchpoint.name} {journey.journey_id} v{journey.version}"
        if journey.step_id:
            entry.summary += f" at {journey.step_id}"
    return entry


@dataclass(frozen=True)
class MemoryDump:
    """One customer's whole memory as read from Redis (bytes), by part."""

    zsets: Mapping[str, Sequence[tuple[bytes, float]]]
    hashes: Mapping[str, Mapping[bytes, bytes]]
    sets: Mapping[str, Sequence[bytes]]


def merge_plan(merge_event: Plan, dump: MemoryDump) -> Plan:
    """Add to `merge_event` the operations that fold a merged customer's memory into it.

    Sums add, times keep their extreme, LWW fields compare versions, so folding is correct
    whatever the surviving customer already holds.
    """
    result = Plan(merge_event.event_id, merge_event.customer_id, None, list(merge_event.tokens))
    for member, score in dump.zsets.get(keys.SEEN, ()):
        result.zadd(keys.SEEN, int(score), member)
    entries = dump.hashes.get(keys.TIMELINE_ENTRIES, {})
    for member, score in dump.zsets.get(keys.TIMELINE, ()):
        value = entries.get(member)
        if value is not None:
            entry_name, _, entry = value.partition(b"\0")
            result.timeline(int(score), member.decode(), entry_name.decode(), entry)
    aggregates: dict[str, dict[str, int]] = {}
    for agg_field, agg_value in dump.hashes.get(keys.TIMELINE_AGGREGATES, {}).items():
        name, _, which = agg_field.decode().rpartition("|")
        aggregates.setdefault(name, {})[which] = int(float(agg_value))
    for name, parts in aggregates.items():
        result.aggregate(name, parts.get("c", 0), parts.get("f", 0), parts.get("l", 0))
    for part, versions_part in VERSIONED_PARTS.items():
        values = dump.hashes.get(part, {})
        for name_bytes, field_version in dump.hashes.get(versions_part, {}).items():
            value = values.get(name_bytes)
            result.latest(part, name_bytes.decode(), field_version.decode(), value)
    _merge_counters(result, dump)
    for member, score in dump.zsets.get(keys.ORDERS, ()):
        result.zadd(keys.ORDERS, int(score), member)
    for member, score in dump.zsets.get(keys.MESSAGES, ()):
        result.zadd(keys.MESSAGES, int(score), member)
    for day_field, weight in dump.hashes.get(keys.DENSITY, {}).items():
        result.add_float(keys.DENSITY, day_field.decode(), float(weight))
    for member in dump.sets.get(keys.MERGED, ()):
        result.sadd(keys.MERGED, member)
    return result


def _merge_counters(result: Plan, dump: MemoryDump) -> None:
    counters = {k.decode(): v.decode() for k, v in dump.hashes.get(keys.COUNTERS, {}).items()}
    for name, value in counters.items():
        if name in model.SUMMED_COUNTERS or name.startswith(model.MESSAGES_PREFIX):
            result.add(keys.COUNTERS, name, int(value))
        elif name == model.TOTAL_SPENT:
            result.add_float(keys.COUNTERS, name, float(value))
        elif name in model.EARLIEST_COUNTERS:
            result.minimum(keys.COUNTERS, name, int(value))
        elif name in model.LATEST_COUNTERS:
            result.maximum(keys.COUNTERS, name, int(value))
    currency_version = dump.hashes.get(keys.COUNTERS_VERSIONS, {}).get(model.CURRENCY.encode())
    if currency_version is not None and model.CURRENCY in counters:
        result.earliest(
            keys.COUNTERS,
            keys.COUNTERS_VERSIONS,
            model.CURRENCY,
            currency_version.decode(),
            counters[model.CURRENCY],
        )
