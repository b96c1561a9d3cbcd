"""`IngestService` handlers: validate, stamp ids and times, resolve the customer, publish."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from ulid import ULID

from enishi.errors import FailedPrecondition, FieldError, InvalidArgument, field_path
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc
from enishi.v1 import touchpoint_pb2
from services.ingest.publisher import TouchpointPublisher
from services.ingest.validation import touchpoint_errors


def _customer_id(event: touchpoint_pb2.Touchpoint) -> str:
    """The Kafka key: the customer id, or for visitors not yet identified their anonymous id."""
    ref = event.customer
    kind = ref.WhichOneof("identity")
    if kind == "customer_id":
        return ref.customer_id
    if kind == "anonymous_id":
        return f"anon:{ref.anonymous_id}"
    raise FailedPrecondition(
        f"customer.{kind}: events by {kind} need identity resolution, which is not "
        "enabled in this build; send customer_id or anonymous_id"
    )


class IngestServicer(pb_grpc.IngestServiceServicer):
    """Accepts touchpoints; a batch accepts its valid items even when others are invalid."""

    def __init__(self, publisher: TouchpointPublisher, *, batch_max: int) -> None:
        self._publisher = publisher
        self._batch_max = batch_max

    def _accept(self, event: touchpoint_pb2.Touchpoint, path: str) -> list[FieldError]:
        errors = touchpoint_errors(event, path)
        if errors:
            return errors
        if not event.event_id:
            event.event_id = str(ULID())
        event.received_at.FromDatetime(datetime.now(UTC))
        if not event.HasField("occurred_at"):
            event.occurred_at.CopyFrom(event.received_at)
        if event.kind == touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED:
            event.kind = touchpoint_pb2.TOUCHPOINT_KIND_EVENT
        event.customer_id = _customer_id(event)
        return []

    async def Track(
        self,
        request: pb.TrackRequest,
        context: grpc.aio.ServicerContext[pb.TrackRequest, pb.TrackResponse],
    ) -> pb.TrackResponse:
        event = touchpoint_pb2.Touchpoint()
        event.CopyFrom(request.event)
        errors = self._accept(event, "event")
        if errors:
            raise InvalidArgument(errors)
        await self._publisher.publish([event])
        return pb.TrackResponse(event_id=event.event_id, customer_id=event.customer_id)

    async def BatchTrack(
        self,
        request: pb.BatchTrackRequest,
        context: grpc.aio.ServicerContext[pb.BatchTrackRequest, pb.BatchTrackResponse],
    ) -> pb.BatchTrackResponse:
        if len(request.events) > self._batch_max:
            raise InvalidArgument.for_field(
                "events", f"at most {self._batch_max} events per call, got {len(request.events)}"
            )
        results: list[pb.TrackResult] = []
        accepted: list[touchpoint_pb2.Touchpoint] = []
        for index, original in enumerate(request.events):
            event = touchpoint_pb2.Touchpoint()
            event.CopyFrom(original)
            try:
                errors = self._accept(event, field_path("events", index))
            except FailedPrecondition as exc:
                errors = [FieldError(field_path("events", index, "customer"), exc.message)]
            if errors:
                results.append(
                    pb.TrackResult(
                        index=index,
                        accepted=False,
                        errors=[pb.FieldError(field=e.field, message=e.message) for e in errors],
                    )
                )
                continue
            accepted.append(event)
            results.append(
                pb.TrackResult(
                    index=index,
                    accepted=True,
                    event_id=event.event_id,
                    customer_id=event.customer_id,
                )
            )
        await self._publisher.publish(accepted)
        return pb.BatchTrackResponse(
            results=results,
            accepted_count=len(accepted),
            rejected_count=len(results) - len(accepted),
        )

    async def Identify(
        self,
        request: pb.IdentifyRequest,
        context: grpc.aio.ServicerContext[pb.IdentifyRequest, pb.IdentifyResponse],
    ) -> pb.IdentifyResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Identify arrives with identity resolution (issue #3)"
        )
