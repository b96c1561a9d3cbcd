"""The stream processor's merge step on real Valkey and Temporal: records, awaits, signals.

The happy path (a visitor's waiting enrollment handed to the known customer, end to end) is
tests/e2e/test_journey_e2e.py; here, what happens when there is no run to hand over, when
a merge is redelivered after the hand-over, and to ended enrollments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from temporalio.client import Client

from enishi import keys
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.memory.writer import MemoryWriter
from enishi.v1 import touchpoint_pb2
from services.stream.merges import EnrollmentMerges
from tests.conftest import LocalServers
from tests.integration.stream_support import unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def redis(servers: LocalServers) -> AsyncIterator[Redis]:
    client = Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def merges(servers: LocalServers, redis: Redis) -> EnrollmentMerges:
    temporal = await Client.connect(servers.temporal_address)
    calls = TemporalJourneyCalls(temporal, task_queue=unique("queue"))
    return EnrollmentMerges(redis, calls, MemoryWriter(redis).resolve)


def _merge(visitor: str, known: str) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(
        event_id=unique("merge"),
        customer_id=known,
        name="identity.merged",
        kind=touchpoint_pb2.TOUCHPOINT_KIND_MERGE,
    )
    tp.merge.from_customer_id = visitor
    tp.merge.into_customer_id = known
    return tp


async def _records(redis: Redis, customer_id: str, **records: dict[str, Any]) -> None:
    await redis.hset(
        keys.customer(customer_id, keys.ENROLLMENTS),
        mapping={j: json.dumps(r) for j, r in records.items()},
    )


async def _record(redis: Redis, customer_id: str, journey_id: str) -> dict[str, Any]:
    raw = await redis.hget(keys.customer(customer_id, keys.ENROLLMENTS), journey_id)
    return dict(json.loads(raw)) if raw else {}


async def test_a_visitor_enrollment_with_no_run_left_is_closed_on_the_known_customer(
    redis: Redis, merges: EnrollmentMerges
) -> None:
    visitor, known = unique("c_anon"), unique("known")
    running = {"count": 1, "last_at": 5, "active": True, "version": 1, "event_id": "ev1"}
    await _records(redis, visitor, f2=running)
    await redis.hset(keys.customer(visitor, keys.AWAITS), "f2", '["order.completed"]')

    await merges.follow(_merge(visitor, known))  # no workflow runs: NOT_FOUND

    record = await _record(redis, known, "f2")
    assert (record["active"], record["ended"], record["handed_from"]) == (
        False,
        "not_running",
        visitor,
    )
    assert record["count"] == 1 and record["merged"] == [visitor]
    assert await redis.hget(keys.customer(known, keys.AWAITS), "f2") is None


async def test_a_merge_redelivered_after_the_hand_over_leaves_the_known_run_alone(
    redis: Redis, merges: EnrollmentMerges
) -> None:
    visitor, known = unique("c_anon"), unique("known")
    merge = _merge(visitor, known)
    handed = {"count": 1, "last_at": 5, "active": False, "version": 1, "ended": "merged"}
    ours = {
        "count": 1,
        "active": True,
        "event_id": merge.event_id,
        "merged": [visitor],
        "handed_from": visitor,
    }
    await _records(redis, visitor, f2=handed)
    await _records(redis, known, f2=ours)

    await merges.follow(merge)

    assert await _record(redis, known, "f2") == ours


async def test_the_visitors_ended_enrollments_count_for_the_known_customer_once(
    redis: Redis, merges: EnrollmentMerges
) -> None:
    visitor, known = unique("c_anon"), unique("known")
    ended = {"count": 1, "last_at": 9, "active": False, "version": 1, "ended": "completed"}
    await _records(redis, visitor, welcome=ended)
    await _records(redis, known, welcome={**ended, "last_at": 4})
    merge = _merge(visitor, known)

    await merges.follow(merge)
    await merges.follow(merge)  # redelivered

    record = await _record(redis, known, "welcome")
    assert (record["count"], record["last_at"], record["merged"]) == (2, 9, [visitor])
