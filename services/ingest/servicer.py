"""`IngestService` handlers: validate, stamp ids and times, resolve the customer, publish."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from enishi import wire
from enishi.errors import FieldError, InvalidArgument
from enishi.identity import KIND_ENUM, IdentifyOutcome, IdentityResolver, Merge, Ref
from enishi.touchpoints import TouchpointPublisher, new_event_id, new_event_ids
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc
from services.ingest.validation import Limits, check_identify, check_touchpoint
from services.ingest.wire import (
    PartialBatch,
    batch_track_request,
    track_request,
)

SERVICE = pb.DESCRIPTOR.services_by_name["IngestService"]
SERVICE_NAME = SERVICE.full_name
IDENTIFIED = "customer.identified"
MERGED = "identity.merged"
MERGE_SOURCE = "enishi.ingest"

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


def _now() -> tuple[int, Timestamp]:
    now = time.time_ns()
    stamp = Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
    return stamp.seconds, stamp


def merge_event_id(from_customer_id: str, into_customer_id: str) -> str:
    """The MERGE touchpoint's event id: the same merge always has the same id (dedupe)."""
    digest = hashlib.sha256(f"{from_customer_id}\0{into_customer_id}".encode()).hexdigest()
    return f"merge-{digest[:32]}"


class IngestServicer(pb_grpc.IngestServiceServicer):
    """Accepts touchpoints; a batch accepts its valid items even when others are invalid."""

    def __init__(
        self, publisher: TouchpointPublisher, resolver: IdentityResolver, limits: Limits
    ) -> None:
        self._publisher = publisher
        self._resolver = resolver
        self._limits = limits

    @staticmethod
    def _stamp(
        event: touchpoint_pb2.Touchpoint,
        customer_id: str,
        received: Timestamp,
        event_id: str | None = None,
    ) -> None:
        if not event.event_id:
            event.event_id = event_id or new_event_id()
        event.received_at.CopyFrom(received)
        if not event.HasField("occurred_at"):
            event.occurred_at.CopyFrom(received)
        event.kind = touchpoint_pb2.TOUCHPOINT_KIND_EVENT
        event.customer_id = customer_id

    async def Track(self, request: pb.TrackRequest, context: Context) -> pb.TrackResponse:
        now_seconds, received = _now()
        event = request.event
        errors, ref = check_touchpoint(event, "event", self._limits, now_seconds)
        if errors or ref is None:
            raise InvalidArgument(errors)
        [customer_id] = await self._resolver.resolve_many([ref])
        self._stamp(event, customer_id, received)
        await self._publisher.publish([event])
        return pb.TrackResponse(event_id=event.event_id, customer_id=customer_id)

    async def BatchTrack(
        self, request: pb.BatchTrackRequest | PartialBatch, context: Context
    ) -> pb.BatchTrackResponse:
        undecodable: dict[int, list[FieldError]] = {}
        if isinstance(request, PartialBatch):
            batch, undecodable = request.request, request.errors
        else:
            batch = request
        count = len(batch.events)
        if count == 0:
            raise InvalidArgument.for_field("events", "required: at least one event")
        if count > self._limits.batch_max:
            raise InvalidArgument.for_field(
                "events", f"at most {self._limits.batch_max} events per call, got {count}"
            )
        now_seconds, received = _now()
        accepted: list[tuple[int, touchpoint_pb2.Touchpoint]] = []
        refs: list[Ref] = []
        rejected: dict[int, list[FieldError]] = {}
        limits = self._limits
        for index, event in enumerate(batch.events):
            errors = undecodable.get(index)
            if errors is None:
                errors, ref = check_touchpoint(event, f"events[{index}]", limits, now_seconds)
            if errors or ref is None:
                rejected[index] = errors
                continue
            accepted.append((index, event))
            refs.append(ref)
        customer_ids: list[str] = []
        if accepted:
            customer_ids = await self._resolver.resolve_many(refs)
            fresh = iter(new_event_ids(sum(1 for _, e in accepted if not e.event_id)))
            stamp = self._stamp
            for (_, event), customer_id in zip(accepted, customer_ids, strict=True):
                stamp(event, customer_id, received, None if event.event_id else next(fresh))
            await self._publisher.publish([event for _, event in accepted])
        return _batch_response(count, accepted, customer_ids, rejected)

    async def Identify(self, request: pb.IdentifyRequest, context: Context) -> pb.IdentifyResponse:
        now_seconds, received = _now()
        errors, checked = check_identify(request, self._limits, now_seconds)
        if errors or checked is None:
            raise InvalidArgument(errors)
        occurred = request.occurred_at if request.HasField("occurred_at") else received
        outcome = await self._resolver.identify(checked.identity.customer_id, checked.claims)
        target = outcome.customer_id
        identity = identity_pb2.Identity()
        identity.CopyFrom(checked.identity)
        identity.customer_id = target
        identified = touchpoint_pb2.Touchpoint(
            event_id=request.event_id or new_event_id(),
            customer=identity_pb2.CustomerRef(customer_id=target),
            customer_id=target,
            name=IDENTIFIED,
            kind=touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY,
            occurred_at=occurred,
            received_at=received,
            source=request.source,
            identify=touchpoint_pb2.IdentifyDetail(identity=identity),
        )
        if request.HasField("traits"):
            identified.identify.traits.CopyFrom(request.traits)
        # MERGEs first: on the target's partition the processor folds the merged
        # memory in before it applies the identities and traits.
        merges = [_merge_touchpoint(m, target, occurred, received) for m in outcome.unpublished]
        await self._publisher.publish([*merges, identified])
        await self._resolver.merges_published(target, outcome.unpublished)
        _log_outcome(outcome)
        return pb.IdentifyResponse(
            customer_id=target,
            event_id=identified.event_id,
            merged_customer_ids=[m.from_customer_id for m in outcome.merged],
            created=outcome.created,
        )


