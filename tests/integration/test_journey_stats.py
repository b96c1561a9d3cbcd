"""Journey analytics on the real servers: JOURNEY touchpoints, made as the worker makes them, go
through the stream processor (Tansu, Valkey) into the stats counters exactly once, through
duplicates and crashes; GetJourneyStats and `enishi journey stats` read them back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count

import grpc
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from typer.testing import CliRunner

from enishi import kafka, keys
from enishi.auth import Role
from enishi.cli.main import app
from enishi.config import CommonSettings
from enishi.memory.writer import MemoryWriter
from enishi.v1 import journey_pb2, touchpoint_pb2
from enishi.v1 import journey_registry_pb2 as pb
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import AppliedBatch, BatchHook, Hooks
from services.stream.journey_stats import JourneyStatsHook
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.stream_support import eventually, new_topic, produce, unique
from tests.integration.test_registry import Registry, new_id, running_registry
from workflows import contract
from workflows.activities.journal import Enrollment, JournalEntry, journey_touchpoint

pytestmark = pytest.mark.asyncio(loop_scope="session")
runner = CliRunner()
START = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
TREATMENT = journey_pb2.ENROLLMENT_GROUP_TREATMENT
HOLDOUT = journey_pb2.ENROLLMENT_GROUP_HOLDOUT


def source(journey_id: str, wait: str = "1d") -> str:
    return f"""\
id: {journey_id}
name: Stats {journey_id}
designer: tests
trigger: {{event: order.completed, where: "customer.orders_count == 1"}}
goal: {{event: order.completed, within: 30d}}
exit: [{{event: account.deleted}}]
reentry: {{policy: never}}
holdout: 0.1
steps:
  - id: first_wait
    wait: {{for: {wait}}}
  - id: reply
    wait_for: {{event: message.replied, timeout: 3d}}
  - id: note
    update: {{set: {{asked: true}}}}
  - id: done
    exit: {{}}
"""


class Journal:
    """One enrollment's journal, as JourneyWorkflow notes it (workflows/journey.py `_note`)."""

    def __init__(self, journey_id: str, customer: str, *, holdout: bool = False) -> None:
        customer_id = unique(customer)
        self.enrollment = Enrollment(
            workflow_id=contract.workflow_id(journey_id, customer_id),
            journey_id=journey_id,
            customer_id=customer_id,
            enrollment=1,
            holdout=holdout,
            trigger_event_id=unique("trigger"),
        )
        self.events: list[touchpoint_pb2.Touchpoint] = []
        self.version = 1
        self._tick = count()
        self._visits: dict[str, int] = {}
        self.note("entered", "")

    def note(self, transition: str, step: str, detail: str = "", suffix: str = "") -> Journal:
        key = ":".join(p for p in (transition, step, suffix) if p)
        at = (START + timedelta(seconds=next(self._tick))).isoformat()
        entry = JournalEntry(key, transition, self.version, step, at, detail)
        self.events.append(journey_touchpoint(self.enrollment, entry))
        return self

    def steps(self, *step_ids: str) -> Journal:
        for step in step_ids:
            self._visits[step] = self._visits.get(step, 0) + 1
            self.note("step_entered", step, suffix=str(self._visits[step]))
        return self

    def migrate(self, to_version: int, step: str) -> Journal:
        old, self.version = self.version, to_version
        self.note("migrated", step, detail=f"from version {old}", suffix=f"v{old}")
        return self.steps(step)


def scenario(journey_id: str) -> list[Journal]:
    """Seven enrollments: converted, completed, exited, holdout converted, waiting, migrated
    then converted on v2, cancelled."""
    return [
        Journal(journey_id, "a").steps("first_wait", "reply").note("goal_reached", "reply"),
        Journal(journey_id, "b")
        .steps("first_wait", "reply", "note", "done")
        .note("completed", "done"),
        Journal(journey_id, "c", holdout=True)
        .steps("first_wait")
        .note("exited", "first_wait", "account.deleted"),
        Journal(journey_id, "d", holdout=True)
        .steps("first_wait")
        .note("goal_reached", "first_wait"),
        Journal(journey_id, "e").steps("first_wait"),
        Journal(journey_id, "f")
        .steps("first_wait")
        .migrate(2, "first_wait")
        .note("goal_reached", "first_wait"),
        Journal(journey_id, "g").steps("first_wait").note("cancelled", "first_wait", "paused"),
    ]


