"""CustomerRef checks, active journeys from the enrollments hash, and the CLI's identity syntax."""

from __future__ import annotations

import json

import pytest

from enishi.cli.customer import parse_identity, why
from enishi.errors import InvalidArgument
from enishi.identity import Ref
from enishi.v1 import customer_pb2, identity_pb2, journey_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as pb
from enishi.wire import Undecodable, deserializer
from services.customers.journeys import active_from_hash
from services.customers.refs import check_ref
from services.customers.servicer import check_timeline_request

Kind = touchpoint_pb2.TouchpointKind


def test_a_ref_is_normalised_like_ingest_does() -> None:
    ref = check_ref(identity_pb2.CustomerRef(email=" Ann@Example.COM"))
    assert ref == Ref("email", "ann@example.com")
    assert check_ref(identity_pb2.CustomerRef(phone="+81 90-1234-5678")).value == "+819012345678"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (identity_pb2.CustomerRef(), "customer: required"),
        (identity_pb2.CustomerRef(email="nope"), "customer.email: not a valid email"),
        (identity_pb2.CustomerRef(phone="12"), "customer.phone: must be E.164"),
        (identity_pb2.CustomerRef(customer_id=" x"), "customer.customer_id: must not contain"),
        (identity_pb2.CustomerRef(line_user_id="U1"), "customer.line_user_id: must be a LINE"),
    ],
)
def test_a_bad_ref_names_its_field(ref: identity_pb2.CustomerRef, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_ref(ref)
    assert str(caught.value).startswith(message)


def test_timeline_filters_are_checked() -> None:
    request = pb.ListTimelineRequest(
        page_size=-1,
        names=["", "ok.name"],
        kinds=[Kind.TOUCHPOINT_KIND_UNSPECIFIED, Kind.TOUCHPOINT_KIND_MESSAGE],
    )
    request.since.nanos = -1
    with pytest.raises(InvalidArgument) as caught:
        check_timeline_request(request)
    assert [e.field for e in caught.value.errors] == [
        "page_size",
        "names[0]",
        "kinds[0]",
        "since.nanos",
    ]


def test_only_active_enrollments_are_active_journeys() -> None:
    stored = {
        b"welcome": json.dumps(
            {
                "count": 1,
                "last_at": 1_700_000_000_000,
                "active": True,
                "version": 2,
                "holdout": True,
            }
        ).encode(),
        b"f2": json.dumps({"count": 2, "last_at": 1_700_000_000, "active": False}).encode(),
        b"broken": b"{not json",
        b"birthday": json.dumps({"active": True, "last_at": "2024-05-01T10:00:00Z"}).encode(),
    }
    awaits = {b"welcome": json.dumps(["order.completed"]).encode()}
    journeys = active_from_hash("cust-1", stored, awaits)
    assert [j.journey_id for j in journeys] == ["birthday", "welcome"]
    birthday, welcome = journeys
    assert welcome.workflow_id == "journey:welcome:cust-1"
    assert welcome.entered_at.seconds == 1_700_000_000
    assert welcome.version == 2
    assert welcome.group == journey_pb2.ENROLLMENT_GROUP_HOLDOUT
    assert list(welcome.awaited_events) == ["order.completed"]
    assert not birthday.awaited_events
    assert birthday.entered_at.ToJsonString() == "2024-05-01T10:00:00Z"


def test_undecodable_bytes_become_a_field_error() -> None:
    parse = deserializer(pb.GetCustomerRequest)
    bad = parse(b"\x0a\x04\x1a\x02\xff\xfe")
    assert isinstance(bad, Undecodable)
    assert [e.field for e in bad.errors] == ["customer.email"]
    good = parse(pb.GetCustomerRequest(timeline_limit=3).SerializeToString())
    assert isinstance(good, pb.GetCustomerRequest) and good.timeline_limit == 3


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("email:ann@example.com", "email", "ann@example.com"),
        ("phone:+819012345678", "phone", "+819012345678"),
        ("line:U0123", "line_user_id", "U0123"),
        ("anon:dev-1", "anonymous_id", "dev-1"),
        ("push:tok", "push_token", "tok"),
        ("id:c:with:colons", "customer_id", "c:with:colons"),
        ("cust-42", "customer_id", "cust-42"),
        ("shop:42", "customer_id", "shop:42"),
    ],
)
def test_the_cli_reads_identities_as_kind_colon_value(text: str, field: str, value: str) -> None:
    ref = parse_identity(text)
    assert ref.WhichOneof("identity") == field
    assert getattr(ref, field) == value


def test_the_why_of_a_message_names_journey_version_step_and_designer() -> None:
    entry = customer_pb2.TimelineEntry(name="message.sent")
    assert why(entry) == ""
    entry.reason.journey_id = "f2"
    entry.reason.journey_version = 3
    entry.reason.step_id = "thanks"
    entry.reason.designer = "aiko"
    assert why(entry) == "f2 v3 / thanks, by aiko"
