"""The journey engine end to end on the real local servers (Tansu, Valkey, Temporal dev server).

Every component runs in this process, as its service would run it: the registry (register and
activate a journey), ingest and the customer service over gRPC, the stream processor with the
real trigger hook (`JourneyTriggers` → Temporal), and the journey worker with its real
activities (`services.worker.app`). A touchpoint goes in through `IngestService.Track`; a
`DispatchEvent` with its why must come out on `dispatch.<channel>`. Docs: docs/workflow.md,
"End to end".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import struct_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from redis.asyncio import Redis
from temporalio.client import Client

from enishi import kafka, keys, topics
from enishi.config import CommonSettings, WorkerSettings
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.memory.writer import MemoryWriter
from enishi.metrics import TEMPORAL_CALLS
from enishi.v1 import (
    channel_pb2,
    consent_pb2,
    dispatch_pb2,
    identity_pb2,
    journey_pb2,
    touchpoint_pb2,
)
from enishi.v1 import customer_service_pb2 as customers_pb
from enishi.v1 import customer_service_pb2_grpc as customers_grpc
from enishi.v1 import ingest_service_pb2 as ingest_pb
from enishi.v1 import ingest_service_pb2_grpc as ingest_grpc
from enishi.v1 import journey_registry_pb2 as registry_pb
from services.stream.app import StreamProcessor, consume
from services.stream.hooks import Hooks
from services.stream.triggers import JourneyTriggers
from services.worker.app import activities, build_worker
from tests.conftest import LocalServers
from tests.integration.stream_support import RecordingHook, eventually, unique
from tests.integration.test_customers import running_customers
from tests.integration.test_ingest import running_ingest
from tests.integration.test_registry import Registry, running_registry
from workflows import contract

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

DESIGNER = "crm-team@shop.example"
# The grace period after which "no second DispatchEvent" is believed: the first one arrives
# in well under a second on the local stack.
QUIET_SECONDS = 2.0


def journey_source(journey_id: str, trigger: str) -> str:
    """An F2-like journey: thank on `preferred`, falling back to LINE, then email.

    `reentry: always`, so only the event id (not the re-entry rule) can stop a duplicate from
    enrolling again. The trigger name is unique per test: the trigger index lives in the
    session's shared Redis, where other tests activate journeys on `order.completed`.
    """
    return f"""\
id: {journey_id}
name: End-to-end thanks
designer: {DESIGNER}
trigger: {{event: {trigger}, where: "event.props.total > 0"}}
reentry: {{policy: always}}
templates:
  thanks:
    line:
      ja: {{text: "{{{{ customer.name }}}}様、ありがとうございます"}}
      en: {{text: "Thanks, {{{{ customer.name }}}}!"}}
    email:
      ja:
        subject: "{{{{ customer.name }}}}様、ご注文ありがとうございます"
        text: "{{{{ trigger.props.product_name }}}} をお届けします。"
      en:
        subject: "Thank you, {{{{ customer.name }}}}"
        text: "Your {{{{ trigger.props.product_name }}}} is on its way."
steps:
  - id: thanks
    send: {{channel: preferred, fallback: [line, email], template: thanks}}
  - id: done
    exit: {{reason: thanked}}
"""


def temporal_calls() -> float:
    """`enishi_temporal_calls_total`, every kind."""
    return sum(
        sample.value
        for metric in TEMPORAL_CALLS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def _at_end(consumer: AIOKafkaConsumer, names: Sequence[str]) -> None:
    """Assign every partition of `names` and move to their end (resolved now, not lazily:
    a lazy reset could skip what the test produces next)."""
    partitions = [
        TopicPartition(name, p)
        for name in names
        for p in sorted(consumer.partitions_for_topic(name) or ())
    ]
    assert partitions, f"no partitions for {names}"
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)  # waits for the offset lookup


class Dispatches:
    """Every DispatchEvent published on `dispatch.*` from now on."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: list[tuple[str, dispatch_pb2.DispatchEvent]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await _at_end(self._consumer, [topics.dispatch(c) for c in topics.CHANNELS])
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for partition, records in batch.items():
                for record in records:
                    event = dispatch_pb2.DispatchEvent.FromString(record.value)
                    self.seen.append((partition.topic, event))

    def of(self, customer_id: str) -> list[tuple[str, dispatch_pb2.DispatchEvent]]:
        return [(t, e) for t, e in self.seen if e.customer_id == customer_id]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@contextlib.asynccontextmanager