EXPECTED = {
    "step|1|first_wait|treatment|entered": 5,  # a b e f g
    "step|1|first_wait|holdout|entered": 2,  # c d
    "step|1|first_wait|treatment|completed": 2,  # a b moved on to reply
    "step|1|first_wait|holdout|exited": 1,  # c
    "step|1|first_wait|holdout|goal": 1,  # d
    "step|1|first_wait|treatment|migrated": 1,  # f left v1 there
    "step|1|first_wait|treatment|cancelled": 1,  # g
    "step|1|reply|treatment|entered": 2,  # a b
    "step|1|reply|treatment|completed": 1,  # b
    "step|1|reply|treatment|goal": 1,  # a
    "step|1|note|treatment|entered": 1,
    "step|1|note|treatment|completed": 1,
    "step|1|done|treatment|entered": 1,
    "step|1|done|treatment|completed": 1,  # b ran to the end there
    "step|2|first_wait|treatment|entered": 1,  # f landed on v2
    "step|2|first_wait|treatment|goal": 1,
    "group|1|treatment|enrolled": 5,
    "group|1|treatment|goal": 2,  # a, and f: it entered with v1, so it converts for v1
    "group|1|treatment|ended": 4,  # e still waits
    "group|1|holdout|enrolled": 2,
    "group|1|holdout|goal": 1,
    "group|1|holdout|ended": 2,
}


def interleaved(journals: list[Journal]) -> list[touchpoint_pb2.Touchpoint]:
    """Every journal's events, customers interleaved, each customer's in order."""
    longest = max(len(j.events) for j in journals)
    return [j.events[i] for i in range(longest) for j in journals if i < len(j.events)]


async def counts(redis: Redis, journey_id: str) -> dict[str, int]:
    raw = await redis.hgetall(keys.journey_stats(journey_id, keys.STATS_COUNTS))
    return {text(k): int(v) for k, v in raw.items()}


async def positions(redis: Redis, journey_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.journey_stats(journey_id, keys.STATS_POSITIONS))
    return {text(k): text(v) for k, v in raw.items()}


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- through the stream processor --------------------------------------------------------------


class Crash(Exception):
    """Stands for the process dying inside the hook: the batch is not committed."""


class CrashOnce:
    def __init__(self) -> None:
        self.crashed = False

    async def on_applied(self, batch: AppliedBatch) -> None:
        if not self.crashed:
            self.crashed = True
            raise Crash


@contextlib.asynccontextmanager
async def processing(
    servers: LocalServers, redis: Redis, topic: str, group: str, hook: BatchHook
) -> AsyncIterator[tuple[AIOKafkaConsumer, asyncio.Task[None]]]:
    """The stream processor in this process, consuming `topic` as consumer group `group`."""
    settings = CommonSettings(kafka_bootstrap=servers.kafka_bootstrap)
    consumer = consumer_for(settings, topic, group, batch_max=500)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=servers.kafka_bootstrap))
    await producer.start()
    await consumer.start()
    processor = StreamProcessor(MemoryWriter(redis), producer, hook=hook)
    task = asyncio.create_task(consume(consumer, processor, batch_max=500, batch_wait_ms=50))
    try:
        yield consumer, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Crash):
            await task
        await consumer.stop()
        await producer.stop()


async def crash_inside(
    servers: LocalServers, redis: Redis, topic: str, group: str, hook: BatchHook
) -> None:
    async with processing(servers, redis, topic, group, hook) as (_, task):
        with pytest.raises(Crash):
            await asyncio.wait_for(task, timeout=60)


async def caught_up(consumer: AIOKafkaConsumer, partitions: int = 2) -> bool:
    assigned = consumer.assignment()
    if len(assigned) < partitions:
        return False
    ends = await consumer.end_offsets(list(assigned))
    for tp in assigned:
        if (await consumer.committed(tp) or 0) < ends[tp]:
            return False
    return True