def _batch_response(
    count: int,
    accepted: list[tuple[int, touchpoint_pb2.Touchpoint]],
    customer_ids: list[str],
    rejected: dict[int, list[FieldError]],
) -> pb.BatchTrackResponse:
    """One result per item, in item order; each built in one call (they are many)."""
    response = pb.BatchTrackResponse(accepted_count=len(accepted), rejected_count=len(rejected))
    add = response.results.add
    done = iter(zip(accepted, customer_ids, strict=True))
    for index in range(count):
        errors = rejected.get(index)
        if errors is not None:
            add(
                index=index,
                errors=[pb.FieldError(field=e.field, message=e.message) for e in errors],
            )
            continue
        (_, event), customer_id = next(done)
        add(index=index, accepted=True, event_id=event.event_id, customer_id=customer_id)
    return response


def _merge_touchpoint(
    merge: Merge, into: str, occurred: Timestamp, received: Timestamp
) -> touchpoint_pb2.Touchpoint:
    return touchpoint_pb2.Touchpoint(
        event_id=merge_event_id(merge.from_customer_id, into),
        customer=identity_pb2.CustomerRef(customer_id=into),
        customer_id=into,
        name=MERGED,
        kind=touchpoint_pb2.TOUCHPOINT_KIND_MERGE,
        occurred_at=occurred,
        received_at=received,
        source=MERGE_SOURCE,
        merge=touchpoint_pb2.IdentityMerge(
            from_customer_id=merge.from_customer_id,
            into_customer_id=into,
            matched_by=KIND_ENUM.get(merge.matched_by, identity_pb2.IDENTITY_KIND_UNSPECIFIED),
        ),
    )


def _log_outcome(outcome: IdentifyOutcome) -> None:
    for merge in outcome.merged:
        log.info(
            "identity.merged",
            from_customer_id=merge.from_customer_id,
            into_customer_id=outcome.customer_id,
            matched_by=merge.matched_by,
        )


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> list[str]:
    """Register `servicer`; Track and BatchTrack use ingest's own forgiving deserializers."""
    return [
        wire.register(
            server,
            SERVICE,
            servicer,
            {"Track": track_request, "BatchTrack": batch_track_request},
        )
    ]