async def running_stream(
    servers: LocalServers, redis: Redis, temporal: Client, task_queue: str, seen: RecordingHook
) -> AsyncIterator[None]:
    """The stream processor on the real `touchpoints` topic, from its current end.

    From the end: the session's earlier tests left touchpoints there whose triggers are not
    this test's business. The hook is the production one (`JourneyTriggers` with the Temporal
    calls), plus a recorder telling the test which events were handled.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=unique("e2e-stream"),
        enable_auto_commit=False,
        max_poll_records=500,
    )
    producer = kafka.producer(CommonSettings(kafka_bootstrap=servers.kafka_bootstrap))
    await producer.start()
    await consumer.start()
    await _at_end(consumer, [topics.TOUCHPOINTS])
    writer = MemoryWriter(redis)
    triggers = JourneyTriggers(
        redis, TemporalJourneyCalls(temporal, task_queue=task_queue), resolve=writer.resolve
    )
    processor = StreamProcessor(writer, producer, hook=Hooks(triggers, seen))
    task = asyncio.create_task(consume(consumer, processor, batch_max=500, batch_wait_ms=20))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


@dataclass
class Stack:
    ingest: ingest_grpc.IngestServiceAsyncStub
    customers: customers_grpc.CustomerServiceAsyncStub
    registry: Registry
    redis: Redis
    temporal: Client
    seen: RecordingHook
    dispatches: Dispatches

    async def handled(self, event_ids: Sequence[str], *, times: int = 1) -> None:
        """Wait until the stream processor's hook saw each of `event_ids` `times` times."""

        async def all_seen() -> bool:
            counts = [
                sum(
                    tp.event_id == event_id
                    for batch in self.seen.batches
                    for tp in [*batch.applied, *batch.duplicates]
                )
                for event_id in event_ids
            ]
            return all(count >= times for count in counts)

        await eventually(all_seen)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(servers: LocalServers) -> AsyncIterator[Stack]:
    await kafka.ensure_topics(
        CommonSettings(kafka_bootstrap=servers.kafka_bootstrap),
        [
            topics.TOUCHPOINTS,
            topics.dlq(topics.TOUCHPOINTS),
            *(topics.dispatch(c) for c in topics.CHANNELS),
        ],
        partitions=2,
    )
    settings = WorkerSettings(
        kafka_bootstrap=servers.kafka_bootstrap,
        redis_url=servers.redis_url,
        temporal_address=servers.temporal_address,
    )
    redis = Redis.from_url(servers.redis_url)
    temporal = await Client.connect(servers.temporal_address)
    producer = kafka.producer(settings)
    task_queue = f"e2e-{uuid.uuid4()}"
    seen = RecordingHook()
    dispatches = Dispatches(servers.kafka_bootstrap)
    await producer.start()
    await dispatches.start()
    try:
        async with contextlib.AsyncExitStack() as running:
            registry = await running.enter_async_context(running_registry(servers))
            ingest, _ = await running.enter_async_context(running_ingest(servers))
            customers, _ = await running.enter_async_context(running_customers(servers))
            await running.enter_async_context(
                build_worker(
                    temporal,
                    activities(redis, producer, settings),
                    settings,
                    task_queue=task_queue,
                )
            )
            await running.enter_async_context(
                running_stream(servers, redis, temporal, task_queue, seen)
            )
            yield Stack(
                ingest_grpc.IngestServiceStub(ingest),
                customers_grpc.CustomerServiceStub(customers),
                registry,
                redis,
                temporal,
                seen,
                dispatches,
            )
    finally:
        await dispatches.stop()
        await producer.stop()
        await redis.aclose()