async def test_each_journey_event_counts_once_through_duplicates_and_crashes_around_the_hook(
    servers: LocalServers, redis: Redis
) -> None:
    journey_id, group = new_id("stats"), unique("group")
    topic = await new_topic(servers.kafka_bootstrap)
    journals = scenario(journey_id)
    events = interleaved(journals)
    # The worker's retried activity publishes some of them twice.
    await produce(servers.kafka_bootstrap, topic, [*events, events[0], events[5], events[-1]])
    stats = JourneyStatsHook(redis)

    # Memory written, then the process dies before the stats hook: nothing counted, nothing
    # committed. The redelivery is all duplicates to the memory; the hook must count them.
    await crash_inside(servers, redis, topic, group, Hooks(CrashOnce(), stats))
    assert await counts(redis, journey_id) == {}
    # Counted, then the process dies before the commit: redelivered once more.
    await crash_inside(servers, redis, topic, group, Hooks(stats, CrashOnce()))
    assert await counts(redis, journey_id) != {}

    async with processing(servers, redis, topic, group, stats) as (consumer, _):
        await eventually(lambda: caught_up(consumer), timeout=60)
    assert await counts(redis, journey_id) == EXPECTED
    # Only the enrollment still running keeps a position.
    waiting = journals[4].enrollment.workflow_id
    assert await positions(redis, journey_id) == {waiting: "1|treatment|1|first_wait"}
    seen = await redis.zcard(keys.journey_stats(journey_id, keys.STATS_SEEN))
    assert seen == len(events)


# --- the hook on its own, on real Valkey ----------------------------------------------------------


async def test_a_batch_of_duplicates_only_is_counted_when_the_hook_never_saw_it(
    redis: Redis,
) -> None:
    journey_id = new_id("stats")
    events = interleaved(scenario(journey_id))
    hook = JourneyStatsHook(redis)
    await hook.on_applied(AppliedBatch(applied=[], duplicates=events))
    await hook.on_applied(AppliedBatch(applied=events, duplicates=events))
    assert await counts(redis, journey_id) == EXPECTED


async def test_a_duplicate_older_than_the_dedupe_window_is_counted_again(redis: Redis) -> None:
    journey_id = new_id("stats")
    journal = Journal(journey_id, "a").steps("first_wait", "reply")
    hook = JourneyStatsHook(redis, dedupe_max=2)  # keeps the 2 newest ids only
    for event in journal.events:
        await hook.on_applied(AppliedBatch(applied=[event], duplicates=[]))
    await hook.on_applied(AppliedBatch(applied=[], duplicates=[journal.events[0]]))
    counted = await counts(redis, journey_id)
    assert counted["group|1|treatment|enrolled"] == 2  # the documented limit, not a silent one
    assert counted["step|1|first_wait|treatment|entered"] == 1


# --- reading them back: GetJourneyStats and the CLI -------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registry(servers: LocalServers) -> AsyncIterator[Registry]:
    async with running_registry(servers) as running:
        yield running


async def counted_journey(registry: Registry) -> str:
    """A registered journey (v1, v2) whose scenario went through the stats hook."""
    journey_id = new_id("stats")
    for wait in ("1d", "2d"):
        await registry.stub.RegisterJourney(
            pb.RegisterJourneyRequest(source=source(journey_id, wait), designer="tests")
        )
    events = interleaved(scenario(journey_id))
    await JourneyStatsHook(registry.redis).on_applied(AppliedBatch(applied=events, duplicates=[]))
    return journey_id


async def test_get_journey_stats_answers_per_version_step_and_group(registry: Registry) -> None:
    journey_id = await counted_journey(registry)
    reply = await registry.stub.GetJourneyStats(pb.GetJourneyStatsRequest(journey_id=journey_id))
    stats = reply.stats
    assert stats.journey_id == journey_id
    rows = [
        (s.version, s.step_id, s.entered, s.completed, s.exited, s.goal_reached, s.waiting)
        for s in stats.steps
    ]
    assert rows == [
        (1, "first_wait", 7, 2, 3, 1, 1),
        (1, "reply", 2, 1, 0, 1, 0),
        (1, "note", 1, 1, 0, 0, 0),
        (1, "done", 1, 1, 0, 0, 0),
        (2, "first_wait", 1, 0, 0, 1, 0),
        (2, "reply", 0, 0, 0, 0, 0),
        (2, "note", 0, 0, 0, 0, 0),
        (2, "done", 0, 0, 0, 0, 0),
    ]
    groups = [(g.version, g.group, g.enrolled, g.goal_reached, g.goal_rate) for g in stats.groups]
    assert groups == [
        (1, TREATMENT, 5, 2, 0.4),
        (1, HOLDOUT, 2, 1, 0.5),
        (2, TREATMENT, 0, 0, 0.0),
        (2, HOLDOUT, 0, 0, 0.0),
        (0, TREATMENT, 5, 2, 0.4),
        (0, HOLDOUT, 2, 1, 0.5),
    ]
    assert stats.lift == pytest.approx(-0.1)
    assert stats.HasField("computed_at")

    one = await registry.stub.GetJourneyStats(
        pb.GetJourneyStatsRequest(journey_id=journey_id, version=2)
    )
    assert {s.version for s in one.stats.steps} == {2}
    assert [(g.version, g.enrolled) for g in one.stats.groups] == [(2, 0), (2, 0)]
    assert one.stats.lift == 0.0


