"""One trace per touchpoint, on the real local servers (Tansu, Valkey, the Temporal dev server).

Every component runs in this process as its service wires it, with tracing on and spans kept
in memory: ingest and the registry over gRPC, the stream processor with the real trigger
hook, the journey worker with its real activities (its Temporal client carrying the
TracingInterceptor), the LINE channel processor against the in-process provider sandbox. A
Track call with a caller's `traceparent` must come out as one trace: ingest call → stream
processing → signal-with-start → send activity → dispatch publish → channel processing →
provider call, and on to the stream processing the `message.sent` receipt. docs/tracing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace import ReadableSpan
from redis.asyncio import Redis
from temporalio.client import Client

from enishi import kafka, topics, tracing
from enishi.channels.consumer import ChannelProcessor, consume
from enishi.channels.line import LinePushSender
from enishi.config import CommonSettings, LineSettings, WorkerSettings
from enishi.v1 import identity_pb2, touchpoint_pb2
from enishi.v1 import ingest_service_pb2 as ingest_pb
from enishi.v1 import ingest_service_pb2_grpc as ingest_grpc
from enishi.v1 import journey_registry_pb2 as registry_pb
from services.worker.app import activities, build_worker
from tests.conftest import LocalServers
from tests.e2e.test_journey_e2e import running_stream
from tests.integration.channels_support import channel_settings, running_sandbox
from tests.integration.stream_support import RecordingHook, eventually, unique
from tests.integration.test_ingest import running_ingest
from tests.integration.test_registry import running_registry
from tests.tracing_support import ancestry, named, traced

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

# The chain from the provider call up to the ingest call, nearest first.
CHAIN = [
    "send line",
    "process dispatch.line",
    "publish dispatch.line",
    "RunActivity:send",
    "StartActivity:send",
    "SignalWithStartWorkflow:JourneyWorkflow",
    "process touchpoints",
    "enishi.v1.IngestService/Track",
]


def journey_source(journey_id: str, trigger: str) -> str:
    """One LINE message on `trigger` (a LINE user id is consent enough: docs/sending.md)."""
    return f"""\
id: {journey_id}
name: Traced thanks
designer: crm-team@shop.example
trigger: {{event: {trigger}}}
reentry: {{policy: always}}
templates:
  thanks:
    line:
      ja: {{text: "ありがとうございます"}}
      en: {{text: "Thank you"}}
steps:
  - id: thanks
    send: {{channel: line, template: thanks}}
"""


@contextlib.asynccontextmanager
async def running_line_channel(
    servers: LocalServers, redis: Redis, settings: LineSettings
) -> AsyncIterator[None]:
    """The LINE channel processor on the real `dispatch.line`, from its current end (earlier
    tests' dispatches there are not this test's business)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=unique("trace-line"),
        enable_auto_commit=False,
    )
    producer = kafka.producer(settings)
    sender = LinePushSender(settings)
    await producer.start()
    await consumer.start()
    await _from_end(consumer, topics.dispatch("line"))
    processor = ChannelProcessor("line", sender, redis, producer, settings)
    task = asyncio.create_task(consume(consumer, processor, batch_max=100, batch_wait_ms=20))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        await sender.aclose()


async def _from_end(consumer: AIOKafkaConsumer, topic: str) -> None:
    await consumer.topics()
    partitions = [
        TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    assert partitions, f"no partitions for {topic}"
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)  # resolved now, not lazily


def _applied(
    seen: RecordingHook, predicate: Callable[[touchpoint_pb2.Touchpoint], bool]
) -> list[touchpoint_pb2.Touchpoint]:
    return [tp for batch in seen.batches for tp in batch.applied if predicate(tp)]


def _attribute_values(spans: Sequence[ReadableSpan]) -> list[str]:
    return [str(value) for span in spans for value in (span.attributes or {}).values()]


