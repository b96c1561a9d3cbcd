"""The gRPC/protobuf contracts: generated code is current, messages survive the wire, services
keep the methods other services and clients rely on, and every element is documented."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from enishi.v1 import (
    channel_pb2,
    customer_service_pb2,
    dispatch_pb2,
    identity_pb2,
    ingest_service_pb2,
    journey_registry_pb2,
    touchpoint_pb2,
)
from scripts import gen_protos

pytestmark = pytest.mark.unit

EXPECTED_METHODS = {
    ("ingest_service", "IngestService"): {"Track", "BatchTrack", "Identify"},
    ("customer_service", "CustomerService"): {
        "GetCustomer",
        "ListTimeline",
        "FindCustomer",
        "UpdatePreferences",
    },
    ("journey_registry", "JourneyRegistry"): {
        "ValidateJourney",
        "RegisterJourney",
        "ActivateJourney",
        "PauseJourney",
        "ResumeJourney",
        "ArchiveJourney",
        "ListJourneys",
        "GetJourney",
        "PlanMigration",
        "MigrateJourney",
        "GetJourneyStats",
    },
}
SERVICE_MODULES = {
    "ingest_service": ingest_service_pb2,
    "customer_service": customer_service_pb2,
    "journey_registry": journey_registry_pb2,
}

PROPS: dict[str, Any] = {
    "order_id": "A-1001",
    "amount": 3200.0,
    "gift": False,
    "coupon": None,
    "items": [{"sku": "tea-01", "qty": 2.0}, {"sku": "cup-02", "qty": 1.0}],
    "shipping": {"prefecture": "東京都", "express": True},
}


def _at(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=123_000_000)


def test_generated_code_matches_protos() -> None:
    drift = gen_protos.check()
    assert drift.clean, f"enishi/v1 is stale; run `make protos`:\n{drift.report()}"


def test_check_reports_stale_missing_and_extra_files(tmp_path: Path) -> None:
    package = tmp_path / "v1"
    shutil.copytree(gen_protos.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "touchpoint_pb2.py").write_text("# edited by hand\n", encoding="utf-8")
    (package / "dispatch_pb2.pyi").unlink()
    (package / "old_pb2.py").write_text("", encoding="utf-8")

    drift = gen_protos.check(package)

    assert drift.stale == ("touchpoint_pb2.py",)
    assert drift.missing == ("dispatch_pb2.pyi",)
    assert drift.extra == ("old_pb2.py",)
    assert gen_protos.main(["--check"]) == 0


def test_touchpoint_round_trips_through_bytes_with_struct_props() -> None:
    event = touchpoint_pb2.Touchpoint(
        event_id="01JCZ8T9V5Q3J6X0W2Y4R8N1KM",
        customer=identity_pb2.CustomerRef(email="hana@example.jp"),
        customer_id="c-42",
        name="order.completed",
        kind=touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
        occurred_at=_at(1_700_000_000),
        received_at=_at(1_700_000_001),
        source="shop-web",
        channel="web",
        attributes={"app_version": "3.1.0"},
        trace=touchpoint_pb2.TraceContext(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
    )
    event.props.update(PROPS)

    decoded = touchpoint_pb2.Touchpoint.FromString(event.SerializeToString())

    assert decoded == event
    assert MessageToDict(decoded.props) == PROPS
    assert decoded.customer.WhichOneof("identity") == "email"
    assert decoded.WhichOneof("detail") is None
    assert decoded.occurred_at.ToNanoseconds() == event.occurred_at.ToNanoseconds()


def test_receipt_touchpoint_carries_the_why_of_its_dispatch() -> None:
    why = dispatch_pb2.DispatchReason(
        journey_id="f2-second-purchase", journey_version=3, step_id="thanks", designer="aiko"
    )
    receipt = touchpoint_pb2.Touchpoint(
        event_id="rcpt:d-1:sent",
        customer_id="c-42",
        name="message.sent",
        kind=touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE,
        receipt=dispatch_pb2.DeliveryReceipt(
            dispatch_id="d-1",
            channel=channel_pb2.CHANNEL_LINE,
            status=dispatch_pb2.DELIVERY_STATUS_SENT,
            reason=why,
        ),
    )

    decoded = touchpoint_pb2.Touchpoint.FromString(receipt.SerializeToString())

    assert decoded.WhichOneof("detail") == "receipt"
    assert decoded.receipt.reason == why


def test_dispatch_event_round_trips_through_bytes_with_struct_content() -> None:
    line_message = {"type": "text", "text": "ご購入ありがとうございます", "quickReply": None}
    dispatch = dispatch_pb2.DispatchEvent(
        dispatch_id="journey:f2-second-purchase:c-42/thanks/0",
        channel=channel_pb2.CHANNEL_LINE,
        customer_id="c-42",
        address="U" + "0" * 32,
        locale="ja-JP",
        created_at=_at(1_700_000_100),
        reason=dispatch_pb2.DispatchReason(
            journey_id="f2-second-purchase",
            journey_version=3,
            step_id="thanks",
            trigger_event_id="01JCZ8T9V5Q3J6X0W2Y4R8N1KM",
            designer="aiko",
            workflow_id="journey:f2-second-purchase:c-42",
        ),
    )
    dispatch.line.messages.add().update(line_message)

    decoded = dispatch_pb2.DispatchEvent.FromString(dispatch.SerializeToString())

    assert decoded == dispatch
    assert decoded.WhichOneof("content") == "line"
    assert [MessageToDict(m) for m in decoded.line.messages] == [line_message]
    assert decoded.reason.trigger_event_id == "01JCZ8T9V5Q3J6X0W2Y4R8N1KM"


def test_customer_ref_holds_exactly_one_identity() -> None:
    ref = identity_pb2.CustomerRef(email="hana@example.jp")
    ref.phone = "+819012345678"

    assert ref.WhichOneof("identity") == "phone"
    assert not ref.HasField("email")


@pytest.mark.parametrize(("module", "service"), sorted(EXPECTED_METHODS))
def test_service_has_exactly_the_contracted_methods(module: str, service: str) -> None:
    descriptor = SERVICE_MODULES[module].DESCRIPTOR.services_by_name[service]

    methods = {method.name: method for method in descriptor.methods}

    assert set(methods) == EXPECTED_METHODS[(module, service)]
    for name, method in methods.items():
        assert method.input_type.name == f"{name}Request"
        assert method.output_type.name == f"{name}Response"
        assert not method.client_streaming
        assert not method.server_streaming


def _undocumented(proto: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Every message, field, oneof, enum, value, service and method without a leading comment."""
    documented = {
        tuple(location.path)
        for location in proto.source_code_info.location
        if location.leading_comments.strip()
    }
    missing: list[str] = []

    def need(path: tuple[int, ...], name: str) -> None:
        if path not in documented:
            missing.append(f"{proto.name}: {name}")

    def enum(path: tuple[int, ...], value: descriptor_pb2.EnumDescriptorProto, name: str) -> None:
        need(path, name)
        for i, item in enumerate(value.value):
            need((*path, 2, i), f"{name}.{item.name}")

    def message(path: tuple[int, ...], value: descriptor_pb2.DescriptorProto, name: str) -> None:
        need(path, name)
        for i, field in enumerate(value.field):
            need((*path, 2, i), f"{name}.{field.name}")
        for i, nested in enumerate(value.nested_type):
            if not nested.options.map_entry:
                message((*path, 3, i), nested, f"{name}.{nested.name}")
        for i, nested_enum in enumerate(value.enum_type):
            enum((*path, 4, i), nested_enum, f"{name}.{nested_enum.name}")
        for i, oneof in enumerate(value.oneof_decl):
            need((*path, 8, i), f"{name}.{oneof.name}")

    # Field numbers of FileDescriptorProto / ServiceDescriptorProto in descriptor.proto.
    for i, top in enumerate(proto.message_type):
        message((4, i), top, top.name)
    for i, top_enum in enumerate(proto.enum_type):
        enum((5, i), top_enum, top_enum.name)
    for i, service in enumerate(proto.service):
        need((6, i), service.name)
        for j, method in enumerate(service.method):
            need((6, i, 2, j), f"{service.name}.{method.name}")
    return missing


def test_every_contract_element_is_documented() -> None:
    files = gen_protos.describe(include_source_info=True).file

    missing = [name for proto in files for name in _undocumented(proto)]

    assert len(files) == len(gen_protos.proto_files())
    assert not missing, "add a comment to:\n" + "\n".join(missing)