async def test_get_journey_stats_of_a_journey_nobody_entered_is_all_zeros(
    registry: Registry,
) -> None:
    journey_id = new_id("stats")
    await registry.stub.RegisterJourney(
        pb.RegisterJourneyRequest(source=source(journey_id), designer="tests")
    )
    reply = await registry.stub.GetJourneyStats(pb.GetJourneyStatsRequest(journey_id=journey_id))
    assert [s.step_id for s in reply.stats.steps] == ["first_wait", "reply", "note", "done"]
    assert all(s.entered == 0 and s.waiting == 0 for s in reply.stats.steps)
    assert all(g.enrolled == 0 and g.goal_rate == 0 for g in reply.stats.groups)


@pytest.mark.parametrize(
    ("journey_id", "version", "code", "field"),
    [
        ("", 0, grpc.StatusCode.INVALID_ARGUMENT, "journey_id"),
        ("Not An Id", 0, grpc.StatusCode.INVALID_ARGUMENT, "journey_id"),
        ("stats-nobody-registered-this", 0, grpc.StatusCode.NOT_FOUND, "journey_id"),
        (None, -1, grpc.StatusCode.INVALID_ARGUMENT, "version"),
        (None, 9, grpc.StatusCode.NOT_FOUND, "version"),
    ],
)
async def test_get_journey_stats_names_the_bad_field(
    registry: Registry, journey_id: str | None, version: int, code: grpc.StatusCode, field: str
) -> None:
    if journey_id is None:
        journey_id = new_id("stats")
        await registry.stub.RegisterJourney(
            pb.RegisterJourneyRequest(source=source(journey_id), designer="tests")
        )
    request = pb.GetJourneyStatsRequest(journey_id=journey_id, version=version)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.stub.GetJourneyStats(request)
    assert caught.value.code() == code
    assert field in (caught.value.details() or "")


async def enishi(registry: Registry, *args: str) -> tuple[int, str, list[str]]:
    """Exit code, output, and the output's lines with table borders and padding removed."""
    env = {
        "ENISHI_REGISTRY_TARGET": registry.target,
        "ENISHI_API_KEY": auth_support.ROLE_KEYS[Role.READER].secret,
        "COLUMNS": "200",
    }
    result = await asyncio.to_thread(lambda: runner.invoke(app, ["journey", *args], env=env))
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    return result.exit_code, result.output, lines


async def test_the_cli_prints_the_funnel_the_groups_and_why_there_is_no_lift_yet(
    registry: Registry,
) -> None:
    journey_id = await counted_journey(registry)
    code, output, lines = await enishi(registry, "stats", journey_id)
    assert code == 0, output
    assert "v1 first_wait 7 2 3 1 1" in lines
    assert "v1 reply 2 1 0 1 0" in lines
    assert "v2 first_wait 1 0 0 1 0" in lines
    assert "all treatment 5 2 40.0%" in lines
    assert "all holdout 2 1 50.0%" in lines
    assert "v2 holdout 0 0 —" in lines
    # 7 enrollments cannot carry a lift: the CLI says so and shows the counts, not "-10 pts".
    assert "lift: not enough data (treatment 2/5 converted, holdout 1/2)" in output
    assert not any("pts" in line for line in lines if line.startswith("lift:"))
    assert "1 enrollment(s) still running" in output

    code, output, lines = await enishi(registry, "stats", journey_id, "--version", "2")
    assert code == 0, output
    assert not any(line.startswith("v1 ") for line in lines)
    assert "v2 first_wait 1 0 0 1 0" in lines
    assert "no holdout enrollments" in output


async def test_the_cli_reports_an_unknown_journey(registry: Registry) -> None:
    code, output, _ = await enishi(registry, "stats", "stats-nobody-registered-this")
    assert code == 1
    assert "NOT_FOUND" in output and "journey_id" in output
