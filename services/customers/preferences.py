"""UpdatePreferences: checks every field of a change and turns it into CONSENT / PREFERENCES
touchpoints, so the change reaches memory through the stream and stays in the timeline.

Pure: `check_update(request, now_ms)` returns the checked change or raises `InvalidArgument`
naming every bad field; `touchpoints(change, customer_id, now_ms)` builds what is published.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zoneinfo
from dataclasses import dataclass
from typing import Final

from ulid import ULID

from enishi import identity
from enishi.errors import FieldError, InvalidArgument, field_path
from enishi.memory import model
from enishi.touchpoints import CONSENT_CHANGED, PREFERENCES_CHANGED
from enishi.v1 import channel_pb2, consent_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as pb

DEFAULT_SOURCE: Final = "enishi.customers"

REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# BCP 47 in the shape content lookups use: language, then subtags (ja-JP, en, zh-Hant-TW).
LOCALE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
HH_MM: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
MAX_SOURCE_CHARS: Final = 128
MAX_LOCALE_CHARS: Final = 35
OLDEST_UPDATED_AT: Final = 946_684_800  # 2000-01-01T00:00:00Z: older is a unit mistake
# A consent time from a client clock slightly ahead is fine; one far ahead would win
# last-write-wins against every real change until that time.
MAX_FUTURE_MS: Final = 5 * 60 * 1000

_CHANNELS: Final = frozenset(channel_pb2.Channel.values()) - {channel_pb2.CHANNEL_UNSPECIFIED}
_STATUSES: Final = frozenset(
    {consent_pb2.CONSENT_STATUS_OPTED_IN, consent_pb2.CONSENT_STATUS_OPTED_OUT}
)


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclass(frozen=True)
class PreferenceUpdate:
    """A checked UpdatePreferences: what to write and under which ids."""

    request_id: str
    source: str
    consents: tuple[consent_pb2.ChannelConsent, ...]
    preferences: consent_pb2.Preferences | None
    paths: tuple[str, ...]
    """Preferences fields changed; empty with preferences set means all of them."""


def _text(errors: list[FieldError], path: str, value: str, limit: int) -> None:
    if len(value) > limit:
        errors.append(FieldError(path, f"at most {limit} characters"))
    elif identity.has_bad_chars(value):
        errors.append(FieldError(path, "must not contain control characters"))


def _channel_name(channel: int) -> str:
    return model.channel_name(channel) if channel in _CHANNELS else str(channel)


def _check_consents(
    errors: list[FieldError], consents: list[consent_pb2.ChannelConsent], now_ms: int
) -> None:
    seen: set[int] = set()
    for index, consent in enumerate(consents):
        path = field_path("consents", index)
        if consent.channel not in _CHANNELS:
            errors.append(
                FieldError(
                    field_path(path, "channel"),
                    f"must be one of email, line, sms, push, got {consent.channel}",
                )
            )
        elif consent.channel in seen:
            errors.append(
                FieldError(
                    field_path(path, "channel"),
                    f"{_channel_name(consent.channel)} appears twice: one change per channel",
                )
            )
        seen.add(consent.channel)
        if consent.status not in _STATUSES:
            errors.append(FieldError(field_path(path, "status"), "must be OPTED_IN or OPTED_OUT"))
        _text(errors, field_path(path, "source"), consent.source, MAX_SOURCE_CHARS)
        if consent.HasField("updated_at"):
            at = consent.updated_at
            at_path = field_path(path, "updated_at")
            if not 0 <= at.nanos <= 999_999_999:
                errors.append(FieldError(at_path, "nanos must be between 0 and 999999999"))
            elif at.seconds < OLDEST_UPDATED_AT:
                errors.append(
                    FieldError(at_path, "before 2000-01-01T00:00:00Z (seconds, not milliseconds?)")
                )
            elif model.to_ms(at) > now_ms + MAX_FUTURE_MS:
                errors.append(FieldError(at_path, "in the future (more than 5 minutes ahead)"))


def _check_channels(errors: list[FieldError], prefs: consent_pb2.Preferences) -> None:
    channels = list(prefs.fallback_channels)
    for index, channel in enumerate(channels):
        path = field_path("preferences", "fallback_channels", index)
        if channel not in _CHANNELS:
            errors.append(FieldError(path, f"must be one of email, line, sms, push, got {channel}"))
        elif channel in channels[:index]:
            errors.append(FieldError(path, f"{_channel_name(channel)} appears twice"))


def _check_preferences(
    errors: list[FieldError], prefs: consent_pb2.Preferences, paths: tuple[str, ...]
) -> None:
    fields = paths or model.PREFERENCE_FIELDS
    if "preferred_channel" in fields and prefs.preferred_channel not in (
        _CHANNELS | {channel_pb2.CHANNEL_UNSPECIFIED}
    ):
        errors.append(
            FieldError(
                "preferences.preferred_channel",
                f"must be one of email, line, sms, push (or unset), got {prefs.preferred_channel}",
            )
        )
    if "fallback_channels" in fields:
        _check_channels(errors, prefs)
    if (
        "locale" in fields
        and prefs.locale
        and (len(prefs.locale) > MAX_LOCALE_CHARS or not LOCALE.fullmatch(prefs.locale))
    ):
        errors.append(FieldError("preferences.locale", "must be a BCP 47 tag such as ja-JP or en"))
    if "time_zone" in fields and prefs.time_zone and prefs.time_zone not in _time_zones():
        errors.append(
            FieldError(
                "preferences.time_zone",
                f"must be an IANA time zone such as Asia/Tokyo, got {prefs.time_zone[:64]!r}",
            )
        )
    if "quiet_hours" in fields:
        quiet = prefs.quiet_hours
        for name in ("start", "end"):
            value = getattr(quiet, name)
            if value and not HH_MM.fullmatch(value):
                errors.append(
                    FieldError(
                        field_path("preferences", "quiet_hours", name),
                        "must be local time HH:MM (00:00-23:59)",
                    )
                )
        if bool(quiet.start) != bool(quiet.end):
            errors.append(
                FieldError(
                    "preferences.quiet_hours",
                    "start and end must both be set (or both empty for no quiet hours)",
                )
            )
        elif quiet.start and quiet.start == quiet.end:
            errors.append(FieldError("preferences.quiet_hours.end", "must differ from start"))


def check_update(request: pb.UpdatePreferencesRequest, now_ms: int) -> PreferenceUpdate:
    """The checked change, or `InvalidArgument` naming every bad field (the ref is not checked)."""
    errors: list[FieldError] = []
    has_prefs = request.HasField("preferences")
    paths = tuple(request.update_mask.paths)
    if not request.consents and not has_prefs and not paths:
        errors.append(FieldError("consents", "required: set consents, preferences or both"))
    if paths and not has_prefs:
        errors.append(
            FieldError(
                "preferences",
                "required when update_mask is set (an empty Preferences clears those fields)",
            )
        )
    for index, path in enumerate(paths):
        if path not in model.PREFERENCE_FIELDS:
            errors.append(
                FieldError(
                    field_path("update_mask", "paths", index),
                    f"unknown field {path[:64]!r}, expected one of "
                    f"{', '.join(model.PREFERENCE_FIELDS)}",
                )
            )
        elif path in paths[:index]:
            errors.append(
                FieldError(field_path("update_mask", "paths", index), f"{path} appears twice")
            )
    _check_consents(errors, list(request.consents), now_ms)
    if has_prefs:
        _check_preferences(errors, request.preferences, paths)
    _text(errors, "source", request.source, MAX_SOURCE_CHARS)
    if request.request_id and not REQUEST_ID.fullmatch(request.request_id):
        errors.append(
            FieldError(
                "request_id",
                "must be 1-128 characters of A-Z a-z 0-9 . _ : - (or empty for a generated one)",
            )
        )
    if errors:
        raise InvalidArgument(errors)
    return PreferenceUpdate(
        request_id=request.request_id or str(ULID()),
        source=request.source or DEFAULT_SOURCE,
        consents=tuple(request.consents),
        preferences=request.preferences if has_prefs else None,
        paths=paths,
    )


def event_id(request_id: str, kind: str) -> str:
    """The touchpoint id of one part (`consent`, `preferences`) of a request: a retried
    request writes the same ids, and the stream processor drops the duplicates."""
    digest = hashlib.sha256(f"{request_id}\0{kind}".encode()).hexdigest()
    return f"{kind}-{digest[:32]}"


def touchpoints(
    change: PreferenceUpdate, customer_id: str, now_ms: int
) -> list[touchpoint_pb2.Touchpoint]:
    """The CONSENT and/or PREFERENCES touchpoints of `change`, keyed by `customer_id`."""
    now = model.from_ms(now_ms)
    events = []

    def base(
        kind: str, name: str, tp_kind: touchpoint_pb2.TouchpointKind.ValueType
    ) -> touchpoint_pb2.Touchpoint:
        return touchpoint_pb2.Touchpoint(
            event_id=event_id(change.request_id, kind),
            customer=identity_pb2.CustomerRef(customer_id=customer_id),
            customer_id=customer_id,
            name=name,
            kind=tp_kind,
            occurred_at=now,
            received_at=now,
            source=change.source,
        )

    if change.consents:
        event = base("consent", CONSENT_CHANGED, touchpoint_pb2.TOUCHPOINT_KIND_CONSENT)
        for given in change.consents:
            consent = event.consent.consents.add()
            consent.CopyFrom(given)
            consent.source = given.source or change.source
            if not given.HasField("updated_at"):
                consent.updated_at.CopyFrom(now)
        events.append(event)
    if change.preferences is not None:
        event = base("preferences", PREFERENCES_CHANGED, touchpoint_pb2.TOUCHPOINT_KIND_PREFERENCES)
        event.preferences.preferences.CopyFrom(change.preferences)
        event.preferences.update_mask.paths.extend(change.paths)
        events.append(event)
    return events
