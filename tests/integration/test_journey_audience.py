"""Scheduled runs on the real servers: JourneyAudienceWorkflow scans Valkey and enrolls.

The run and its activity are the worker's own; a recording `JourneyWorkflow`
(recording_journey.py) stands in for the journey, so the test sees who was started with
what. Other tests' customers share the session's Valkey: every audience here is a tag only
this test's customers carry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from enishi import keys
from tests.conftest import LocalServers
from tests.integration.audience_support import journey, publish, remember, unique
from tests.integration.recording_journey import QUERY_EVENTS, QUERY_INPUT, RecordingJourney
from workflows import contract
from workflows.activities.audience import AudienceActivities
from workflows.audience import AudienceWorkflow
from workflows.runner import WORKFLOW_RUNNER

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKYO_TEN = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo, 02:00 in Paris


@pytest_asyncio.fixture(loop_scope="session")
async def redis(servers: LocalServers) -> AsyncIterator[Redis]:
    client = Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def temporal(servers: LocalServers) -> Client:
    return await Client.connect(servers.temporal_address)


@pytest_asyncio.fixture(loop_scope="session")
async def queue(temporal: Client, redis: Redis) -> AsyncIterator[str]:
    """A worker with the real audience run and activity, and the recording journey."""
    task_queue = str(uuid.uuid4())
    async with Worker(
        temporal,
        task_queue=task_queue,
        workflows=[AudienceWorkflow, RecordingJourney],
        workflow_runner=WORKFLOW_RUNNER,
        activities=[AudienceActivities(redis, page_size=50).enroll_page],
    ):
        yield task_queue


async def _run(
    temporal: Client, queue: str, journey_id: str, at: datetime
) -> contract.AudienceTotals:
    return await temporal.execute_workflow(
        AudienceWorkflow.run,
        contract.AudienceRun(journey_id=journey_id, scheduled_at=at.isoformat()),
        id=f"{contract.audience_workflow_id(journey_id)}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def _enrolled(temporal: Client, journey_id: str, customer_id: str) -> list[str] | None:
    """The trigger ids the customer's enrollment received; None when never started."""
    handle = temporal.get_workflow_handle(contract.workflow_id(journey_id, customer_id))
    try:
        return list(await handle.query(QUERY_EVENTS))
    except RPCError:
        return None


async def _record(redis: Redis, journey_id: str, customer_id: str) -> dict[str, Any]:
    raw = await redis.hget(keys.customer(customer_id, keys.ENROLLMENTS), journey_id)
    return dict(json.loads(raw)) if raw else {}


async def test_a_cron_run_enrolls_its_audience_once_and_the_same_run_again_adds_nobody(
    redis: Redis, temporal: Client, queue: str
) -> None:
    tag, journey_id = unique("vip"), unique("monthly")
    audience = [unique("c") for _ in range(3)]
    others = [unique("c") for _ in range(2)]
    for customer in audience:
        await remember(redis, customer, tags=[tag])
    for customer in others:
        await remember(redis, customer, tags=["someone-else"])
    live = journey(
        journey_id, f'{{schedule: {{cron: "0 9 1 * *"}}, where: "\'{tag}\' in customer.tags"}}'
    )
    await publish(redis, live, journey_id)

    totals = await _run(temporal, queue, journey_id, TOKYO_TEN)

    assert totals.enrolled == 3 and totals.due >= 5 and totals.scanned == totals.due
    trigger = f"schedule:{journey_id}:20260302T010000Z"
    for customer in audience:
        assert await _enrolled(temporal, journey_id, customer) == [trigger]
        record = await _record(redis, journey_id, customer)
        assert (record["count"], record["active"], record["event_id"]) == (1, True, trigger)
        started = await temporal.get_workflow_handle(
            contract.workflow_id(journey_id, customer)
        ).query(QUERY_INPUT, result_type=contract.JourneyInput)
        assert (started.customer_id, started.version, started.enrollment) == (customer, 1, 1)
    for customer in others:
        assert await _enrolled(temporal, journey_id, customer) is None

    # The same run again (a retried page, a redelivered action): one enrollment each, still.
    again = await _run(temporal, queue, journey_id, TOKYO_TEN)
    assert again.enrolled == 0
    for customer in audience:
        assert await _enrolled(temporal, journey_id, customer) == [trigger]
        assert (await _record(redis, journey_id, customer))["count"] == 1


