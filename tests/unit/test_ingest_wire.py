"""Undecodable requests become field errors; a batch keeps its decodable items."""

from __future__ import annotations

from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from services.ingest.wire import (
    PartialBatch,
    Undecodable,
    batch_track_request,
    identify_request,
    track_request,
)


def _event(name: str = "order.completed") -> touchpoint_pb2.Touchpoint:
    return touchpoint_pb2.Touchpoint(
        customer=identity_pb2.CustomerRef(email="ann@example.com"), name=name
    )


def test_a_decodable_request_passes_through() -> None:
    request = pb.TrackRequest(event=_event())
    assert track_request(request.SerializeToString()) == request


def test_invalid_utf8_in_a_ref_is_named() -> None:
    data = pb.TrackRequest(event=_event()).SerializeToString().replace(b"ann", b"a\xffn")
    decoded = track_request(data)
    assert isinstance(decoded, Undecodable)
    assert [str(e) for e in decoded.errors] == ["event.customer.email: not valid UTF-8"]


def test_invalid_utf8_in_an_attribute_value_is_named_by_its_key() -> None:
    event = _event()
    event.attributes["campaign"] = "spring"
    data = pb.TrackRequest(event=event).SerializeToString().replace(b"spring", b"spr\xe9ng")
    decoded = track_request(data)
    assert isinstance(decoded, Undecodable)
    assert decoded.errors[0].field == "event.attributes['campaign']"


def _varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _len(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def test_nesting_beyond_the_parser_limit_is_named_not_crashed() -> None:
    struct = b""  # {"x": {"x": ... {}}}, built by hand: protobuf refuses to build it
    for _ in range(150):
        entry = _len(1, b"x") + _len(2, _len(5, struct))
        struct = _len(1, entry)
    decoded = identify_request(_len(2, struct))
    assert isinstance(decoded, Undecodable)
    assert decoded.errors[0].field.startswith("traits.x.x")


def test_truncated_bytes_name_the_request() -> None:
    data = pb.IdentifyRequest(source="shop-web").SerializeToString()[:-2]
    decoded = identify_request(data)
    assert isinstance(decoded, Undecodable)
    assert decoded.errors[0].field == "request"


def test_a_batch_with_one_bad_item_keeps_the_others_in_order() -> None:
    request = pb.BatchTrackRequest(events=[_event("a.one"), _event("b.two"), _event("c.six")])
    data = request.SerializeToString().replace(b"b.two", b"b.t\xffo")
    decoded = batch_track_request(data)
    assert isinstance(decoded, PartialBatch)
    assert [e.name for e in decoded.request.events] == ["a.one", "", "c.six"]
    assert [str(e) for e in decoded.errors[1]] == ["events[1].name: not valid UTF-8"]
