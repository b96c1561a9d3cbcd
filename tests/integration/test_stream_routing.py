"""Triggers and routing on the real servers: Tansu → stream processor → Valkey and Temporal.

Journeys are put in the trigger index by writing its documented Redis keys; a recording
`JourneyWorkflow` (tests/integration/recording_journey.py) stands in for the real one.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from enishi import keys
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.journeys.model import in_holdout
from enishi.v1 import touchpoint_pb2
from services.stream.hooks import Hooks
from services.stream.triggers import JourneyTriggers
from tests.conftest import LocalServers
from tests.integration.recording_journey import (
    FINISH,
    QUERY_EVENTS,
    QUERY_INPUT,
    RecordingJourney,
)
from tests.integration.stream_support import (
    RecordingHook,
    event,
    eventually,
    new_topic,
    produce,
    running_processor,
    unique,
)
from workflows import contract


@pytest_asyncio.fixture
async def temporal(servers: LocalServers) -> Client:
    return await Client.connect(servers.temporal_address)


def _name(action: str) -> str:
    """An event name only this test triggers on (the index is shared by the whole session)."""
    return f"t{uuid.uuid4().hex[:10]}.{action}"


async def _register(redis: Redis, event_name: str, **entry: Any) -> str:
    """Put a live journey in the trigger index as the registry would; its id."""
    journey_id = entry.pop("journey_id", unique("journey"))
    value = {
        "journey_id": journey_id,
        "version": 1,
        "where": None,
        "reentry": "never",
        "cooldown_seconds": 0,
        "holdout": 0.0,
        "enrollment_cap": None,
        **entry,
    }
    raw = await redis.hget(keys.TRIGGER_INDEX, event_name)
    entries = [*json.loads(raw), value] if raw else [value]
    await redis.hset(keys.TRIGGER_INDEX, event_name, json.dumps(entries))
    await redis.incr(keys.TRIGGER_INDEX_REVISION)
    return str(journey_id)


def _temporal_calls() -> float:
    return sum(
        REGISTRY.get_sample_value("enishi_temporal_calls_total", {"kind": kind}) or 0.0
        for kind in ("signal_with_start", "signal")
    )


@dataclass
class _Stack:
    servers: LocalServers
    redis: Redis
    temporal: Client
    topic: str
    seen: RecordingHook

    async def deliver(self, touchpoints: Sequence[touchpoint_pb2.Touchpoint]) -> None:
        """Produce `touchpoints` and a marker; return once the processor handled the marker."""
        marker = event(unique("marker-customer"), "test.marker")
        await produce(self.servers.kafka_bootstrap, self.topic, [*touchpoints, marker])

        async def handled() -> bool:
            return any(
                tp.event_id == marker.event_id
                for batch in self.seen.batches
                for tp in [*batch.applied, *batch.duplicates]
            )

        await eventually(handled)

    def handle(self, journey_id: str, customer_id: str) -> WorkflowHandle[Any, Any]:
        return self.temporal.get_workflow_handle(contract.workflow_id(journey_id, customer_id))

    async def events_of(self, journey_id: str, customer_id: str) -> list[str]:
        result = await self.handle(journey_id, customer_id).query(QUERY_EVENTS)
        return list(result)

    async def input_of(self, journey_id: str, customer_id: str) -> contract.JourneyInput:
        result = await self.handle(journey_id, customer_id).query(
            QUERY_INPUT, result_type=contract.JourneyInput
        )
        assert isinstance(result, contract.JourneyInput)
        return result

    async def record(self, journey_id: str, customer_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(keys.customer(customer_id, keys.ENROLLMENTS), journey_id)
        assert raw is not None, (journey_id, customer_id)
        value: dict[str, Any] = json.loads(raw)
        return value

    async def finish(self, journey_id: str, customer_id: str) -> None:
        """End the enrollment as the real workflow's end_enrollment activity would."""
        handle = self.handle(journey_id, customer_id)
        await handle.signal(FINISH)
        await handle.result()
        record = await self.record(journey_id, customer_id)
        record["active"] = False
        await self.redis.hset(
            keys.customer(customer_id, keys.ENROLLMENTS), journey_id, json.dumps(record)
        )
        await self.redis.hdel(keys.customer(customer_id, keys.AWAITS), journey_id)


@pytest_asyncio.fixture
async def stack(servers: LocalServers, redis: Redis, temporal: Client) -> AsyncIterator[_Stack]:
    topic = await new_topic(servers.kafka_bootstrap)
    queue = str(uuid.uuid4())
    seen = RecordingHook()
    triggers = JourneyTriggers(redis, TemporalJourneyCalls(temporal, task_queue=queue))
    worker = Worker(temporal, task_queue=queue, workflows=[RecordingJourney])
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(worker)
        await stack.enter_async_context(
            running_processor(servers.kafka_bootstrap, redis, topic, hook=Hooks(triggers, seen))
        )
        yield _Stack(servers, redis, temporal, topic, seen)


