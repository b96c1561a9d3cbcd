"""The registry keeps each scheduled journey's Temporal Schedule in step with its status.

Real Valkey and the real Temporal dev server; the registry's handlers are called in process
(the gRPC transport is tested in test_registry.py). A worker runs the real audience run and
activity and a recording `JourneyWorkflow`, so a Schedule's run is seen enrolling customers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleOverlapPolicy,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from enishi import keys
from enishi.v1 import journey_pb2
from enishi.v1 import journey_registry_pb2 as pb
from services.registry.enrollments import Enrollments
from services.registry.schedules import JourneySchedules
from services.registry.servicer import JourneyRegistryServicer
from services.registry.store import JourneyStore
from tests.conftest import LocalServers
from tests.integration.audience_support import remember, unique
from tests.integration.recording_journey import QUERY_EVENTS, RecordingJourney
from workflows import contract
from workflows.activities.audience import AudienceActivities
from workflows.audience import AudienceWorkflow
from workflows.runner import WORKFLOW_RUNNER

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEEP = journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING
SWEEP = timedelta(minutes=20)
NO_CONTEXT = cast(Any, None)  # the handlers use their context only to reject a definition


def _source(journey_id: str, trigger: str) -> str:
    return (
        f"id: {journey_id}\nname: {journey_id}\ndesigner: tests\nreentry: {{policy: always}}\n"
        f"trigger: {trigger}\nsteps: [{{id: w, wait: {{for: 1d}}}}]\n"
    )


@dataclass
class _Registry:
    servicer: JourneyRegistryServicer
    temporal: Client
    redis: Redis
    queue: str

    async def register(self, source: str) -> int:
        response = await self.servicer.RegisterJourney(
            pb.RegisterJourneyRequest(source=source, designer="tests"), NO_CONTEXT
        )
        return response.version.version

    async def activate(self, journey_id: str, version: int) -> None:
        await self.servicer.ActivateJourney(
            pb.ActivateJourneyRequest(journey_id=journey_id, version=version), NO_CONTEXT
        )

    def schedule(self, journey_id: str) -> ScheduleHandle:
        return self.temporal.get_schedule_handle(contract.schedule_id(journey_id))

    async def exists(self, journey_id: str) -> bool:
        try:
            await self.schedule(journey_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True


@pytest_asyncio.fixture(loop_scope="session")
async def registry(servers: LocalServers) -> AsyncIterator[_Registry]:
    redis = Redis.from_url(servers.redis_url)
    temporal = await Client.connect(servers.temporal_address)
    queue = str(uuid.uuid4())
    servicer = JourneyRegistryServicer(
        JourneyStore(redis),
        Enrollments(temporal),
        schedules=JourneySchedules(temporal, task_queue=queue, sweep_every=SWEEP),
    )
    try:
        async with Worker(
            temporal,
            task_queue=queue,
            workflows=[AudienceWorkflow, RecordingJourney],
            workflow_runner=WORKFLOW_RUNNER,
            activities=[AudienceActivities(redis, page_size=200).enroll_page],
        ):
            yield _Registry(servicer, temporal, redis, queue)
    finally:
        await redis.aclose()


async def _enrolled(temporal: Client, journey_id: str, customer_id: str) -> bool:
    handle = temporal.get_workflow_handle(contract.workflow_id(journey_id, customer_id))
    try:
        await handle.query(QUERY_EVENTS)
    except RPCError:
        return False
    return True


async def _until_enrolled(temporal: Client, journey_id: str, customer_id: str) -> None:
    async with asyncio.timeout(20):
        while not await _enrolled(temporal, journey_id, customer_id):
            await asyncio.sleep(0.2)


async def _finished_runs(schedule: ScheduleHandle, count: int) -> None:
    """Wait until the Schedule took `count` actions and none of them still runs."""
    async with asyncio.timeout(20):
        while True:
            info = (await schedule.describe()).info
            if info.num_actions >= count and not info.running_actions:
                return
            await asyncio.sleep(0.2)


async def test_activating_a_scheduled_journey_creates_its_schedule_and_a_run_enrolls(
    registry: _Registry,
) -> None:
    journey_id, tag = unique("monthly"), unique("vip")
    customer = unique("c")
    await remember(registry.redis, customer, tags=[tag])
    audience = f"where: \"'{tag}' in customer.tags\""
    trigger = f'{{schedule: {{cron: "0 9 1 * *", timezone: Europe/Paris}}, {audience}}}'
    await registry.activate(journey_id, await registry.register(_source(journey_id, trigger)))

    described = await registry.schedule(journey_id).describe()
    assert described.schedule.spec.time_zone_name == "Europe/Paris"
    assert not described.schedule.state.paused
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    (first, *_) = described.info.next_action_times  # Temporal keeps cron lines as calendars
    local = first.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.day, local.hour, local.minute) == (1, 9, 0)
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id) == (
        contract.AUDIENCE_WORKFLOW,
        contract.audience_workflow_id(journey_id),
    )

    await registry.schedule(journey_id).trigger()
    await _until_enrolled(registry.temporal, journey_id, customer)
    raw = await registry.redis.hget(keys.customer(customer, keys.ENROLLMENTS), journey_id)
    assert raw is not None and json.loads(raw)["event_id"].startswith(f"schedule:{journey_id}:")


async def test_pausing_pauses_the_schedule_and_a_run_meanwhile_enrolls_nobody(
    registry: _Registry,
) -> None:
    journey_id, tag = unique("weekly"), unique("vip")
    trigger = f'{{schedule: {{cron: "0 9 * * mon"}}, where: "\'{tag}\' in customer.tags"}}'
    await registry.activate(journey_id, await registry.register(_source(journey_id, trigger)))

    await registry.servicer.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP, reason="copy"),
        NO_CONTEXT,
    )
    described = await registry.schedule(journey_id).describe()
    assert described.schedule.state.paused
    assert described.schedule.state.note == "copy"

    # Even a run that starts anyway (here by hand) finds the journey out of the index.
    customer = unique("c")
    await remember(registry.redis, customer, tags=[tag])
    await registry.schedule(journey_id).trigger()
    await _finished_runs(registry.schedule(journey_id), 1)
    assert not await _enrolled(registry.temporal, journey_id, customer)

    await registry.servicer.ResumeJourney(
        pb.ResumeJourneyRequest(journey_id=journey_id), NO_CONTEXT
    )
    assert not (await registry.schedule(journey_id).describe()).schedule.state.paused
    await registry.schedule(journey_id).trigger()
    await _until_enrolled(registry.temporal, journey_id, customer)


async def test_a_new_version_replaces_the_schedule_and_archiving_deletes_it(
    registry: _Registry,
) -> None:
    journey_id = unique("daily")
    v1 = await registry.register(_source(journey_id, '{schedule: {at_local: "09:40"}}'))
    await registry.activate(journey_id, v1)
    schedule = (await registry.schedule(journey_id).describe()).schedule
    (interval,) = schedule.spec.intervals
    assert (interval.every, interval.offset) == (timedelta(minutes=15), timedelta(minutes=10))
    assert schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE

    v2 = await registry.register(_source(journey_id, '{schedule: {cron: "30 8 * * *"}}'))
    await registry.activate(journey_id, v2)
    described = await registry.schedule(journey_id).describe()
    assert not described.schedule.spec.intervals
    (first, *_) = described.info.next_action_times
    local = first.astimezone(ZoneInfo("Asia/Tokyo"))  # the journey's timezone_fallback
    assert (local.hour, local.minute) == (8, 30)

    v3 = await registry.register(_source(journey_id, "{event: order.completed}"))
    await registry.activate(journey_id, v3)
    assert not await registry.exists(journey_id)  # an event trigger needs no schedule

    await registry.activate(journey_id, v2)
    assert await registry.exists(journey_id)
    await registry.servicer.ArchiveJourney(
        pb.ArchiveJourneyRequest(journey_id=journey_id, running_enrollments=KEEP), NO_CONTEXT
    )
    assert not await registry.exists(journey_id)


async def test_a_condition_journey_is_swept_at_the_configured_interval_and_paused_with_it(
    registry: _Registry,
) -> None:
    journey_id, tag = unique("lapsing"), unique("quiet")
    customer = unique("c")
    await remember(
        registry.redis, customer, tags=[tag], seen_at=datetime.now(UTC) - timedelta(days=70)
    )
    condition = f"customer.phase == 'lapsing' && '{tag}' in customer.tags"
    version = await registry.register(_source(journey_id, f'{{condition: "{condition}"}}'))
    await registry.activate(journey_id, version)

    schedule = (await registry.schedule(journey_id).describe()).schedule
    (interval,) = schedule.spec.intervals
    assert interval.every == SWEEP
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    await registry.schedule(journey_id).trigger()
    await _until_enrolled(registry.temporal, journey_id, customer)

    await registry.servicer.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP), NO_CONTEXT
    )
    assert (await registry.schedule(journey_id).describe()).schedule.state.paused


async def test_a_restarted_registry_brings_every_schedule_in_step_with_its_settings(
    registry: _Registry,
) -> None:
    swept, paused = unique("swept"), unique("paused")
    for journey_id in (swept, paused):
        condition = f"customer.phase == 'lapsing' && '{unique('t')}' in customer.tags"
        version = await registry.register(_source(journey_id, f'{{condition: "{condition}"}}'))
        await registry.activate(journey_id, version)
    await registry.servicer.PauseJourney(
        pb.PauseJourneyRequest(journey_id=paused, running_enrollments=KEEP), NO_CONTEXT
    )
    await registry.schedule(paused).unpause(note="someone, by hand")

    every = timedelta(minutes=5)
    restarted = JourneyRegistryServicer(
        JourneyStore(registry.redis),
        Enrollments(registry.temporal),
        schedules=JourneySchedules(registry.temporal, task_queue=registry.queue, sweep_every=every),
    )
    assert await restarted.sync_schedules() >= 2

    (interval,) = (await registry.schedule(swept).describe()).schedule.spec.intervals
    assert interval.every == every
    assert (await registry.schedule(paused).describe()).schedule.state.paused


async def test_an_event_triggered_journey_never_touches_schedules(registry: _Registry) -> None:
    journey_id = unique("events")
    version = await registry.register(_source(journey_id, "{event: order.completed}"))
    await registry.activate(journey_id, version)
    await registry.servicer.PauseJourney(
        pb.PauseJourneyRequest(journey_id=journey_id, running_enrollments=KEEP), NO_CONTEXT
    )
    assert not await registry.exists(journey_id)
