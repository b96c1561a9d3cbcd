"""UpdatePreferences validation names every bad field; valid changes become touchpoints the
stream processor applies."""

from __future__ import annotations

import time

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from enishi.errors import InvalidArgument
from enishi.memory import apply, model
from enishi.v1 import channel_pb2, consent_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as pb
from services.customers import preferences

NOW_MS = int(time.time() * 1000)
EMAIL, LINE = channel_pb2.CHANNEL_EMAIL, channel_pb2.CHANNEL_LINE
IN, OUT = consent_pb2.CONSENT_STATUS_OPTED_IN, consent_pb2.CONSENT_STATUS_OPTED_OUT


def _fields(request: pb.UpdatePreferencesRequest) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        preferences.check_update(request, NOW_MS)
    return [error.field for error in caught.value.errors]


def _prefs(paths: list[str], **values: object) -> pb.UpdatePreferencesRequest:
    return pb.UpdatePreferencesRequest(
        preferences=consent_pb2.Preferences(**values),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=paths),
    )


def test_an_empty_change_asks_for_consents_or_preferences() -> None:
    assert _fields(pb.UpdatePreferencesRequest()) == ["consents"]


def test_consent_channel_status_source_and_time_are_checked_per_entry() -> None:
    request = pb.UpdatePreferencesRequest(
        consents=[
            consent_pb2.ChannelConsent(channel=channel_pb2.CHANNEL_UNSPECIFIED, status=IN),
            consent_pb2.ChannelConsent(
                channel=EMAIL, status=consent_pb2.CONSENT_STATUS_UNSPECIFIED, source="a\x00b"
            ),
            consent_pb2.ChannelConsent(channel=EMAIL, status=OUT),
        ]
    )
    request.consents[2].updated_at.FromMilliseconds(NOW_MS + 3_600_000)
    assert _fields(request) == [
        "consents[0].channel",
        "consents[1].status",
        "consents[1].source",
        "consents[2].channel",  # email twice
        "consents[2].updated_at",  # an hour ahead
    ]


@pytest.mark.parametrize(
    ("paths", "values", "field"),
    [
        (["time_zone"], {"time_zone": "Mars/Olympus"}, "preferences.time_zone"),
        (["time_zone"], {"time_zone": "../etc/passwd"}, "preferences.time_zone"),
        (["locale"], {"locale": "not a locale"}, "preferences.locale"),
        (["preferred_channel"], {"preferred_channel": 9}, "preferences.preferred_channel"),
        (
            ["fallback_channels"],
            {"fallback_channels": [EMAIL, EMAIL]},
            "preferences.fallback_channels[1]",
        ),
        (["fallback_channels"], {"fallback_channels": [0]}, "preferences.fallback_channels[0]"),
        (
            ["quiet_hours"],
            {"quiet_hours": consent_pb2.QuietHours(start="25:00", end="08:00")},
            "preferences.quiet_hours.start",
        ),
        (
            ["quiet_hours"],
            {"quiet_hours": consent_pb2.QuietHours(start="21:00")},
            "preferences.quiet_hours",
        ),
        (
            ["quiet_hours"],
            {"quiet_hours": consent_pb2.QuietHours(start="21:00", end="21:00")},
            "preferences.quiet_hours.end",
        ),
        (["nickname"], {}, "update_mask.paths[0]"),
        (["locale", "locale"], {"locale": "ja-JP"}, "update_mask.paths[1]"),
    ],
)
def test_a_bad_preference_names_its_field(
    paths: list[str], values: dict[str, object], field: str
) -> None:
    assert _fields(_prefs(paths, **values)) == [field]


def test_fields_outside_the_mask_are_not_checked() -> None:
    request = _prefs(["locale"], locale="ja-JP", time_zone="Mars/Olympus")
    change = preferences.check_update(request, NOW_MS)
    assert change.paths == ("locale",)


def test_a_mask_without_preferences_is_rejected() -> None:
    request = pb.UpdatePreferencesRequest(update_mask=FieldMask(paths=["locale"]))
    assert _fields(request) == ["preferences"]


def test_request_id_and_source_are_checked() -> None:
    request = _prefs(["locale"], locale="en")
    request.request_id = "has spaces"
    request.source = "x" * 129
    assert _fields(request) == ["source", "request_id"]


def _valid() -> pb.UpdatePreferencesRequest:
    request = _prefs(
        ["preferred_channel", "time_zone", "quiet_hours"],
        preferred_channel=LINE,
        time_zone="Asia/Tokyo",
        quiet_hours=consent_pb2.QuietHours(start="21:00", end="08:00"),
    )
    request.consents.add(channel=EMAIL, status=IN, source="signup_form")
    request.consents.add(channel=LINE, status=OUT)
    request.source = "preference_center"
    request.request_id = "req-1"
    return request


def test_a_change_becomes_consent_and_preferences_touchpoints_keyed_by_the_customer() -> None:
    change = preferences.check_update(_valid(), NOW_MS)
    consent, prefs = preferences.touchpoints(change, "cust-1", NOW_MS)
    assert consent.kind == touchpoint_pb2.TOUCHPOINT_KIND_CONSENT
    assert consent.name == "consent.changed"
    assert consent.customer_id == "cust-1" and consent.customer.customer_id == "cust-1"
    assert [c.source for c in consent.consent.consents] == ["signup_form", "preference_center"]
    assert all(model.to_ms(c.updated_at) == NOW_MS for c in consent.consent.consents)
    assert prefs.kind == touchpoint_pb2.TOUCHPOINT_KIND_PREFERENCES
    assert list(prefs.preferences.update_mask.paths) == [
        "preferred_channel",
        "time_zone",
        "quiet_hours",
    ]
    # The stream processor accepts them as they are.
    for touchpoint in (consent, prefs):
        apply.plan(touchpoint, now_ms=NOW_MS)


def test_a_retried_request_writes_the_same_event_ids() -> None:
    first = preferences.touchpoints(preferences.check_update(_valid(), NOW_MS), "c", NOW_MS)
    later = NOW_MS + 5000
    again = preferences.touchpoints(preferences.check_update(_valid(), later), "c", later)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first[0].event_id != first[1].event_id


def test_without_a_request_id_each_call_gets_new_event_ids() -> None:
    request = _valid()
    request.request_id = ""
    one = preferences.touchpoints(preferences.check_update(request, NOW_MS), "c", NOW_MS)
    two = preferences.touchpoints(preferences.check_update(request, NOW_MS), "c", NOW_MS)
    assert one[0].event_id != two[0].event_id
