"""Identity resolution and Identify merges over real gRPC, the real broker and real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from enishi.identity import Claim, IdentityResolver, Ref, is_minted
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc
from services.ingest.servicer import merge_event_id
from tests.conftest import LocalServers
from tests.integration.test_ingest import _consume_for, running_ingest

pytestmark = pytest.mark.asyncio(loop_scope="session")

Kind = touchpoint_pb2.TouchpointKind


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingest(servers: LocalServers) -> AsyncIterator[tuple[grpc.aio.Channel, aioredis.Redis]]:
    async with running_ingest(servers) as running:
        yield running


@pytest.fixture
def stub(ingest: tuple[grpc.aio.Channel, aioredis.Redis]) -> pb_grpc.IngestServiceAsyncStub:
    return pb_grpc.IngestServiceStub(ingest[0])


def _track(ref: identity_pb2.CustomerRef, name: str = "page.viewed") -> pb.TrackRequest:
    return pb.TrackRequest(event=touchpoint_pb2.Touchpoint(customer=ref, name=name))


async def _touchpoints(
    servers: LocalServers, key: str, count: int
) -> list[touchpoint_pb2.Touchpoint]:
    records = await _consume_for(servers.kafka_bootstrap, key, count)
    return [touchpoint_pb2.Touchpoint.FromString(r.value) for r in records]


async def test_tracking_by_email_twice_files_both_events_under_one_customer(
    stub: pb_grpc.IngestServiceAsyncStub,
) -> None:
    user = uuid4().hex[:12]
    first = await stub.Track(_track(identity_pb2.CustomerRef(email=f"{user}@Example.COM")))
    second = await stub.Track(_track(identity_pb2.CustomerRef(email=f" {user}@example.com")))
    assert first.customer_id == second.customer_id
    assert is_minted(first.customer_id)


async def test_a_batch_resolves_repeated_identities_to_one_customer(
    stub: pb_grpc.IngestServiceAsyncStub,
) -> None:
    phone = f"+8190{uuid4().int % 10**8:08d}"
    events = [
        touchpoint_pb2.Touchpoint(customer=identity_pb2.CustomerRef(phone=p), name="app.opened")
        for p in (phone, phone[:4] + "-" + phone[4:], phone)
    ]
    reply = await stub.BatchTrack(pb.BatchTrackRequest(events=events))
    assert reply.accepted_count == 3
    assert len({r.customer_id for r in reply.results}) == 1


async def test_an_anonymous_visitor_who_identifies_merges_into_the_known_customer(
    stub: pb_grpc.IngestServiceAsyncStub, servers: LocalServers
) -> None:
    anonymous, known = f"anon-{uuid4()}", f"cust-{uuid4()}"
    visit = await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=anonymous)))
    visitor = visit.customer_id
    assert is_minted(visitor)

    reply = await stub.Identify(
        pb.IdentifyRequest(
            identity=identity_pb2.Identity(customer_id=known, anonymous_id=anonymous),
            source="shop-web",
        )
    )
    assert reply.customer_id == known
    assert list(reply.merged_customer_ids) == [visitor]
    assert not reply.created

    merge, identified = await _touchpoints(servers, known, 2)
    assert merge.kind == Kind.TOUCHPOINT_KIND_MERGE and merge.name == "identity.merged"
    assert (merge.merge.from_customer_id, merge.merge.into_customer_id) == (visitor, known)
    assert merge.merge.matched_by == identity_pb2.IDENTITY_KIND_ANONYMOUS_ID
    assert merge.event_id == merge_event_id(visitor, known)
    assert identified.kind == Kind.TOUCHPOINT_KIND_IDENTIFY
    assert identified.event_id == reply.event_id
    assert identified.identify.identity.anonymous_id == anonymous

    later = await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=anonymous)))
    by_old_id = await stub.Track(_track(identity_pb2.CustomerRef(customer_id=visitor)))
    assert later.customer_id == by_old_id.customer_id == known


async def test_the_same_identify_twice_merges_once(
    stub: pb_grpc.IngestServiceAsyncStub, servers: LocalServers
) -> None:
    anonymous, known = f"anon-{uuid4()}", f"cust-{uuid4()}"
    await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=anonymous)))
    request = pb.IdentifyRequest(
        identity=identity_pb2.Identity(customer_id=known, anonymous_id=anonymous)
    )
    first = await stub.Identify(request)
    second = await stub.Identify(request)
    assert len(first.merged_customer_ids) == 1
    assert list(second.merged_customer_ids) == []

    # MERGE precedes its IDENTIFY on the customer's partition: 2 IDENTIFYs, 1 MERGE.
    found = await _touchpoints(servers, known, 3)
    assert [t.kind for t in found] == [
        Kind.TOUCHPOINT_KIND_MERGE,
        Kind.TOUCHPOINT_KIND_IDENTIFY,
        Kind.TOUCHPOINT_KIND_IDENTIFY,
    ]


async def test_concurrent_identifies_of_one_visitor_merge_exactly_once(
    stub: pb_grpc.IngestServiceAsyncStub,
) -> None:
    anonymous, known = f"anon-{uuid4()}", f"cust-{uuid4()}"
    visitor = (
        await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=anonymous)))
    ).customer_id
    request = pb.IdentifyRequest(
        identity=identity_pb2.Identity(customer_id=known, anonymous_id=anonymous)
    )
    replies = await asyncio.gather(*(stub.Identify(request) for _ in range(20)))
    merged = [m for r in replies for m in r.merged_customer_ids]
    assert merged == [visitor]


async def test_an_email_on_another_known_customer_is_a_conflict_naming_the_field(
    stub: pb_grpc.IngestServiceAsyncStub,
) -> None:
    email = f"{uuid4().hex[:10]}@example.com"
    await stub.Identify(
        pb.IdentifyRequest(identity=identity_pb2.Identity(customer_id=f"a-{uuid4()}", email=email))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Identify(
            pb.IdentifyRequest(
                identity=identity_pb2.Identity(customer_id=f"b-{uuid4()}", email=email.upper())
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (caught.value.details() or "").startswith("identity.email:")
    assert email not in (caught.value.details() or "")


async def test_identify_without_customer_id_creates_then_a_known_customer_absorbs_it(
    stub: pb_grpc.IngestServiceAsyncStub,
) -> None:
    email, known = f"{uuid4().hex[:10]}@example.com", f"cust-{uuid4()}"
    created = await stub.Identify(pb.IdentifyRequest(identity=identity_pb2.Identity(email=email)))
    assert created.created and is_minted(created.customer_id)
    again = await stub.Identify(pb.IdentifyRequest(identity=identity_pb2.Identity(email=email)))
    assert (again.customer_id, again.created) == (created.customer_id, False)

    absorbed = await stub.Identify(
        pb.IdentifyRequest(identity=identity_pb2.Identity(customer_id=known, email=email))
    )
    assert list(absorbed.merged_customer_ids) == [created.customer_id]
    tracked = await stub.Track(_track(identity_pb2.CustomerRef(email=email)))
    assert tracked.customer_id == known


async def test_a_shared_device_moves_to_the_customer_who_identifies_last(
    stub: pb_grpc.IngestServiceAsyncStub, ingest: tuple[grpc.aio.Channel, aioredis.Redis]
) -> None:
    device, first, second = f"anon-{uuid4()}", f"a-{uuid4()}", f"b-{uuid4()}"
    for owner in (first, second):
        reply = await stub.Identify(
            pb.IdentifyRequest(
                identity=identity_pb2.Identity(customer_id=owner, anonymous_id=device)
            )
        )
        assert reply.customer_id == owner and not reply.merged_customer_ids
    tracked = await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=device)))
    assert tracked.customer_id == second
    resolver = IdentityResolver(ingest[1])
    assert await resolver.identities_of(first) == []
    assert await resolver.identities_of(second) == [Ref("anonymous_id", device)]


async def test_a_merge_whose_touchpoint_was_never_published_goes_out_with_the_next_identify(
    stub: pb_grpc.IngestServiceAsyncStub,
    servers: LocalServers,
    ingest: tuple[grpc.aio.Channel, aioredis.Redis],
) -> None:
    anonymous, known = f"anon-{uuid4()}", f"cust-{uuid4()}"
    visitor = (
        await stub.Track(_track(identity_pb2.CustomerRef(anonymous_id=anonymous)))
    ).customer_id
    # The index changes, then (as if Kafka failed) nothing is published.
    resolver = IdentityResolver(ingest[1])
    outcome = await resolver.identify(
        known, [Claim(Ref("anonymous_id", anonymous), "identity.anonymous_id")]
    )
    assert [m.from_customer_id for m in outcome.unpublished] == [visitor]

    retry = await stub.Identify(
        pb.IdentifyRequest(
            identity=identity_pb2.Identity(customer_id=known, anonymous_id=anonymous)
        )
    )
    assert list(retry.merged_customer_ids) == []  # the index had already merged
    merge, _ = await _touchpoints(servers, known, 2)
    assert merge.merge.from_customer_id == visitor
    assert merge.event_id == merge_event_id(visitor, known)
    assert (await resolver.identify(known, [])).unpublished == ()


async def test_a_lookup_finds_customers_without_registering_strangers(
    stub: pb_grpc.IngestServiceAsyncStub, ingest: tuple[grpc.aio.Channel, aioredis.Redis]
) -> None:
    resolver = IdentityResolver(ingest[1])
    stranger = Ref("email", f"{uuid4().hex[:10]}@example.com")
    assert await resolver.lookup(stranger) is None
    assert await resolver.lookup(stranger) is None
    tracked = await stub.Track(_track(identity_pb2.CustomerRef(email=stranger.value)))
    assert await resolver.lookup(stranger) == tracked.customer_id
