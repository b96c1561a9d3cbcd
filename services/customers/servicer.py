"""`CustomerService` handlers: resolve the ref, read memory, or publish preference changes."""

from __future__ import annotations

import time
from typing import Any, Final, TypeVar

import grpc
import redis.asyncio as aioredis
import structlog
from google.protobuf.message import Message

from enishi import identity, wire
from enishi.errors import FieldError, InvalidArgument
from enishi.memory import lifecycle, reader
from enishi.memory.reader import InvalidPageToken, MemoryReader
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import customer_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as pb
from services.customers import preferences
from services.customers.journeys import ActiveJourneys
from services.customers.refs import CustomerLookup, check_ref

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["CustomerService"].full_name
MAX_TIMELINE_LIMIT: Final = reader.MAX_PAGE_SIZE
MAX_FILTERS: Final = 100
MAX_NAME_CHARS: Final = 128
MAX_PAGE_TOKEN_CHARS: Final = 512
_KINDS: Final = frozenset(touchpoint_pb2.TouchpointKind.values()) - {
    touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED
}

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _index_identity(customer_id: str, refs: list[identity.Ref]) -> identity_pb2.Identity:
    """An Identity from the identity index (one value per kind: the first, sorted)."""
    result = identity_pb2.Identity(customer_id=customer_id)
    for ref in refs:
        if ref.kind == identity.PUSH_TOKEN:
            result.push_tokens.add(token=ref.value)
        elif ref.kind in (
            identity.EMAIL,
            identity.PHONE,
            identity.LINE_USER_ID,
            identity.ANONYMOUS_ID,
        ) and not getattr(result, ref.kind):
            setattr(result, ref.kind, ref.value)
    return result


def _complete(remembered: identity_pb2.Identity, indexed: identity_pb2.Identity) -> None:
    """Fill what memory does not know yet (the stream lags ingest) from the index."""
    for kind in ("email", "phone", "line_user_id", "anonymous_id"):
        if not getattr(remembered, kind) and getattr(indexed, kind):
            setattr(remembered, kind, getattr(indexed, kind))
    known = {token.token for token in remembered.push_tokens}
    remembered.push_tokens.extend(t for t in indexed.push_tokens if t.token not in known)


def check_timeline_request(request: pb.ListTimelineRequest) -> None:
    """`InvalidArgument` naming every bad field of a ListTimeline call (not the ref)."""
    errors: list[FieldError] = []
    if request.page_size < 0:
        errors.append(FieldError("page_size", f"must not be negative, got {request.page_size}"))
    if len(request.page_token) > MAX_PAGE_TOKEN_CHARS:
        errors.append(FieldError("page_token", "not a token this service issued"))
    if len(request.names) > MAX_FILTERS:
        errors.append(FieldError("names", f"at most {MAX_FILTERS} names"))
    else:
        for index, name in enumerate(request.names):
            if not name or len(name) > MAX_NAME_CHARS or identity.has_bad_chars(name):
                errors.append(
                    FieldError(
                        f"names[{index}]",
                        f"must be 1-{MAX_NAME_CHARS} characters, no control characters",
                    )
                )
    if len(request.kinds) > MAX_FILTERS:
        errors.append(FieldError("kinds", f"at most {MAX_FILTERS} kinds"))
    else:
        for index, kind in enumerate(request.kinds):
            if kind not in _KINDS:
                errors.append(
                    FieldError(
                        f"kinds[{index}]",
                        f"must be a TouchpointKind other than UNSPECIFIED, got {kind}",
                    )
                )
    bounds = (("before", request.before), ("since", request.since))
    for name, bound in bounds:
        if not 0 <= bound.nanos <= 999_999_999:
            errors.append(FieldError(f"{name}.nanos", "must be between 0 and 999999999"))
    if errors:
        raise InvalidArgument(errors)