async def _journey(stack: Stack, trigger: str) -> str:
    """Register and activate a journey on `trigger` through the registry; its id."""
    journey_id = f"e2e-thanks-{uuid.uuid4().hex[:10]}"
    registered = await stack.registry.stub.RegisterJourney(
        registry_pb.RegisterJourneyRequest(
            source=journey_source(journey_id, trigger), designer=DESIGNER
        )
    )
    assert registered.created and registered.version.version == 1
    await stack.registry.stub.ActivateJourney(
        registry_pb.ActivateJourneyRequest(journey_id=journey_id, version=1)
    )
    return journey_id


async def _customer(stack: Stack, customer_id: str) -> list[str]:
    """A customer with an email address, opted in to email, no LINE: the ids of the seeding
    touchpoints (Identify, then the consent and preferences CustomerService writes)."""
    identified = await stack.ingest.Identify(
        ingest_pb.IdentifyRequest(
            identity=identity_pb2.Identity(
                customer_id=customer_id, email=f"{customer_id}@shop.example"
            ),
            traits=_struct({"name": "Hanako Sato"}),
            source="e2e",
        )
    )
    preferences = await stack.customers.UpdatePreferences(
        customers_pb.UpdatePreferencesRequest(
            customer=identity_pb2.CustomerRef(customer_id=customer_id),
            consents=[
                consent_pb2.ChannelConsent(
                    channel=channel_pb2.CHANNEL_EMAIL,
                    status=consent_pb2.CONSENT_STATUS_OPTED_IN,
                    source="signup_form",
                )
            ],
            preferences=consent_pb2.Preferences(locale="en", time_zone="Asia/Tokyo"),
            update_mask=FieldMask(paths=["locale", "time_zone"]),
            source="e2e",
            request_id=f"req-{uuid.uuid4().hex}",
        )
    )
    return [identified.event_id, *preferences.event_ids]


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def _track(customer_id: str, name: str, event_id: str, **props: Any) -> ingest_pb.TrackRequest:
    event = touchpoint_pb2.Touchpoint(
        event_id=event_id,
        customer=identity_pb2.CustomerRef(customer_id=customer_id),
        name=name,
        source="e2e",
    )
    event.props.update(props)
    return ingest_pb.TrackRequest(event=event)


