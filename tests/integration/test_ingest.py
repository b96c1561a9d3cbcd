"""IngestService over real gRPC, writing to the real broker; read back with aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enishi import grpc_client, kafka, topics
from enishi.config import IngestSettings
from enishi.devstack.ports import free_port
from enishi.grpc_server import GrpcServer
from enishi.identity import IdentityResolver
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as pb
from enishi.v1 import ingest_service_pb2_grpc as pb_grpc
from services.ingest.servicer import IngestServicer, add_to_server
from services.ingest.validation import Limits
from tests import auth_support
from tests.conftest import LocalServers

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.asynccontextmanager
async def serving_ingest(
    servers: LocalServers, **limits: int
) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """An in-process ingest server on the real broker and Redis: its address, and Redis."""
    settings = IngestSettings(
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
    servicer = IngestServicer(
        TouchpointPublisher(producer),
        IdentityResolver(redis),
        dataclasses.replace(Limits.from_settings(settings), **limits),
    )

    def add(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    server = GrpcServer(settings, "ingest", add, on_shutdown=producer.stop)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}", redis
    finally:
        await server.stop(0)
        await redis.aclose()


@contextlib.asynccontextmanager
async def running_ingest(
    servers: LocalServers, **limits: int
) -> AsyncIterator[tuple[grpc.aio.Channel, aioredis.Redis]]:
    """An in-process ingest server: an admin-keyed channel to it, and Redis."""
    async with (
        serving_ingest(servers, **limits) as (address, redis),
        grpc_client.aio_channel(address, auth_support.ADMIN) as channel,
    ):
        yield channel, redis


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingest(servers: LocalServers) -> AsyncIterator[grpc.aio.Channel]:
    async with running_ingest(servers, batch_max=10) as (channel, _):
        yield channel


async def _consume_for(bootstrap: str, customer_id: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found += [r for r in records if r.key == customer_id.encode()]
    finally:
        await consumer.stop()
    return found


def _event(customer_id: str, name: str = "order.completed") -> touchpoint_pb2.Touchpoint:
    event = touchpoint_pb2.Touchpoint(
        customer=identity_pb2.CustomerRef(customer_id=customer_id), name=name, source="test"
    )
    event.props.update({"total": 4200, "items": ["tea"]})
    return event


async def test_track_writes_the_touchpoint_to_kafka_keyed_by_customer(
    ingest: grpc.aio.Channel, servers: LocalServers
) -> None:
    customer = f"c-{uuid4()}"
    reply = await pb_grpc.IngestServiceStub(ingest).Track(pb.TrackRequest(event=_event(customer)))
    assert reply.customer_id == customer
    assert len(reply.event_id) == 26  # a ULID

    [record] = await _consume_for(servers.kafka_bootstrap, customer, 1)
    stored = touchpoint_pb2.Touchpoint.FromString(record.value)
    assert stored.event_id == reply.event_id
    assert stored.name == "order.completed"
    assert stored.customer_id == customer
    assert stored.props["total"] == 4200
    assert stored.HasField("received_at") and stored.HasField("occurred_at")


async def test_batch_accepts_valid_items_and_names_the_bad_field(
    ingest: grpc.aio.Channel, servers: LocalServers
) -> None:
    customer = f"c-{uuid4()}"
    events = [_event(customer), _event(customer, name="Order Completed"), _event(customer)]
    reply = await pb_grpc.IngestServiceStub(ingest).BatchTrack(pb.BatchTrackRequest(events=events))
    assert (reply.accepted_count, reply.rejected_count) == (2, 1)
    assert [r.accepted for r in reply.results] == [True, False, True]
    assert reply.results[1].errors[0].field == "events[1].name"
    records = await _consume_for(servers.kafka_bootstrap, customer, 2)
    assert {touchpoint_pb2.Touchpoint.FromString(r.value).event_id for r in records} == {
        reply.results[0].event_id,
        reply.results[2].event_id,
    }


async def test_invalid_track_is_invalid_argument_naming_the_field(
    ingest: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.IngestServiceStub(ingest).Track(
            pb.TrackRequest(event=touchpoint_pb2.Touchpoint(name="order.completed"))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event.customer" in (caught.value.details() or "")


async def test_health_answers_serving(ingest: grpc.aio.Channel) -> None:
    stub: Any = health_pb2_grpc.HealthStub(ingest)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="enishi.v1.IngestService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A client that sends bytes as they are, to reach the server with what no stub can build."""
    return channel.unary_unary(f"/enishi.v1.IngestService/{method}")


async def test_invalid_utf8_in_a_string_field_is_invalid_argument_naming_it(
    ingest: grpc.aio.Channel,
) -> None:
    good = pb.TrackRequest(event=_event(f"c-{uuid4()}")).SerializeToString()
    bad = good.replace(b"order.completed", b"order.\xffompleted")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw(ingest, "Track")(bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("event.name: not valid UTF-8")


async def test_an_undecodable_batch_item_is_rejected_alone(
    ingest: grpc.aio.Channel, servers: LocalServers
) -> None:
    customer = f"c-{uuid4()}"
    event = _event(customer)
    event.props.update({"cart": {"note": "placeholder"}})
    request = pb.BatchTrackRequest(events=[_event(customer), event])
    bad = request.SerializeToString().replace(b"placeholder", b"place\xc3\x28lder")
    reply = pb.BatchTrackResponse.FromString(await _raw(ingest, "BatchTrack")(bad))
    assert [r.accepted for r in reply.results] == [True, False]
    assert reply.results[1].errors[0].field == "events[1].props.cart.note"
    [record] = await _consume_for(servers.kafka_bootstrap, customer, 1)
    assert touchpoint_pb2.Touchpoint.FromString(record.value).event_id == reply.results[0].event_id


async def test_an_empty_or_oversized_batch_fails_whole_naming_events(
    ingest: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.IngestServiceStub(ingest)
    for count in (0, 11):
        events = [_event(f"c-{uuid4()}") for _ in range(count)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchTrack(pb.BatchTrackRequest(events=events))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("events:")


async def test_an_anonymous_visitor_gets_a_minted_customer_id(ingest: grpc.aio.Channel) -> None:
    stub = pb_grpc.IngestServiceStub(ingest)
    ref = identity_pb2.CustomerRef(anonymous_id=f"device-{uuid4()}")
    event = touchpoint_pb2.Touchpoint(customer=ref, name="page.viewed")
    first = await stub.Track(pb.TrackRequest(event=event))
    second = await stub.Track(pb.TrackRequest(event=event))
    assert first.customer_id == second.customer_id
    assert first.customer_id.startswith("c_") and len(first.customer_id) == 28


async def test_track_answers_unavailable_when_redis_is_down(servers: LocalServers) -> None:
    down = dataclasses.replace(servers, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running_ingest(down) as (channel, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.IngestServiceStub(channel).Track(
                pb.TrackRequest(event=_event("c-1")), timeout=30
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