async def test_an_at_local_run_enrolls_the_customers_whose_local_time_it_is(
    redis: Redis, temporal: Client, queue: str
) -> None:
    tag, journey_id = unique("morning"), unique("daily")
    tokyo, paris, unzoned = unique("tokyo"), unique("paris"), unique("nozone")
    await remember(redis, tokyo, tags=[tag], time_zone="Asia/Tokyo")
    await remember(redis, paris, tags=[tag], time_zone="Europe/Paris")
    await remember(redis, unzoned, tags=[tag])  # the journey's fallback: Asia/Tokyo
    trigger = (
        f'{{schedule: {{at_local: "10:00", weekdays: [mon]}}, where: "\'{tag}\' in customer.tags"}}'
    )
    await publish(redis, journey(journey_id, trigger), journey_id)

    totals = await _run(temporal, queue, journey_id, TOKYO_TEN)  # a Monday

    assert totals.enrolled == 2
    assert await _enrolled(temporal, journey_id, tokyo) is not None
    assert await _enrolled(temporal, journey_id, unzoned) is not None
    assert await _enrolled(temporal, journey_id, paris) is None
    # 10:00 in Paris that Monday is 09:00 UTC: Paris's turn.
    later = await _run(temporal, queue, journey_id, datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    assert later.enrolled == 1 and await _enrolled(temporal, journey_id, paris) is not None


async def test_a_run_off_every_zones_local_time_reads_no_customer(
    redis: Redis, temporal: Client, queue: str
) -> None:
    journey_id = unique("daily")
    await publish(redis, journey(journey_id, '{schedule: {at_local: "10:00"}}'), journey_id)

    totals = await _run(temporal, queue, journey_id, datetime(2026, 3, 2, 1, 45, tzinfo=UTC))

    assert totals == contract.AudienceTotals()


async def test_a_run_of_a_journey_no_longer_in_the_index_enrolls_nobody(
    redis: Redis, temporal: Client, queue: str
) -> None:
    tag, journey_id = unique("paused"), unique("monthly")
    customer = unique("c")
    await remember(redis, customer, tags=[tag])
    live = journey(
        journey_id, f'{{schedule: {{cron: "0 9 1 * *"}}, where: "\'{tag}\' in customer.tags"}}'
    )
    await publish(redis, live, journey_id)
    await publish(redis, None, journey_id)  # paused: out of the index

    totals = await _run(temporal, queue, journey_id, TOKYO_TEN)

    assert totals == contract.AudienceTotals()
    assert await _enrolled(temporal, journey_id, customer) is None


async def test_a_sweep_enrolls_a_customer_whose_condition_became_true_with_time_alone(
    redis: Redis, temporal: Client, queue: str
) -> None:
    tag, journey_id = unique("quiet"), unique("lapsing")
    lapsing, active = unique("lapsing"), unique("active")
    # Last seen 70 days ago: lapsing now (60 days), though no event since said so.
    await remember(redis, lapsing, tags=[tag], seen_at=datetime.now(UTC) - timedelta(days=70))
    await remember(redis, active, tags=[tag])
    condition = f"customer.phase == 'lapsing' && '{tag}' in customer.tags"
    await publish(redis, journey(journey_id, f'{{condition: "{condition}"}}'), journey_id)
    swept_at = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

    totals = await _run(temporal, queue, journey_id, swept_at)

    assert totals.enrolled == 1
    assert await _enrolled(temporal, journey_id, lapsing) == [
        f"condition:{journey_id}:20260302T010000Z"
    ]
    assert await _enrolled(temporal, journey_id, active) is None
    values = keys.customer(lapsing, keys.CONDITIONS)
    assert await redis.hget(values, journey_id) == b"1"
    assert await redis.hget(keys.customer(active, keys.CONDITIONS), journey_id) is None

    # Still lapsing at the next sweep: no change from false to true, no second enrollment.
    again = await _run(temporal, queue, journey_id, swept_at + timedelta(hours=1))
    assert again.enrolled == 0
    assert (await _record(redis, journey_id, lapsing))["count"] == 1