async def test_a_touchpoint_becomes_one_enrollment_and_one_dispatch_with_its_why(
    stack: Stack,
) -> None:
    trigger = f"e2e{uuid.uuid4().hex[:8]}.order_completed"
    journey_id = await _journey(stack, trigger)
    customer = unique("cust")
    seeded = await _customer(stack, customer)
    await stack.handled(seeded)

    # In through gRPC, twice with the same event id: a client retrying a call.
    order = _track(customer, trigger, f"ev-{uuid.uuid4().hex}", total=4200, product_name="tea")
    first = await stack.ingest.Track(order)
    again = await stack.ingest.Track(order)
    assert first.event_id == again.event_id == order.event.event_id
    assert first.customer_id == customer

    async def dispatched() -> bool:
        return bool(stack.dispatches.of(customer))

    await eventually(dispatched, timeout=30)
    workflow_id = contract.workflow_id(journey_id, customer)
    handle = stack.temporal.get_workflow_handle(workflow_id, result_type=contract.JourneyOutcome)
    outcome = await handle.result()
    assert outcome == contract.JourneyOutcome("completed", "thanked", "done")

    # The message: on the topic of the channel the policy chose (no LINE id → email), with
    # the content rendered from the customer's memory and the trigger, and with its why.
    [(topic, event)] = stack.dispatches.of(customer)
    assert topic == topics.dispatch("email")
    assert event.channel == channel_pb2.CHANNEL_EMAIL
    assert event.address == f"{customer}@shop.example"
    assert event.locale == "en"
    assert event.email.subject == "Thank you, Hanako Sato"
    assert event.email.text == "Your tea is on its way."
    assert event.dispatch_id == contract.dispatch_id(workflow_id, 1, "thanks", 1)
    why = event.reason
    assert (why.journey_id, why.journey_version, why.step_id) == (journey_id, 1, "thanks")
    assert why.trigger_event_id == order.event.event_id
    assert why.designer == DESIGNER
    assert (why.workflow_id, why.template_id) == (workflow_id, "thanks")

    # The same touchpoint a third time, after the enrollment ended (a late redelivery): no
    # Temporal call, no second enrollment, although the journey allows re-entry.
    await stack.handled([order.event.event_id], times=2)
    calls = temporal_calls()
    await stack.ingest.Track(order)
    await stack.handled([order.event.event_id], times=3)
    assert temporal_calls() == calls
    raw = await stack.redis.hget(keys.customer(customer, keys.ENROLLMENTS), journey_id)
    record = json.loads(raw or b"{}")
    assert (record["count"], record["active"], record["event_id"]) == (
        1,
        False,
        order.event.event_id,
    )
    runs = [run async for run in stack.temporal.list_workflows(f"WorkflowId = '{workflow_id}'")]
    assert len(runs) == 1
    await asyncio.sleep(QUIET_SECONDS)
    assert len(stack.dispatches.of(customer)) == 1

    # A different order is a new trigger: re-entry `always` enrolls again (so the dedupe
    # above was the event id's doing, not the re-entry rule's).
    second = _track(customer, trigger, f"ev-{uuid.uuid4().hex}", total=900, product_name="cup")
    await stack.ingest.Track(second)

    async def dispatched_twice() -> bool:
        return len(stack.dispatches.of(customer)) == 2

    await eventually(dispatched_twice, timeout=30)
    assert stack.dispatches.of(customer)[1][1].reason.trigger_event_id == second.event.event_id

    await stack.registry.stub.ArchiveJourney(
        registry_pb.ArchiveJourneyRequest(
            journey_id=journey_id,
            running_enrollments=journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING,
        )
    )


async def test_events_no_journey_cares_about_make_no_temporal_call(stack: Stack) -> None:
    trigger = f"e2e{uuid.uuid4().hex[:8]}.order_completed"
    journey_id = await _journey(stack, trigger)
    customer = unique("cust")
    await stack.handled(await _customer(stack, customer))
    calls = temporal_calls()

    views = [
        _track(customer, "page.viewed", f"ev-{uuid.uuid4().hex}", path=f"/p/{i}") for i in range(20)
    ]
    # The journey's own event, filtered out by its `where`: evaluated, but no enrollment.
    free = _track(customer, trigger, f"ev-{uuid.uuid4().hex}", total=0)
    for request in [*views, free]:
        await stack.ingest.Track(request)
    await stack.handled([r.event.event_id for r in [*views, free]])

    assert temporal_calls() == calls
    assert await stack.redis.hget(keys.customer(customer, keys.ENROLLMENTS), journey_id) is None
    await stack.registry.stub.ArchiveJourney(
        registry_pb.ArchiveJourneyRequest(
            journey_id=journey_id,
            running_enrollments=journey_pb2.RUNNING_ENROLLMENTS_POLICY_KEEP_RUNNING,
        )
    )


def merge_journey_source(journey_id: str, trigger: str) -> str:
    """Wait a few seconds (long enough for an Identify to come in), then thank by email."""
    return f"""\
id: {journey_id}
name: End-to-end merge
designer: {DESIGNER}
trigger: {{event: {trigger}}}
templates:
  later:
    email:
      ja: {{subject: "{{{{ customer.name }}}}様", text: "その後いかがですか"}}
      en: {{subject: "Hello {{{{ customer.name }}}}", text: "How is it going?"}}
steps:
  - id: wait
    wait: {{for: {MERGE_WAIT_SECONDS}s}}
  - id: later
    send: {{channel: email, template: later}}
"""


# The anonymous visitor's wait: it must outlast Identify → MERGE → stream → hand-over (about
# a second on the local stack), so the test sees the wait continue under the known customer.
MERGE_WAIT_SECONDS = 12