async def test_a_touchpoint_is_one_trace_from_the_ingest_call_to_the_provider_call(
    servers: LocalServers,
) -> None:
    await kafka.ensure_topics(
        CommonSettings(kafka_bootstrap=servers.kafka_bootstrap),
        [
            topics.TOUCHPOINTS,
            topics.dlq(topics.TOUCHPOINTS),
            topics.dispatch("line"),
            topics.dlq(topics.dispatch("line")),
        ],
        partitions=2,
    )
    trigger = f"trace{uuid.uuid4().hex[:8]}.order_completed"
    journey_id = f"traced-{uuid.uuid4().hex[:10]}"
    customer = unique("cust")
    line_user = "U" + uuid.uuid4().hex
    client_trace_id, client_span_id = os.urandom(16).hex(), os.urandom(8).hex()
    seen = RecordingHook()

    with traced() as exporter:
        async with contextlib.AsyncExitStack() as running:
            # Connected after tracing is on: the interceptor rides on the client, and the
            # worker built on it gets it too.
            temporal = await Client.connect(
                servers.temporal_address, interceptors=tracing.temporal_interceptors()
            )
            redis = Redis.from_url(servers.redis_url)
            running.push_async_callback(redis.aclose)
            settings = WorkerSettings(
                kafka_bootstrap=servers.kafka_bootstrap,
                redis_url=servers.redis_url,
                temporal_address=servers.temporal_address,
            )
            producer = kafka.producer(settings)
            await producer.start()
            running.push_async_callback(producer.stop)
            task_queue = unique("trace")
            registry = await running.enter_async_context(running_registry(servers))
            channel, _ = await running.enter_async_context(running_ingest(servers))
            sandbox = await running.enter_async_context(running_sandbox(servers))
            await running.enter_async_context(
                build_worker(
                    temporal, activities(redis, producer, settings), settings, task_queue=task_queue
                )
            )
            await running.enter_async_context(
                running_stream(servers, redis, temporal, task_queue, seen)
            )
            line = channel_settings(LineSettings, servers, line_api_url=f"{sandbox.http_url}/line")
            await running.enter_async_context(running_line_channel(servers, redis, line))

            await registry.stub.RegisterJourney(
                registry_pb.RegisterJourneyRequest(
                    source=journey_source(journey_id, trigger), designer="crm-team@shop.example"
                )
            )
            await registry.stub.ActivateJourney(
                registry_pb.ActivateJourneyRequest(journey_id=journey_id, version=1)
            )
            ingest = ingest_grpc.IngestServiceStub(channel)
            identified = await ingest.Identify(
                ingest_pb.IdentifyRequest(
                    identity=identity_pb2.Identity(customer_id=customer, line_user_id=line_user),
                    source="trace-test",
                )
            )

            async def known() -> bool:
                return bool(_applied(seen, lambda tp: tp.event_id == identified.event_id))

            await eventually(known)

            order = touchpoint_pb2.Touchpoint(
                customer=identity_pb2.CustomerRef(customer_id=customer),
                name=trigger,
                source="trace-test",
            )
            tracked = await ingest.Track(
                ingest_pb.TrackRequest(event=order),
                metadata=(("traceparent", f"00-{client_trace_id}-{client_span_id}-01"),),
            )

            def sent(tp: touchpoint_pb2.Touchpoint) -> bool:
                return tp.customer_id == customer and tp.name == "message.sent"

            async def receipt_processed() -> bool:
                return bool(_applied(seen, sent))

            await eventually(receipt_processed, timeout=30)
            assert len(await sandbox.ledger.entries(provider="line", to=line_user)) == 1
        spans = list(exporter.get_finished_spans())
    [receipt] = _applied(seen, sent)

    trace_id = int(client_trace_id, 16)
    [provider_call] = [
        span
        for span in named(spans, "send line")
        if span.context is not None and span.context.trace_id == trace_id
    ]
    chain = ancestry(spans, provider_call)
    assert [span.name for span in chain] == CHAIN
    assert {span.context.trace_id for span in chain if span.context is not None} == {trace_id}
    ingest_call = chain[-1]
    assert ingest_call.parent is not None and ingest_call.parent.span_id == int(client_span_id, 16)

    # The provider call is the delivery the receipt reports, and the trigger touchpoint's
    # processing span is the one that made the Temporal call.
    assert provider_call.attributes is not None
    assert provider_call.attributes["enishi.dispatch_id"] == receipt.receipt.dispatch_id
    assert chain[-2].attributes is not None
    assert chain[-2].attributes["enishi.event_name"] == trigger
    assert receipt.receipt.reason.trigger_event_id == tracked.event_id

    # The receipt goes on in the same trace: the stream processes `message.sent` as a child
    # of the channel's span for the dispatch.
    channel_span = chain[1]
    receipts = [
        span
        for span in named(spans, "process touchpoints")
        if span.parent is not None
        and channel_span.context is not None
        and span.parent.span_id == channel_span.context.span_id
    ]
    assert len(receipts) == 1
    assert receipts[0].attributes is not None
    assert receipts[0].attributes["enishi.event_name"] == "message.sent"
    assert receipt.trace.traceparent.split("-")[1] == client_trace_id

    # No personal data in any attribute of the trace: the LINE user id is the address.
    in_trace = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    assert not [value for value in _attribute_values(in_trace) if line_user in value]
