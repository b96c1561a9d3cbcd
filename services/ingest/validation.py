"""What makes a touchpoint or an Identify acceptable; every problem names its field path.

Checks are pure: they take the request, the limits and "now" (whole seconds), and return
field errors plus the normalised identities, so they run per item of a batch and in tests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from enishi import identity
from enishi.config import IngestSettings
from enishi.errors import FieldError, field_path
from enishi.identity import Claim, Ref
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb

EVENT_NAME: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
RESERVED_DOMAINS: Final = frozenset(
    {"message", "consent", "preferences", "channel", "identity", "customer", "journey"}
)
EVENT_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
CHANNEL: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
TRACEPARENT: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_NAME_CHARS: Final = 128
MAX_SOURCE_CHARS: Final = 128
MAX_KEY_CHARS: Final = 128
MAX_ATTRIBUTES: Final = 64
MAX_ATTRIBUTE_VALUE_CHARS: Final = 1024
MAX_TRACESTATE_CHARS: Final = 512
MAX_PUSH_TOKENS: Final = 16
MAX_APP_ID_CHARS: Final = 256
MAX_ERRORS_PER_ITEM: Final = 10
OLDEST_OCCURRED_AT: Final = 946_684_800  # 2000-01-01T00:00:00Z: older is a unit mistake
MAX_NANOS: Final = 999_999_999

_EVENT_KINDS: Final = frozenset(
    {touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED, touchpoint_pb2.TOUCHPOINT_KIND_EVENT}
)
_PUSH_PLATFORMS: Final = frozenset(identity_pb2.PushPlatform.values())
_PLAIN_KINDS: Final = frozenset({"string_value", "bool_value", "null_value"})


@dataclass(frozen=True)
class Limits:
    """The configurable limits of IngestSettings, as validation uses them."""

    batch_max: int = 1000
    props_max_bytes: int = 32 * 1024
    props_max_depth: int = 8
    max_future_seconds: int = 24 * 3600

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Limits:
        """The limits `settings` configure."""
        return cls(
            batch_max=settings.ingest_batch_max,
            props_max_bytes=settings.ingest_props_max_bytes,
            props_max_depth=settings.ingest_props_max_depth,
            max_future_seconds=int(settings.ingest_max_future_hours * 3600),
        )


@dataclass
class _Errors:
    """Collects field errors, at most MAX_ERRORS_PER_ITEM (one bad item costs bounded work)."""

    items: list[FieldError] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS_PER_ITEM:
            self.items.append(FieldError(path, message))

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS_PER_ITEM


def _bounded_text(errors: _Errors, path: str, name: str, value: str, limit: int) -> None:
    # Paths are joined only on error: this runs for every field of every event.
    if len(value) > limit:
        errors.add(field_path(path, name) if name else path, f"at most {limit} characters")
    elif not value.isprintable() and identity.has_bad_chars(value):
        errors.add(field_path(path, name) if name else path, "must not contain control characters")


def _check_event_id(errors: _Errors, path: str, event_id: str) -> None:
    if event_id and not EVENT_ID.fullmatch(event_id):
        errors.add(
            field_path(path, "event_id"),
            "must be 1-128 characters of A-Z a-z 0-9 . _ : - (or empty for a ULID)",
        )


def _check_timestamp(
    errors: _Errors, parent: str, ts: Timestamp, now_seconds: int, limits: Limits
) -> None:
    path = field_path(parent, "occurred_at")
    if not 0 <= ts.nanos <= MAX_NANOS:
        errors.add(path, f"nanos must be between 0 and {MAX_NANOS}, got {ts.nanos}")
    elif ts.seconds < OLDEST_OCCURRED_AT:
        errors.add(path, "before 2000-01-01T00:00:00Z (seconds, not milliseconds?)")
    elif ts.seconds > now_seconds + limits.max_future_seconds:
        hours = limits.max_future_seconds / 3600
        errors.add(path, f"more than {hours:g}h in the future")


def _key_path(path: str, key: str) -> str:
    if PLAIN_KEY.fullmatch(key) and len(key) <= MAX_KEY_CHARS:
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:MAX_KEY_CHARS])}]"


def check_struct(errors: _Errors, path: str, struct: Struct, limits: Limits) -> None:
    """Size (serialized bytes), nesting depth, key length and finite numbers of a Struct."""
    size = struct.ByteSize()
    if size > limits.props_max_bytes:
        errors.add(path, f"at most {limits.props_max_bytes} bytes serialized, got {size}")
        return
    _walk_struct(errors, path, struct, 1, limits)


def _walk_struct(errors: _Errors, path: str, struct: Struct, depth: int, limits: Limits) -> None:
    if depth > limits.props_max_depth:
        errors.add(path, f"nested deeper than {limits.props_max_depth} levels")
        return
    fields = struct.fields
    # Keys then lookups: the map's items() view iterates in Python, this in C.
    for key in fields:
        if errors.items and errors.full:
            return
        value = fields[key]
        if (
            not key
            or len(key) > MAX_KEY_CHARS
            or (not key.isprintable() and identity.has_bad_chars(key))
        ):
            errors.add(
                _key_path(path, key),
                f"keys must be 1-{MAX_KEY_CHARS} characters, no control characters",
            )
        kind = value.WhichOneof("kind")
        # Strings, bools, nulls and finite numbers are always fine: the path (a regex match
        # and a format) is built only for what needs a closer look. This runs per prop.
        if kind in _PLAIN_KINDS:
            continue
        if kind == "number_value" and math.isfinite(value.number_value):
            continue
        _walk_value(errors, _key_path(path, key), value, depth, limits)


def _walk_value(errors: _Errors, path: str, value: Value, depth: int, limits: Limits) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            errors.add(path, "must be a finite number (JSON has no NaN or Infinity)")
    elif kind == "struct_value":
        _walk_struct(errors, path, value.struct_value, depth + 1, limits)
    elif kind == "list_value":
        if depth + 1 > limits.props_max_depth:
            errors.add(path, f"nested deeper than {limits.props_max_depth} levels")
            return
        for index, item in enumerate(value.list_value.values):
            if errors.full:
                return
            _walk_value(errors, f"{path}[{index}]", item, depth + 1, limits)
    elif kind is None:
        errors.add(path, "a value must be set: null, number, string, bool, object or list")


def _check_common(
    errors: _Errors,
    path: str,
    *,
    event_id: str,
    occurred_at: Timestamp | None,
    source: str,
    now_seconds: int,
    limits: Limits,
) -> None:
    _check_event_id(errors, path, event_id)
    if occurred_at is not None:
        _check_timestamp(errors, path, occurred_at, now_seconds, limits)
    _bounded_text(errors, path, "source", source, MAX_SOURCE_CHARS)


def _ref(
    errors: _Errors, path: str, kind: str, value: str, name: str = "", parent: str = ""
) -> Ref | None:
    """The normalised ref, or None after reporting `<path>[.<parent>].<name or kind>`."""
    try:
        return Ref(kind, identity.normalize(kind, value))
    except identity.InvalidIdentity as exc:
        where = field_path(path, parent) if parent else path
        errors.add(field_path(where, name or kind), str(exc))
        return None


def check_touchpoint(
    event: touchpoint_pb2.Touchpoint, path: str, limits: Limits, now_seconds: int
) -> tuple[list[FieldError], Ref | None]:
    """Every problem with a tracked `event` under `path` (e.g. `events[3]`), and its ref.

    The ref is the normalised customer identity, None when the event is invalid.
    """
    # This runs for every event of every batch: each field is read once into a local (a
    # protobuf getter builds a new Python object per read) and paths are built on error.
    errors = _Errors()
    ref = None
    customer = event.customer
    ref_kind = customer.WhichOneof("identity")
    if ref_kind is None:
        errors.add(field_path(path, "customer"), "required: one identity of the customer")
    else:
        ref = _ref(errors, path, ref_kind, getattr(customer, ref_kind), parent="customer")

    name = event.name
    if not name:
        errors.add(field_path(path, "name"), "required")
    elif len(name) > MAX_NAME_CHARS or not EVENT_NAME.fullmatch(name):
        errors.add(
            field_path(path, "name"),
            "must match <domain>.<action> in lower case (e.g. order.completed), "
            f"got {name[:MAX_NAME_CHARS]!r}",
        )
    elif name.partition(".")[0] in RESERVED_DOMAINS:
        errors.add(
            field_path(path, "name"),
            f"the domain {name.partition('.')[0]!r} is reserved for enishi's own "
            "touchpoints (see docs/contracts.md)",
        )
    if event.kind not in _EVENT_KINDS:
        errors.add(
            field_path(path, "kind"),
            "only EVENT touchpoints may be tracked; identities go through Identify",
        )
    detail = event.WhichOneof("detail")
    if detail is not None:
        errors.add(field_path(path, detail), "must be unset: EVENT touchpoints carry no detail")

    event_id = event.event_id
    if event_id:
        _check_event_id(errors, path, event_id)
    if event.HasField("occurred_at"):
        _check_timestamp(errors, path, event.occurred_at, now_seconds, limits)
    source = event.source
    if source:
        _bounded_text(errors, path, "source", source, MAX_SOURCE_CHARS)
    channel = event.channel
    if channel and not CHANNEL.fullmatch(channel):
        errors.add(
            field_path(path, "channel"), "must be lower case [a-z][a-z0-9_]*, at most 32 chars"
        )
    if event.HasField("props"):
        check_struct(errors, field_path(path, "props"), event.props, limits)
    attributes = event.attributes
    if attributes:
        _check_attributes(errors, field_path(path, "attributes"), attributes)
    if event.HasField("trace"):
        trace_path = field_path(path, "trace")
        trace = event.trace
        if trace.traceparent and not TRACEPARENT.fullmatch(trace.traceparent):
            errors.add(
                field_path(trace_path, "traceparent"),
                "must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>",
            )
        _bounded_text(errors, trace_path, "tracestate", trace.tracestate, MAX_TRACESTATE_CHARS)
    return errors.items, (ref if not errors.items else None)


def _check_attributes(errors: _Errors, path: str, attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        errors.add(path, f"at most {MAX_ATTRIBUTES} entries, got {len(attributes)}")
        return
    for key, value in attributes.items():
        key_path = f"{path}[{json.dumps(key[:MAX_KEY_CHARS])}]"
        if not key:
            errors.add(key_path, "keys must not be empty")
        else:
            _bounded_text(errors, key_path, "", key, MAX_KEY_CHARS)
        _bounded_text(errors, key_path, "", value, MAX_ATTRIBUTE_VALUE_CHARS)


@dataclass(frozen=True)
class CheckedIdentify:
    """An acceptable Identify: the normalised identity and the claims to attach."""

    identity: identity_pb2.Identity
    claims: tuple[Claim, ...]


def check_identify(
    request: pb.IdentifyRequest, limits: Limits, now_seconds: int
) -> tuple[list[FieldError], CheckedIdentify | None]:
    """Every problem with an Identify call, or the normalised identities it attaches."""
    errors = _Errors()
    given = request.identity
    normal = identity_pb2.Identity()
    claims: list[Claim] = []
    if not request.HasField("identity") or given.ByteSize() == 0:
        errors.add("identity", "required: at least one identity")
    if given.customer_id:
        ref = _ref(errors, "identity", identity.CUSTOMER_ID, given.customer_id)
        if ref is not None:
            normal.customer_id = ref.value
    for kind in (identity.EMAIL, identity.PHONE, identity.LINE_USER_ID, identity.ANONYMOUS_ID):
        value = getattr(given, kind)
        if not value:
            continue
        ref = _ref(errors, "identity", kind, value)
        if ref is not None:
            setattr(normal, kind, ref.value)
            claims.append(Claim(ref, field_path("identity", kind)))
    if len(given.push_tokens) > MAX_PUSH_TOKENS:
        errors.add(
            "identity.push_tokens",
            f"at most {MAX_PUSH_TOKENS} tokens, got {len(given.push_tokens)}",
        )
    else:
        seen: set[str] = set()
        for index, token in enumerate(given.push_tokens):
            path = field_path("identity", "push_tokens", index)
            ref = _ref(errors, path, identity.PUSH_TOKEN, token.token, "token")
            if token.platform not in _PUSH_PLATFORMS:
                errors.add(field_path(path, "platform"), f"unknown platform {token.platform}")
            _bounded_text(errors, path, "app_id", token.app_id, MAX_APP_ID_CHARS)
            if ref is not None and ref.value not in seen:
                seen.add(ref.value)
                normal.push_tokens.append(token)
                claims.append(Claim(ref, field_path(path, "token")))
    if request.HasField("traits"):
        check_struct(errors, "traits", request.traits, limits)
    _check_common(
        errors,
        "",
        event_id=request.event_id,
        occurred_at=request.occurred_at if request.HasField("occurred_at") else None,
        source=request.source,
        now_seconds=now_seconds,
        limits=limits,
    )
    if errors.items:
        return errors.items, None
    return [], CheckedIdentify(normal, tuple(claims))
