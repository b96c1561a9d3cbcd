"""CustomerService over real gRPC: events in through ingest, through the stream processor
into Redis, and the customer's memory out again; preference changes round-trip the same way.

Ingest, the stream processor (consuming the real `touchpoints` topic with its own group) and
the customer service all run in this process against the suite's Tansu and Valkey.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from google.protobuf import struct_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from enishi import grpc_client, kafka, keys, topics
from enishi.config import CustomersSettings
from enishi.grpc_server import GrpcServer
from enishi.temporal import connect
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import (
    channel_pb2,
    consent_pb2,
    customer_pb2,
    identity_pb2,
    touchpoint_pb2,
)
from enishi.v1 import customer_service_pb2 as pb
from enishi.v1 import customer_service_pb2_grpc as pb_grpc
from enishi.v1 import ingest_service_pb2 as ingest_pb
from enishi.v1 import ingest_service_pb2_grpc as ingest_grpc
from services.customers.journeys import ActiveJourneys, TemporalStepQuery
from services.customers.servicer import SERVICE_NAME, CustomerServicer, add_to_server
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.stream_support import eventually, running_processor
from tests.integration.test_ingest import running_ingest
from workflows import contract as workflows_contract

pytestmark = pytest.mark.asyncio(loop_scope="session")

Kind = touchpoint_pb2.TouchpointKind


@contextlib.asynccontextmanager
async def running_customers(
    servers: LocalServers,
) -> AsyncIterator[tuple[grpc.aio.Channel, str]]:
    """An in-process CustomerService on the real broker and Valkey: a channel, its address."""
    settings = CustomersSettings(
        kafka_bootstrap=servers.kafka_bootstrap,
        redis_url=servers.redis_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        api_keys=auth_support.SERVER_KEYS,
    )
    producer = kafka.producer(settings)
    redis = aioredis.Redis.from_url(servers.redis_url)
    await producer.start()
    servicer = CustomerServicer(redis, TouchpointPublisher(producer))

    def add(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    async def shutdown() -> None:
        try:
            await producer.stop()
        finally:
            await redis.aclose()

    server = GrpcServer(settings, "customers", add, on_shutdown=shutdown)
    await server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        async with grpc_client.aio_channel(address, auth_support.ADMIN) as channel:
            yield channel, address
    finally:
        await server.stop(0)


@dataclass(frozen=True)
class Stack:
    ingest: ingest_grpc.IngestServiceAsyncStub
    customers: pb_grpc.CustomerServiceAsyncStub
    channel: grpc.aio.Channel
    redis: aioredis.Redis


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(servers: LocalServers) -> AsyncIterator[Stack]:
    async with (
        running_ingest(servers) as (ingest_channel, redis),
        running_processor(servers.kafka_bootstrap, redis, topics.TOUCHPOINTS),
        running_customers(servers) as (channel, _),
    ):
        yield Stack(
            ingest_grpc.IngestServiceStub(ingest_channel),
            pb_grpc.CustomerServiceStub(channel),
            channel,
            redis,
        )


def _track(ref: identity_pb2.CustomerRef, name: str, **props: Any) -> ingest_pb.TrackRequest:
    event = touchpoint_pb2.Touchpoint(customer=ref, name=name, source="test", channel="web")
    if props:
        event.props.update(props)
    return ingest_pb.TrackRequest(event=event)


async def _customer(stack: Stack, ref: identity_pb2.CustomerRef) -> customer_pb2.Customer:
    reply = await stack.customers.GetCustomer(pb.GetCustomerRequest(customer=ref), timeout=10)
    return reply.customer


async def _until(
    stack: Stack, ref: identity_pb2.CustomerRef, check: Callable[[customer_pb2.Customer], object]
) -> None:
    async def holds() -> bool:
        try:
            view = await _customer(stack, ref)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return bool(check(view))

    await eventually(holds)


async def _error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_events_in_through_ingest_come_out_as_the_customers_memory(stack: Stack) -> None:
    customer_id = f"cust-{uuid4().hex[:10]}"
    email = f"{uuid4().hex[:10]}@example.com"
    identified = await stack.ingest.Identify(
        ingest_pb.IdentifyRequest(
            identity=identity_pb2.Identity(customer_id=customer_id, email=email),
            source="test",
            traits=_struct({"first_name": "Hanako", "plan": "gold"}),
        )
    )
    assert identified.customer_id == customer_id
    by_id = identity_pb2.CustomerRef(customer_id=customer_id)
    await stack.ingest.Track(_track(by_id, "order.completed", amount=3200, currency="JPY"))
    await stack.ingest.Track(_track(by_id, "order.completed", amount=1800, currency="JPY"))
    await stack.ingest.Track(_track(by_id, "page.viewed"))

    by_email = identity_pb2.CustomerRef(email=email.upper())
    await _until(stack, by_email, lambda v: v.counters.events_count == 3 and v.traits.fields)
    view = await _customer(stack, by_email)
    assert view.customer_id == customer_id
    assert view.identity.email == email
    assert view.traits["first_name"] == "Hanako"
    assert view.counters.orders_count == 2
    assert view.counters.total_spent == 5000
    assert view.counters.currency == "JPY"
    assert view.phase == customer_pb2.LIFECYCLE_PHASE_ACTIVE
    assert view.engagement_density > 0
    names = [entry.name for entry in view.timeline]
    assert sorted(names) == sorted(
        ["customer.identified", "order.completed", "order.completed", "page.viewed"]
    )
    assert view.HasField("created_at")

    found = await stack.customers.FindCustomer(pb.FindCustomerRequest(customer=by_email))
    assert found.customer_id == customer_id
    assert found.identity.email == email
    assert found.matched_by == identity_pb2.IDENTITY_KIND_EMAIL
    assert not found.merged


async def test_an_anonymous_visitor_who_identifies_is_found_by_every_id(stack: Stack) -> None:
    anonymous = f"anon-{uuid4().hex[:10]}"
    visitor = await stack.ingest.Track(
        _track(identity_pb2.CustomerRef(anonymous_id=anonymous), "product.viewed")
    )
    minted = visitor.customer_id
    customer_id = f"cust-{uuid4().hex[:10]}"
    await stack.ingest.Identify(
        ingest_pb.IdentifyRequest(
            identity=identity_pb2.Identity(customer_id=customer_id, anonymous_id=anonymous)
        )
    )
    by_anonymous = identity_pb2.CustomerRef(anonymous_id=anonymous)
    await _until(stack, by_anonymous, lambda v: minted in v.merged_ids)

    view = await _customer(stack, by_anonymous)
    assert view.customer_id == customer_id
    assert "product.viewed" in [entry.name for entry in view.timeline]
    found = await stack.customers.FindCustomer(
        pb.FindCustomerRequest(customer=identity_pb2.CustomerRef(customer_id=minted))
    )
    assert found.customer_id == customer_id
    assert found.merged
    assert found.identity.anonymous_id == anonymous


async def test_a_customer_the_stream_has_not_reached_yet_shows_its_indexed_identities(
    stack: Stack,
) -> None:
    email = f"{uuid4().hex[:10]}@example.com"
    customer_id = f"cust-{uuid4().hex[:10]}"
    # Only the identity index knows them: ingest wrote it, nothing reached memory yet.
    await stack.redis.set(keys.identity("email", email), customer_id)
    await stack.redis.sadd(keys.identities(customer_id), f"email:{email}")
    view = await _customer(stack, identity_pb2.CustomerRef(email=email))
    assert view.customer_id == customer_id
    assert view.identity.email == email
    assert not view.timeline


async def test_preference_changes_are_written_as_touchpoints_and_appear_in_memory(
    stack: Stack,
) -> None:
    customer_id = f"cust-{uuid4().hex[:10]}"
    ref = identity_pb2.CustomerRef(customer_id=customer_id)
    await stack.ingest.Track(_track(ref, "page.viewed"))
    await _until(stack, ref, lambda v: v.counters.events_count == 1)

    request = pb.UpdatePreferencesRequest(
        customer=ref,
        consents=[
            consent_pb2.ChannelConsent(
                channel=channel_pb2.CHANNEL_EMAIL,
                status=consent_pb2.CONSENT_STATUS_OPTED_IN,
                source="signup_form",
            ),
            consent_pb2.ChannelConsent(
                channel=channel_pb2.CHANNEL_LINE, status=consent_pb2.CONSENT_STATUS_OPTED_OUT
            ),
        ],
        preferences=consent_pb2.Preferences(
            preferred_channel=channel_pb2.CHANNEL_LINE,
            fallback_channels=[channel_pb2.CHANNEL_EMAIL],
            time_zone="Asia/Tokyo",
            quiet_hours=consent_pb2.QuietHours(start="21:00", end="08:00"),
        ),
        update_mask=FieldMask(paths=["preferred_channel", "time_zone", "quiet_hours"]),
        source="preference_center",
        request_id=f"req-{uuid4().hex}",
    )
    reply = await stack.customers.UpdatePreferences(request)
    assert reply.customer_id == customer_id
    assert len(reply.event_ids) == 2
    again = await stack.customers.UpdatePreferences(request)  # a retry writes nothing new
    assert list(again.event_ids) == list(reply.event_ids)

    await _until(stack, ref, lambda v: len(v.consents) == 2 and v.preferences.time_zone)
    view = await _customer(stack, ref)
    consents = {c.channel: c for c in view.consents}
    email = consents[channel_pb2.CHANNEL_EMAIL]
    assert email.status == consent_pb2.CONSENT_STATUS_OPTED_IN
    assert email.source == "signup_form"
    assert email.HasField("updated_at")
    assert consents[channel_pb2.CHANNEL_LINE].source == "preference_center"
    assert view.preferences.preferred_channel == channel_pb2.CHANNEL_LINE
    assert view.preferences.time_zone == "Asia/Tokyo"
    assert view.preferences.quiet_hours.start == "21:00"
    assert not view.preferences.fallback_channels  # not in the update mask

    timeline = await stack.customers.ListTimeline(
        pb.ListTimelineRequest(
            customer=ref, kinds=[Kind.TOUCHPOINT_KIND_CONSENT, Kind.TOUCHPOINT_KIND_PREFERENCES]
        )
    )
    by_kind = {entry.kind: entry for entry in timeline.entries}
    assert len(timeline.entries) == 2  # the retry was deduplicated
    consent_entry = by_kind[Kind.TOUCHPOINT_KIND_CONSENT]
    assert consent_entry.name == "consent.changed"
    assert consent_entry.source == "preference_center"
    assert consent_entry.summary == "consent: email opted_in, line opted_out"
    assert consent_entry.event_id in reply.event_ids


async def test_the_timeline_pages_newest_first_and_filters_by_name(stack: Stack) -> None:
    customer_id = f"cust-{uuid4().hex[:10]}"
    ref = identity_pb2.CustomerRef(customer_id=customer_id)
    for index in range(7):
        await stack.ingest.Track(
            _track(ref, "order.completed" if index % 3 == 0 else "page.viewed", seq=index)
        )
    await _until(stack, ref, lambda v: v.counters.events_count == 7)

    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await stack.customers.ListTimeline(
            pb.ListTimelineRequest(customer=ref, page_size=3, page_token=token)
        )
        pages += 1
        seen += [_seq(entry) for entry in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [6, 5, 4, 3, 2, 1, 0]

    orders = await stack.customers.ListTimeline(
        pb.ListTimelineRequest(customer=ref, names=["order.completed"])
    )
    assert [_seq(e) for e in orders.entries] == [6, 3, 0]


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        (identity_pb2.CustomerRef(email="nobody-ever@example.com"), "customer.email"),
        (identity_pb2.CustomerRef(customer_id="no-such-customer"), "customer.customer_id"),
        (identity_pb2.CustomerRef(phone="+819099999999"), "customer.phone"),
        (identity_pb2.CustomerRef(anonymous_id="no-such-visitor"), "customer.anonymous_id"),
    ],
)
async def test_an_unknown_customer_is_not_found_naming_the_field(
    stack: Stack, ref: identity_pb2.CustomerRef, field: str
) -> None:
    calls: list[Awaitable[object]] = [
        stack.customers.GetCustomer(pb.GetCustomerRequest(customer=ref)),
        stack.customers.FindCustomer(pb.FindCustomerRequest(customer=ref)),
        stack.customers.ListTimeline(pb.ListTimelineRequest(customer=ref)),
        stack.customers.UpdatePreferences(
            pb.UpdatePreferencesRequest(
                customer=ref,
                consents=[
                    consent_pb2.ChannelConsent(
                        channel=channel_pb2.CHANNEL_SMS,
                        status=consent_pb2.CONSENT_STATUS_OPTED_IN,
                    )
                ],
            )
        ),
    ]
    for call in calls:
        error = await _error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"{field}: no customer"


async def test_bad_requests_are_invalid_arguments_naming_the_field(stack: Stack) -> None:
    known = identity_pb2.CustomerRef(customer_id=f"cust-{uuid4().hex[:10]}")
    await stack.ingest.Track(_track(known, "page.viewed"))
    await _until(stack, known, lambda v: v.counters.events_count == 1)
    cases: list[tuple[Awaitable[object], str]] = [
        (stack.customers.GetCustomer(pb.GetCustomerRequest()), "customer: required"),
        (
            stack.customers.GetCustomer(
                pb.GetCustomerRequest(customer=identity_pb2.CustomerRef(email="not-an-email"))
            ),
            "customer.email: not a valid email",
        ),
        (
            stack.customers.GetCustomer(pb.GetCustomerRequest(customer=known, timeline_limit=-1)),
            "timeline_limit: must not be negative",
        ),
        (
            stack.customers.ListTimeline(
                pb.ListTimelineRequest(customer=known, page_token="garbage!")
            ),
            "page_token: not a token this service issued",
        ),
        (
            stack.customers.ListTimeline(
                pb.ListTimelineRequest(customer=known, kinds=[Kind.ValueType(42)])
            ),
            "kinds[0]: must be a TouchpointKind",
        ),
        (
            stack.customers.UpdatePreferences(
                pb.UpdatePreferencesRequest(
                    customer=known,
                    preferences=consent_pb2.Preferences(time_zone="Mars/Olympus"),
                    update_mask=FieldMask(paths=["time_zone"]),
                )
            ),
            "preferences.time_zone: must be an IANA time zone",
        ),
        (
            stack.customers.UpdatePreferences(pb.UpdatePreferencesRequest(customer=known)),
            "consents: required",
        ),
    ]
    for call, message in cases:
        error = await _error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert (error.details() or "").startswith(message), error.details()


async def test_undecodable_bytes_are_an_invalid_argument_naming_the_field(stack: Stack) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = stack.channel.unary_unary(
        f"/{SERVICE_NAME}/GetCustomer"
    )
    # CustomerRef.email (field 3) holding bytes that are not UTF-8.
    ref = b"\x1a\x02\xff\xfe"
    error = await _error(call(b"\x0a" + bytes([len(ref)]) + ref))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "customer.email: not valid UTF-8"


def _seq(entry: customer_pb2.TimelineEntry) -> int:
    return int(entry.props.fields["seq"].number_value)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


class _Steps:
    """A step query that knows one workflow and fails for every other."""

    def __init__(self, known: str) -> None:
        self.known = known

    async def current_step(self, workflow_id: str) -> str:
        if workflow_id == self.known:
            return "wait_use"
        raise RuntimeError("no such workflow")


async def test_active_journeys_carry_their_step_and_a_failed_query_only_leaves_it_empty(
    servers: LocalServers, stack: Stack
) -> None:
    customer_id = f"cust-{uuid4().hex[:10]}"
    key = keys.customer(customer_id, keys.ENROLLMENTS)
    for journey in ("welcome", "f2"):
        await stack.redis.hset(key, journey, json.dumps({"count": 1, "active": True}))
    await stack.redis.hset(key, "old", json.dumps({"count": 3, "active": False}))
    known = workflows_contract.workflow_id("welcome", customer_id)

    journeys = await ActiveJourneys(stack.redis, _Steps(known)).of(customer_id)
    assert {j.journey_id: j.current_step_id for j in journeys} == {"f2": "", "welcome": "wait_use"}

    # The real Temporal dev server: no such workflow, so no step, and no failure either.
    settings = CustomersSettings(temporal_address=servers.temporal_address)
    temporal = TemporalStepQuery(await connect(settings, lazy=True), 2.0)
    journeys = await ActiveJourneys(stack.redis, temporal).of(customer_id)
    assert [(j.journey_id, j.current_step_id) for j in journeys] == [("f2", ""), ("welcome", "")]
