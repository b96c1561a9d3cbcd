"""Touchpoint and Identify validation: each rule, and the field path it reports."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from enishi.errors import FieldError
from enishi.identity import Ref
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from services.ingest.validation import Limits, check_identify, check_touchpoint

NOW = 1_800_000_000
LIMITS = Limits(props_max_bytes=1024, props_max_depth=3)


def _event(**fields: Any) -> touchpoint_pb2.Touchpoint:
    props = fields.pop("props", None)
    event = touchpoint_pb2.Touchpoint(
        customer=identity_pb2.CustomerRef(customer_id="c-1"), name="order.completed"
    )
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(event, name).update(value)
        elif name in ("customer", "occurred_at", "trace"):
            getattr(event, name).CopyFrom(value)
        else:
            setattr(event, name, value)
    if props is not None:
        event.props.update(props)
    return event


def _fields(errors: list[FieldError]) -> list[str]:
    return [e.field for e in errors]


def test_a_valid_event_has_no_errors_and_a_normalised_ref() -> None:
    event = _event(customer=identity_pb2.CustomerRef(email="Ann@Example.com"), channel="web")
    errors, ref = check_touchpoint(event, "event", LIMITS, NOW)
    assert errors == []
    assert ref == Ref("email", "ann@example.com")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (touchpoint_pb2.Touchpoint(name="order.completed"), "events[3].customer"),
        (_event(customer=identity_pb2.CustomerRef(phone="090")), "events[3].customer.phone"),
        (_event(name=""), "events[3].name"),
        (_event(name="Order Completed"), "events[3].name"),
        (_event(name="message.sent"), "events[3].name"),
        (_event(kind=touchpoint_pb2.TOUCHPOINT_KIND_MERGE), "events[3].kind"),
        (_event(kind=99), "events[3].kind"),
        (_event(event_id="has space"), "events[3].event_id"),
        (_event(event_id="x" * 129), "events[3].event_id"),
        (_event(occurred_at=Timestamp(seconds=NOW + 25 * 3600)), "events[3].occurred_at"),
        (_event(occurred_at=Timestamp(seconds=NOW // 1000)), "events[3].occurred_at"),
        (_event(occurred_at=Timestamp(seconds=-(2**62))), "events[3].occurred_at"),
        (_event(occurred_at=Timestamp(seconds=NOW, nanos=-1)), "events[3].occurred_at"),
        (_event(source="s" * 129), "events[3].source"),
        (_event(source="bell\x07"), "events[3].source"),
        (_event(channel="Web"), "events[3].channel"),
        (_event(attributes={"": "x"}), 'events[3].attributes[""]'),
        (_event(attributes={"k": "v" * 1025}), 'events[3].attributes["k"]'),
        (_event(props={"cart": {"items": [{"deep": 1}]}}), "events[3].props.cart.items[0]"),
        (_event(props={"k" * 129: 1}), f'events[3].props["{"k" * 128}"]'),
        (_event(props={"blob": "x" * 2000}), "events[3].props"),
        (_event(props={"n": float("nan")}), "events[3].props.n"),
        (_event(props={"two words": float("inf")}), 'events[3].props["two words"]'),
        (
            _event(trace=touchpoint_pb2.TraceContext(traceparent="nope")),
            "events[3].trace.traceparent",
        ),
    ],
)
def test_each_rule_names_its_field(event: touchpoint_pb2.Touchpoint, field: str) -> None:
    errors, ref = check_touchpoint(event, "events[3]", LIMITS, NOW)
    assert field in _fields(errors)
    assert ref is None


def test_a_detail_on_an_event_is_rejected() -> None:
    event = _event()
    event.merge.from_customer_id = "x"
    errors, _ = check_touchpoint(event, "event", LIMITS, NOW)
    assert _fields(errors) == ["event.merge"]


def test_an_unset_value_inside_props_is_rejected() -> None:
    event = _event()
    event.props.fields["empty"].Clear()
    event.props.fields["empty"].list_value.values.add()
    errors, _ = check_touchpoint(event, "event", LIMITS, NOW)
    assert _fields(errors) == ["event.props.empty[0]"]


def test_one_item_reports_at_most_ten_errors() -> None:
    event = _event(props={f"n{i}": float("nan") for i in range(50)})
    errors, _ = check_touchpoint(event, "event", LIMITS, NOW)
    assert len(errors) == 10


def test_props_exactly_at_the_depth_limit_are_accepted() -> None:
    errors, _ = check_touchpoint(_event(props={"a": {"b": [1]}}), "event", LIMITS, NOW)
    assert errors == []


def _identify(**identity: Any) -> pb.IdentifyRequest:
    return pb.IdentifyRequest(identity=identity_pb2.Identity(**identity))


def test_identify_normalises_identities_and_lists_the_claims() -> None:
    request = _identify(
        customer_id="cust-1",
        email="A@B.co",
        phone="+81 90 1234 5678",
        anonymous_id="dev-1",
        push_tokens=[identity_pb2.PushToken(token="t1"), identity_pb2.PushToken(token="t1")],
    )
    errors, checked = check_identify(request, LIMITS, NOW)
    assert errors == [] and checked is not None
    assert checked.identity.email == "a@b.co" and checked.identity.phone == "+819012345678"
    assert [c.field for c in checked.claims] == [
        "identity.email",
        "identity.phone",
        "identity.anonymous_id",
        "identity.push_tokens[0].token",
    ]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.IdentifyRequest(), "identity"),
        (_identify(email="nope"), "identity.email"),
        (_identify(line_user_id="U123"), "identity.line_user_id"),
        (_identify(customer_id="x" * 200), "identity.customer_id"),
        (
            _identify(push_tokens=[identity_pb2.PushToken(token="")]),
            "identity.push_tokens[0].token",
        ),
        (
            _identify(push_tokens=[identity_pb2.PushToken(token="t", platform=7)]),  # type: ignore[arg-type]
            "identity.push_tokens[0].platform",
        ),
        (_identify(push_tokens=[identity_pb2.PushToken(token="t")] * 17), "identity.push_tokens"),
        (
            pb.IdentifyRequest(identity=identity_pb2.Identity(anonymous_id="a"), event_id="a b"),
            "event_id",
        ),
        (
            pb.IdentifyRequest(
                identity=identity_pb2.Identity(anonymous_id="a"), traits=Struct(fields={})
            ),
            None,
        ),
    ],
)
def test_identify_rules_name_their_field(request_: pb.IdentifyRequest, field: str | None) -> None:
    errors, checked = check_identify(request_, LIMITS, NOW)
    if field is None:
        assert errors == [] and checked is not None
    else:
        assert field in _fields(errors) and checked is None


def test_identify_traits_follow_the_props_limits() -> None:
    request = _identify(anonymous_id="a")
    request.traits.update({"a": {"b": {"c": {"d": 1}}}})
    errors, _ = check_identify(request, LIMITS, NOW)
    assert _fields(errors) == ["traits.a.b.c"]