async def test_an_identified_visitors_enrollment_follows_them_and_sends_to_the_known_customer(
    stack: Stack,
) -> None:
    trigger = f"e2e{uuid.uuid4().hex[:8]}.cart_updated"
    journey_id = f"e2e-merge-{uuid.uuid4().hex[:10]}"
    await stack.registry.stub.RegisterJourney(
        registry_pb.RegisterJourneyRequest(
            source=merge_journey_source(journey_id, trigger), designer=DESIGNER
        )
    )
    await stack.registry.stub.ActivateJourney(
        registry_pb.ActivateJourneyRequest(journey_id=journey_id, version=1)
    )
    known = unique("known")
    await stack.handled(await _customer(stack, known))

    # An anonymous visitor (a browser id) triggers the journey and starts waiting.
    anonymous_id = unique("browser")
    event = touchpoint_pb2.Touchpoint(
        event_id=f"ev-{uuid.uuid4().hex}",
        customer=identity_pb2.CustomerRef(anonymous_id=anonymous_id),
        name=trigger,
        source="e2e",
    )
    tracked = await stack.ingest.Track(ingest_pb.TrackRequest(event=event))
    visitor = tracked.customer_id
    visitor_run = stack.temporal.get_workflow_handle(
        contract.workflow_id(journey_id, visitor), result_type=contract.JourneyOutcome
    )

    async def waiting() -> bool:
        try:
            return bool(await visitor_run.query(contract.QUERY_CURRENT_STEP) == "wait")
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await eventually(waiting, timeout=30)

    # They log in: Identify merges the visitor into the known customer.
    identified = await stack.ingest.Identify(
        ingest_pb.IdentifyRequest(
            identity=identity_pb2.Identity(customer_id=known, anonymous_id=anonymous_id),
            source="e2e",
        )
    )
    assert identified.customer_id == known
    assert await visitor_run.result() == contract.JourneyOutcome("merged", f"into {known}", "wait")
    known_run = stack.temporal.get_workflow_handle(
        contract.workflow_id(journey_id, known), result_type=contract.JourneyOutcome
    )
    running = f"EnishiJourneyId = '{journey_id}' AND ExecutionStatus = 'Running'"

    async def one_running() -> bool:
        return (await stack.temporal.count_workflows(running)).count == 1

    await eventually(one_running, timeout=30)  # visibility lags a moment
    assert await known_run.query(contract.QUERY_CURRENT_STEP) == "wait"
    # The known customer's run took up the visitor's wait: its wake-up time came along.
    history = await known_run.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (handed,) = await stack.temporal.data_converter.decode(
        started.input.payloads, [contract.JourneyInput]
    )
    assert isinstance(handed, contract.JourneyInput) and handed.state is not None
    assert (handed.customer_id, handed.state.current_step) == (known, "wait")
    known_started = history.events[0].event_time.ToDatetime(tzinfo=UTC)
    wake_at = datetime.fromisoformat(handed.state.wake_at)
    assert wake_at < known_started + timedelta(seconds=MERGE_WAIT_SECONDS)  # not restarted

    assert await known_run.result() == contract.JourneyOutcome("completed", last_step="later")

    async def dispatched() -> bool:
        return bool(stack.dispatches.of(known))

    await eventually(dispatched, timeout=30)
    [(topic, sent)] = stack.dispatches.of(known)
    assert topic == topics.dispatch("email")
    assert sent.address == f"{known}@shop.example"
    assert sent.reason.workflow_id == contract.workflow_id(journey_id, known)
    assert stack.dispatches.of(visitor) == []
    records = {
        who: json.loads(
            await stack.redis.hget(keys.customer(who, keys.ENROLLMENTS), journey_id) or b"{}"
        )
        for who in (visitor, known)
    }
    assert (records[visitor]["active"], records[visitor]["ended"]) == (False, "merged")
    assert (records[known]["active"], records[known]["ended"]) == (False, "completed")
    assert records[known]["handed_from"] == visitor