async def test_a_trigger_starts_one_enrollment_and_the_same_event_twice_enrolls_once(
    stack: _Stack,
) -> None:
    name = _name("completed")
    journey = await _register(stack.redis, name, where="event.props.amount > 1000")
    customer = unique("cust")
    order = event(customer, name, props={"amount": 1200})

    await stack.deliver([order, order, event(customer, name, props={"amount": 10})])

    assert await stack.events_of(journey, customer) == [order.event_id]
    started = await stack.input_of(journey, customer)
    assert (started.journey_id, started.version, started.customer_id) == (journey, 1, customer)
    assert started.enrollment == 1
    record = await stack.record(journey, customer)
    assert (record["count"], record["active"], record["event_id"]) == (1, True, order.event_id)

    # Redelivered later (as after a crash before the commit): still one enrollment.
    await stack.deliver([order])
    assert await stack.events_of(journey, customer) == [order.event_id]
    assert (await stack.record(journey, customer))["count"] == 1


async def test_an_event_no_journey_cares_about_makes_no_temporal_call(stack: _Stack) -> None:
    await _register(stack.redis, _name("completed"))
    before = _temporal_calls()

    await stack.deliver([event(unique("cust"), "page.viewed") for _ in range(30)])

    assert _temporal_calls() == before


async def test_an_awaited_event_is_routed_to_the_running_enrollment(stack: _Stack) -> None:
    trigger, reply = _name("completed"), _name("replied")
    journey = await _register(stack.redis, trigger)
    customer = unique("cust")
    order = event(customer, trigger)
    await stack.deliver([order])
    # What the worker writes when the enrollment enters `wait_for: <reply>`.
    await stack.redis.hset(
        keys.customer(customer, keys.AWAITS), journey, json.dumps([reply, "x.exit"])
    )
    before = REGISTRY.get_sample_value("enishi_temporal_calls_total", {"kind": "signal"}) or 0

    answer = event(customer, reply, props={"sentiment": "positive"})
    await stack.deliver([answer, event(customer, _name("ignored"))])

    assert await stack.events_of(journey, customer) == [order.event_id, answer.event_id]
    after = REGISTRY.get_sample_value("enishi_temporal_calls_total", {"kind": "signal"}) or 0
    assert after - before == 1


async def test_a_goal_reached_before_the_first_wait_is_routed(stack: _Stack) -> None:
    trigger, goal = _name("completed"), _name("repurchased")
    journey = await _register(stack.redis, trigger, awaits=[goal])
    customer = unique("cust")
    order = event(customer, trigger)
    # The goal right behind the trigger, before the worker has written any `awaits` itself.
    await stack.deliver([order])
    awaits = keys.customer(customer, keys.AWAITS)
    assert json.loads(await stack.redis.hget(awaits, journey) or b"[]") == [goal]
    reached = event(customer, goal)
    await stack.deliver([reached])
    assert await stack.events_of(journey, customer) == [order.event_id, reached.event_id]


async def test_a_signal_to_a_finished_enrollment_drops_its_stale_await(stack: _Stack) -> None:
    trigger, reply = _name("completed"), _name("replied")
    journey = await _register(stack.redis, trigger)
    customer = unique("cust")
    await stack.deliver([event(customer, trigger)])
    await stack.handle(journey, customer).signal(FINISH)
    await stack.handle(journey, customer).result()
    awaits = keys.customer(customer, keys.AWAITS)
    await stack.redis.hset(awaits, journey, json.dumps([reply]))  # the worker failed to clean

    await stack.deliver([event(customer, reply)])

    assert await stack.redis.hget(awaits, journey) is None


async def test_reentry_never_blocks_a_second_enrollment_after_the_first_finished(
    stack: _Stack,
) -> None:
    name = _name("completed")
    never = await _register(stack.redis, name, reentry="never")
    always = await _register(stack.redis, name, reentry="always")
    customer = unique("cust")
    first, second = event(customer, name), event(customer, name)
    await stack.deliver([first])
    await stack.finish(never, customer)
    await stack.finish(always, customer)

    await stack.deliver([second])

    assert (await stack.record(never, customer))["count"] == 1
    assert (await stack.record(always, customer))["count"] == 2
    again = await stack.input_of(always, customer)
    assert again.enrollment == 2
    assert await stack.events_of(always, customer) == [second.event_id]
    description = await stack.handle(never, customer).describe()
    assert description.status is not None and description.status.name == "COMPLETED"


async def test_holdout_is_set_by_the_journeys_hashing_rule(stack: _Stack) -> None:
    name = _name("completed")
    journey = await _register(stack.redis, name, holdout=0.5)
    customers = [unique("cust") for _ in range(8)]

    await stack.deliver([event(c, name) for c in customers])

    held = {c: (await stack.input_of(journey, c)).holdout for c in customers}
    assert held == {c: in_holdout(journey, 0.5, c) for c in customers}
    recorded = {c: (await stack.record(journey, c))["holdout"] for c in customers}
    assert recorded == held


async def test_the_enrollment_cap_stops_enrolling_at_the_cap(stack: _Stack) -> None:
    name = _name("completed")
    journey = await _register(stack.redis, name, enrollment_cap=2)
    customers = [unique("cust") for _ in range(5)]

    await stack.deliver([event(c, name) for c in customers])

    enrolled = [
        c
        for c in customers
        if await stack.redis.hget(keys.customer(c, keys.ENROLLMENTS), journey) is not None
    ]
    assert len(enrolled) == 2
    assert await stack.redis.get(keys.journey_enrollments_total(journey)) == b"2"