class CustomerServicer:
    """The 360 view and preference changes; lookups never create customers."""

    def __init__(
        self,
        redis: aioredis.Redis,
        publisher: TouchpointPublisher,
        *,
        rules: lifecycle.LifecycleRules | None = None,
        journeys: ActiveJourneys | None = None,
    ) -> None:
        self._lookup = CustomerLookup(redis)
        self._reader = MemoryReader(redis, rules)
        self._publisher = publisher
        self._journeys = journeys or ActiveJourneys(redis)

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Context
    ) -> pb.GetCustomerResponse:
        ref = check_ref(request.customer)
        if request.timeline_limit < 0:
            raise InvalidArgument.for_field(
                "timeline_limit", f"must not be negative, got {request.timeline_limit}"
            )
        limit = min(request.timeline_limit or reader.DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)
        found = await self._lookup.find(ref)
        cid = found.customer_id
        view = await self._reader.customer(cid, timeline_limit=limit)
        indexed = _index_identity(cid, await self._lookup.resolver.identities_of(cid))
        if view is None:
            # Known to the identity index, but the stream has not applied anything yet.
            view = customer_pb2.Customer(customer_id=cid)
            view.identity.CopyFrom(indexed)
        else:
            _complete(view.identity, indexed)
        view.active_journeys.extend(await self._journeys.of(cid))
        return pb.GetCustomerResponse(customer=view)

    async def ListTimeline(
        self, request: pb.ListTimelineRequest, context: Context
    ) -> pb.ListTimelineResponse:
        ref = check_ref(request.customer)
        check_timeline_request(request)
        found = await self._lookup.find(ref)
        try:
            page = await self._reader.timeline(
                found.customer_id,
                page_size=request.page_size,
                page_token=request.page_token,
                names=frozenset(request.names),
                kinds=frozenset(request.kinds),
                before=request.before if request.HasField("before") else None,
                since=request.since if request.HasField("since") else None,
            )
        except InvalidPageToken:
            raise InvalidArgument.for_field(
                "page_token", "not a token this service issued"
            ) from None
        return pb.ListTimelineResponse(
            customer_id=found.customer_id,
            entries=page.entries,
            next_page_token=page.next_page_token,
        )

    async def FindCustomer(
        self, request: pb.FindCustomerRequest, context: Context
    ) -> pb.FindCustomerResponse:
        ref = check_ref(request.customer)
        found = await self._lookup.find(ref)
        cid = found.customer_id
        view = await self._reader.customer(cid, timeline_limit=0)
        indexed = _index_identity(cid, await self._lookup.resolver.identities_of(cid))
        result = identity_pb2.Identity()
        if view is not None:
            result.CopyFrom(view.identity)
            _complete(result, indexed)
        else:
            result.CopyFrom(indexed)
        return pb.FindCustomerResponse(
            customer_id=cid,
            identity=result,
            matched_by=identity.KIND_ENUM[ref.kind],
            merged=found.merged,
        )

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: Context
    ) -> pb.UpdatePreferencesResponse:
        now_ms = _now_ms()
        errors: list[FieldError] = []
        ref = None
        try:
            ref = check_ref(request.customer)
        except InvalidArgument as exc:
            errors.extend(exc.errors)
        try:
            change = preferences.check_update(request, now_ms)
        except InvalidArgument as exc:
            errors.extend(exc.errors)
        if errors or ref is None:
            raise InvalidArgument(errors)
        found = await self._lookup.find(ref)
        events = preferences.touchpoints(change, found.customer_id, now_ms)
        await self._publisher.publish(events)
        log.info(
            "customers.preferences_published",
            customer_id=found.customer_id,
            event_ids=[e.event_id for e in events],
        )
        return pb.UpdatePreferencesResponse(
            customer_id=found.customer_id, event_ids=[e.event_id for e in events]
        )


def add_to_server(servicer: CustomerServicer, server: grpc.aio.Server) -> list[str]:
    """Register `servicer`; undecodable requests answer INVALID_ARGUMENT naming the field."""
    return [wire.register(server, pb.DESCRIPTOR.services_by_name["CustomerService"], servicer)]
