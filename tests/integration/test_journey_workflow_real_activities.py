"""The journey worker's real activities on the real local servers (Temporal dev server, Redis,
Kafka): definitions from Redis, awaits and enrollment bookkeeping, the journal on Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from temporalio.client import Client

from enishi import kafka, keys, topics
from enishi.config import WorkerSettings
from enishi.v1 import journey_pb2, touchpoint_pb2
from services.worker.app import activities, build_worker
from tests.conftest import LocalServers
from tests.integration.journey_support import enroll, event, journey_source, send
from tests.integration.stream_support import eventually
from workflows import contract

pytestmark = pytest.mark.timeout(180)

JOURNEY_ID = "real-journey"
SOURCE = journey_source(
    [
        send("hello"),
        {"id": "flag", "update": {"set": {"journey_seen": True}}},
        {"id": "replied", "wait_for": {"event": "message.replied", "timeout": "1h"}},
        {"id": "done", "exit": {"reason": "replied"}},
    ],
    journey_id=JOURNEY_ID,
    holdout=0.5,
    goal={"event": "order.completed"},
    exit=[{"event": "account.deleted"}],
)


async def test_a_holdout_enrollment_keeps_redis_and_the_timeline_right(
    servers: LocalServers, redis: Redis
) -> None:
    settings = WorkerSettings(kafka_bootstrap=servers.kafka_bootstrap, redis_url=servers.redis_url)
    await kafka.ensure_topics(settings, [topics.TOUCHPOINTS], partitions=2)
    definition = journey_pb2.JourneyDefinition(
        journey_id=JOURNEY_ID, version=1, source=SOURCE, designer="alice@shop.example"
    )
    await redis.hset(keys.journey_versions(JOURNEY_ID), "1", definition.SerializeToString())
    customer = f"c-{uuid.uuid4().hex[:12]}"
    enrollments = keys.customer(customer, keys.ENROLLMENTS)
    await redis.hset(enrollments, JOURNEY_ID, json.dumps({"count": 1, "active": True}))
    awaits = keys.customer(customer, keys.AWAITS)

    producer = kafka.producer(settings)
    await producer.start()
    client = await Client.connect(servers.temporal_address)
    task_queue = str(uuid.uuid4())
    try:
        async with build_worker(
            client, activities(redis, producer, settings), settings, task_queue=task_queue
        ):
            enrolled = await enroll(
                client, task_queue, journey_id=JOURNEY_ID, customer_id=customer, holdout=True
            )
            await enrolled.at_step("replied")

            async def awaiting_the_reply() -> bool:
                raw = await redis.hget(awaits, JOURNEY_ID)
                return raw is not None and "message.replied" in json.loads(raw)

            await eventually(awaiting_the_reply)
            assert json.loads(await redis.hget(awaits, JOURNEY_ID) or b"[]") == [
                "account.deleted",
                "message.replied",
                "order.completed",
            ]
            await enrolled.signal(event("message.replied", customer))
            outcome = await enrolled.result()
            described = await enrolled.handle.describe()
    finally:
        await producer.stop()

    assert outcome == contract.JourneyOutcome("completed", "replied", "done")
    assert await redis.hget(awaits, JOURNEY_ID) is None
    record = json.loads(await redis.hget(enrollments, JOURNEY_ID) or b"{}")
    assert record["active"] is False and record["ended"] == "completed"
    assert isinstance(record["last_at"], int)
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    assert attributes["EnishiJourneyId"] == JOURNEY_ID
    assert attributes["EnishiStep"] == "done"

    seen = await _touchpoints_of(servers.kafka_bootstrap, customer, expected=8)
    # One partition per customer keeps their order; the journal is flushed in batches (at
    # waits and at the end), so compare what was published, not its interleaving.
    assert Counter(t.name for t in seen) == {
        "journey.entered": 1,
        "journey.step_entered": 4,
        "message.skipped": 1,
        "customer.identified": 1,
        "journey.completed": 1,
    }
    assert seen[-1].name == "journey.completed"
    assert len({t.event_id for t in seen}) == len(seen)
    skipped = next(t for t in seen if t.name == "message.skipped")
    assert skipped.skipped.reason.designer == "alice@shop.example"
    assert skipped.skipped.dispatch_id == contract.dispatch_id(
        contract.workflow_id(JOURNEY_ID, customer), 1, "hello", 1
    )
    identified = next(t for t in seen if t.name == "customer.identified")
    assert identified.identify.traits["journey_seen"] is True
    assert all(t.customer_id == customer for t in seen)


async def _touchpoints_of(
    bootstrap: str, customer: str, *, expected: int
) -> list[touchpoint_pb2.Touchpoint]:
    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[touchpoint_pb2.Touchpoint] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    touchpoint = touchpoint_pb2.Touchpoint.FromString(record.value)
                    if touchpoint.customer_id == customer:
                        found.append(touchpoint)
    finally:
        await consumer.stop()
    return found
