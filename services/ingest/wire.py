"""Ingest's request deserializers: a batch keeps its decodable items so they are accepted.

The generic walk that names the offending field lives in `enishi.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enishi.errors import FieldError
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import touchpoint_pb2
from enishi.wire import Malformed, Undecodable, deserializer, fields, find_error, parse

__all__ = [
    "PartialBatch",
    "Undecodable",
    "batch_track_request",
    "identify_request",
    "track_request",
]


@dataclass(frozen=True)
class PartialBatch:
    """A BatchTrackRequest with undecodable items: those are empty placeholders here."""

    request: pb.BatchTrackRequest
    errors: dict[int, list[FieldError]] = field(default_factory=dict)


def _track_request_error(data: bytes) -> FieldError:
    # TrackRequest is just `event`; name paths from it as the handler would.
    error = find_error(data, pb.TrackRequest.DESCRIPTOR, "")
    return error if error.field else FieldError("event", error.message)


def track_request(data: bytes) -> pb.TrackRequest | Undecodable:
    """Deserializer for Track."""
    message = parse(pb.TrackRequest, data)
    return message if message is not None else Undecodable((_track_request_error(data),))


identify_request = deserializer(pb.IdentifyRequest)
"""Deserializer for Identify."""


def batch_track_request(data: bytes) -> pb.BatchTrackRequest | PartialBatch | Undecodable:
    """Deserializer for BatchTrack: items decode one by one when the whole does not."""
    message = parse(pb.BatchTrackRequest, data)
    if message is not None:
        return message
    try:
        entries = fields(data)
    except Malformed:
        return Undecodable((FieldError("events", "malformed protobuf bytes"),))
    partial = PartialBatch(pb.BatchTrackRequest())
    index = 0
    for number, _, payload in entries:
        if number != 1 or payload is None:
            continue
        event = parse(touchpoint_pb2.Touchpoint, payload)
        if event is None:
            partial.errors[index] = [
                find_error(payload, touchpoint_pb2.Touchpoint.DESCRIPTOR, f"events[{index}]")
            ]
            event = touchpoint_pb2.Touchpoint()
        partial.request.events.append(event)
        index += 1
    return partial
