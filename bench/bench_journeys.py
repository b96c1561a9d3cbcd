"""The journey engine next to raw Temporal, on one server (`python -m bench --only journeys`).

Starts its own local stack (Tansu, the Temporal dev server with its SQLite file, Valkey; no
enishi services) on free ports, registers and activates two journeys through the real
registry (`bench-thanks`: one send; `bench-steps`: send, wait, update, branch, send,
wait_for, exit, with a goal), then measures, in order:

1. **raw signal-with-start/s**: `start_workflow(..., start_signal=...)` of a trivial workflow
   type, as many in flight as the stream processor allows (no worker polls: the figure is
   the server's start path, like the one below);
2. **enrollments/s** through the stream processor's trigger path: trigger events already on
   a topic → memory → trigger index, CEL, enrollment record → signal-with-start, timed from
   the processor's first batch to the last start Temporal acknowledged. (1) and (2)
   alternate `runs` times; the ratio of the bests is the design's goal (>= 0.8). Both also
   record the benchmark process's CPU per call;
3. **Temporal calls per 1,000 events** of a mix in which most events concern no journey
   (`MIX`), by kind, and how many calls events no journey names caused (must be 0);
4. with the processor and the real worker (real activities) running in this process:
   **history events per journey step**: `bench-steps` run to completion, each run's history
   length (`fetch_history`) over the steps it took (`steps_taken`); then **trigger →
   dispatch latency** p50/p95/p99 of `bench-thanks`, from producing the trigger touchpoint
   on `touchpoints` to reading its `DispatchEvent` on `dispatch.line`, at half of (2) (the
   design's load), then at half of the pace the worker kept up under that load; and the
   benchmark process's peak RSS meanwhile.

Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from redis.asyncio import Redis
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from bench import proc
from bench.consumer import assigned
from bench.servers import API_KEY, CLIENT
from enishi import grpc_client, kafka, topics
from enishi.config import CommonSettings, DevStackSettings, RegistrySettings, WorkerSettings
from enishi.devstack.parts import kafka_bootstrap, redis_url, temporal_address
from enishi.devstack.ports import free_port
from enishi.devstack.supervisor import Supervisor
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.grpc_server import GrpcServer
from enishi.memory import model
from enishi.memory.writer import MemoryWriter
from enishi.metrics import TEMPORAL_CALLS
from enishi.v1 import dispatch_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import journey_registry_pb2 as registry_pb
from enishi.v1 import journey_registry_pb2_grpc as registry_grpc
from services.registry.enrollments import Enrollments
from services.registry.servicer import JourneyRegistryServicer, add_to_server
from services.registry.store import JourneyStore
from services.stream.app import BatchOutcome, StreamProcessor, consume
from services.stream.hooks import AppliedBatch, Hooks
from services.stream.triggers import JourneyTriggers
from services.worker.app import activities, build_worker
from workflows import contract

CONCURRENCY: Final = 32  # ENISHI_STREAM_TEMPORAL_CONCURRENCY's default, for both paths
BATCH: Final = 500
TRIGGER: Final = "bench.order_completed"
SIGNED_UP: Final = "bench.signed_up"
REPLIED: Final = "bench.replied"
THANKS: Final = "bench-thanks"
STEPS: Final = "bench-steps"
_LINE_TEXT: Final = """\
    line:
      ja: {{text: "{ja}"}}
      en: {{text: "{en}"}}
"""
SOURCES: Final = {
    THANKS: f"""\
id: {THANKS}
name: Bench thanks
designer: bench@enishi.example
trigger: {{event: {TRIGGER}, where: "event.props.total > 0"}}
reentry: {{policy: always}}
templates:
  thanks:
{_LINE_TEXT.format(ja="ありがとうございます", en="Thank you")}\
steps:
  - id: thanks
    send: {{channel: line, template: thanks}}
  - id: done
    exit: {{}}
""",
    STEPS: f"""\
id: {STEPS}
name: Bench welcome series
designer: bench@enishi.example
trigger: {{event: {SIGNED_UP}}}
goal: {{event: {TRIGGER}}}
reentry: {{policy: never}}
templates:
  welcome:
{_LINE_TEXT.format(ja="ようこそ", en="Welcome")}\
  nudge:
{_LINE_TEXT.format(ja="いかがですか", en="How is it going?")}\
steps:
  - id: welcome
    send: {{channel: line, template: welcome}}
  - id: pause
    wait: {{for: 2s}}
  - id: tag
    update: {{tag: [welcomed]}}
  - id: check
    branch:
      - if: "customer.orders_count > 0"
        then: done
      - else: nudge
  - id: nudge
    send: {{channel: line, template: nudge}}
  - id: listen
    wait_for: {{event: {REPLIED}, timeout: 2s}}
  - id: done
    exit: {{}}
""",
}
MIX: Final = {
    # name -> share of the events: an online shop's day, where most events concern no journey.
    "bench.page_viewed": 0.85,
    "bench.cart_updated": 0.08,
    TRIGGER: 0.04,  # bench-thanks' trigger, bench-steps' goal
    SIGNED_UP: 0.02,  # bench-steps' trigger
    REPLIED: 0.01,  # awaited only by a bench-steps run at its wait_for step
}
NAMED_BY_JOURNEYS: Final = frozenset({TRIGGER, SIGNED_UP, REPLIED})


@dataclass(frozen=True)
class Sizes:
    """How much each measurement moves."""

    raw_starts: int = 600
    enrollments: int = 600  # more than BATCH: the batch boundary's cost is in the figure
    runs: int = 3
    mix_events: int = 10_000
    mix_customers: int = 1_000
    latency_seconds: float = 10.0
    latency_rate: float = 0.0  # 0: half of the measured enrollments/s
    drain_seconds: float = 120.0
    """How long, after a load, dispatches of its triggers are waited for."""
    histories: int = 20


QUICK: Final = Sizes(
    raw_starts=100,
    enrollments=100,
    runs=1,
    mix_events=1_000,
    mix_customers=200,
    latency_seconds=1.0,
    drain_seconds=8.0,
    histories=2,
)
WARM_UP: Final = 50


@dataclass
class Results:
    """The figures of one journeys benchmark (JSON-ready)."""

    raw_samples: list[float] = field(default_factory=list)
    enrollment_samples: list[float] = field(default_factory=list)
    raw_cpu_ms: list[dict[str, float]] = field(default_factory=list)
    """CPU ms per raw signal-with-start by process (bench, temporal, redis, kafka), per run."""
    enrollment_cpu_ms: list[dict[str, float]] = field(default_factory=list)
    """CPU ms per enrollment by process, per run."""
    mix: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    """At half of the enrollment peak (`Latency` as a dict)."""
    latency_at_worker_pace: dict[str, Any] = field(default_factory=dict)
    """At half of the dispatches/s the worker kept up under the first load."""
    history: dict[str, Any] = field(default_factory=dict)
    """`bench-steps` run to its end (the history figures)."""
    history_thanks: dict[str, Any] = field(default_factory=dict)
    """A sample of the first latency load's `bench-thanks` runs (send, exit)."""
    runtime_peak_rss_mb: float | None = None
    """The benchmark process's peak RSS during latency and histories (processor + worker)."""
    runtime_rss_before_mb: float | None = None
    """Its RSS just before that phase."""


# --- the stack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    kafka: str
    redis_url: str
    redis: Redis
    temporal: Client
    partitions: int
    pids: dict[str, int]
    """The servers' processes by part name (kafka, temporal, redis)."""

    def cpu(self) -> proc.CpuMeter:
        """A meter of the CPU this process (`bench`) and each server use."""
        return proc.CpuMeter({"bench": "self", **self.pids})


@contextlib.asynccontextmanager
async def local_stack(partitions: int = 4) -> AsyncIterator[Stack]:
    """Tansu, Temporal (SQLite) and Valkey on free ports, as `enishi dev up` runs them."""
    with tempfile.TemporaryDirectory(prefix="enishi-bench-journeys-") as state:
        settings = DevStackSettings.model_validate(
            {
                "state_dir": Path(state),
                "kafka_port": free_port(),
                "temporal_port": free_port(),
                "temporal_ui_port": free_port(),
                "redis_port": free_port(),
                "partitions": partitions,
            }
        )
        supervisor = Supervisor(settings, services=False)
        await supervisor.up()
        redis = Redis.from_url(redis_url(settings))
        try:
            temporal = await Client.connect(temporal_address(settings))
            pids = {name: part.pid for name, part in supervisor.recorded().items()}
            yield Stack(
                kafka_bootstrap(settings), redis_url(settings), redis, temporal, partitions, pids
            )
        finally:
            await redis.aclose()
            await supervisor.down()


async def register_journeys(stack: Stack) -> None:
    """Register and activate the bench journeys through the real registry (in-process)."""
    settings = RegistrySettings(
        redis_url=stack.redis_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        api_keys=SecretStr(API_KEY.entry()),
    )
    store = JourneyStore(stack.redis)
    servicer = JourneyRegistryServicer(store, Enrollments(stack.temporal))

    def add(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    server = GrpcServer(settings, "registry", add, ready=store.ping)
    await server.start()
    try:
        async with grpc_client.aio_channel(f"127.0.0.1:{server.port}", CLIENT) as channel:
            stub = registry_grpc.JourneyRegistryStub(channel)
            for journey_id, source in SOURCES.items():
                await stub.RegisterJourney(
                    registry_pb.RegisterJourneyRequest(source=source, designer="bench")
                )
                await stub.ActivateJourney(
                    registry_pb.ActivateJourneyRequest(journey_id=journey_id, version=1)
                )
    finally:
        await server.stop(0)


def calls_by_kind() -> dict[str, float]:
    """`enishi_temporal_calls_total` by kind."""
    return {
        s.labels["kind"]: s.value
        for m in TEMPORAL_CALLS.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


def touchpoint(customer_id: str, name: str = TRIGGER) -> touchpoint_pb2.Touchpoint:
    event = touchpoint_pb2.Touchpoint(
        event_id=f"ev-{uuid.uuid4().hex}",
        customer_id=customer_id,
        name=name,
        kind=touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
    )
    event.occurred_at.CopyFrom(model.from_ms(int(time.time() * 1000)))
    event.received_at.CopyFrom(event.occurred_at)
    event.props.update({"total": 4200})
    return event


def identified(customer_id: str) -> touchpoint_pb2.Touchpoint:
    """What ingest's Identify writes: a LINE friend (LINE needs no other opt-in)."""
    identity = identity_pb2.Identity(customer_id=customer_id, line_user_id=f"U{customer_id}")
    event = touchpoint_pb2.Touchpoint(
        event_id=f"id-{customer_id}",
        customer_id=customer_id,
        name="customer.identified",
        kind=touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY,
        identify=touchpoint_pb2.IdentifyDetail(identity=identity),
    )
    event.occurred_at.CopyFrom(model.from_ms(int(time.time() * 1000)))
    event.received_at.CopyFrom(event.occurred_at)
    return event


async def _produce(
    producer: AIOKafkaProducer, topic: str, events: Sequence[touchpoint_pb2.Touchpoint]
) -> None:
    futures = [
        await producer.send(topic, value=e.SerializeToString(), key=e.customer_id.encode())
        for e in events
    ]
    await asyncio.gather(*futures)


async def _new_topic(stack: Stack, events: Sequence[touchpoint_pb2.Touchpoint]) -> str:
    """A fresh topic holding `events` (each phase reads its own)."""
    topic = f"bench-touchpoints-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings(kafka_bootstrap=stack.kafka)
    await kafka.ensure_topics(settings, [topic, topics.dlq(topic)], partitions=stack.partitions)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await _produce(producer, topic, events)
    finally:
        await producer.stop()
    return topic


# --- the processor, instrumented from the outside ----------------------------------------------


class Seen:
    """Counts the touchpoints the processor handed to its hooks (applied or duplicate)."""

    def __init__(self) -> None:
        self.count = 0

    async def on_applied(self, batch: AppliedBatch) -> None:
        self.count += len(batch.applied) + len(batch.duplicates)


class TimedProcessor(StreamProcessor):
    """The stream processor, noting when its first batch arrived."""

    first_batch_at: float | None = None

    async def process(self, records: Sequence[Any]) -> BatchOutcome:
        if self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()
        return await super().process(records)


class CountingCalls(TemporalJourneyCalls):
    """The stream's Temporal calls, each noted once Temporal answered it (kind, event id).

    `enishi_temporal_calls_total` counts a call when it is made; these notes say which event
    caused it and when the last one finished.
    """

    def __init__(self, client: Client, *, task_queue: str) -> None:
        super().__init__(client, task_queue=task_queue, concurrency=CONCURRENCY)
        self.done: list[tuple[str, str]] = []
        self.starts = 0
        self.last_done_at = 0.0

    def _note(self, kind: str, event_id: str) -> None:
        self.done.append((kind, event_id))
        self.last_done_at = time.perf_counter()

    async def start(self, request: contract.JourneyInput, event: contract.EventSignal) -> None:
        await super().start(request, event)
        self.starts += 1
        self._note("signal_with_start", event.event_id)

    async def signal(self, journey_id: str, customer_id: str, event: contract.EventSignal) -> bool:
        running = await super().signal(journey_id, customer_id, event)
        self._note("signal", event.event_id)
        return running


@dataclass
class Running:
    """A stream processor running in this process with the real trigger hook."""

    task: asyncio.Task[None]
    stream: TimedProcessor
    calls: CountingCalls
    seen: Seen


@contextlib.asynccontextmanager
async def processor(stack: Stack, topic: str, task_queue: str) -> AsyncIterator[Running]:
    """The stream processor with the real trigger hook, consuming `topic` in this process."""
    consumer = await assigned(stack.kafka, topic, stack.partitions, batch_max=BATCH)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=stack.kafka))
    await producer.start()
    writer = MemoryWriter(stack.redis)
    calls = CountingCalls(stack.temporal, task_queue=task_queue)
    seen = Seen()
    hook = JourneyTriggers(stack.redis, calls, resolve=writer.resolve)
    stream = TimedProcessor(writer, producer, hook=Hooks(hook, seen))
    task = asyncio.create_task(consume(consumer, stream, batch_max=BATCH, batch_wait_ms=20))
    try:
        yield Running(task, stream, calls, seen)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


async def _until(check: Callable[[], bool], timeout: float, running: asyncio.Task[None]) -> None:
    """Wait for `check()`; fail when `running` (the processor) died or time is up."""
    deadline = time.perf_counter() + timeout
    while not check():
        if running.done():
            running.result()  # its exception
            raise RuntimeError("bench: the stream processor stopped")
        if time.perf_counter() > deadline:
            raise TimeoutError("bench: did not finish in time")
        await asyncio.sleep(0.02)  # the figures use their own time stamps, not this poll


# --- the measurements --------------------------------------------------------------------------


def per_call_ms(used: dict[str, float], calls: int) -> dict[str, float]:
    """CPU seconds by process → ms per call, with their sum as `all`."""
    per = {name: round(seconds * 1000 / calls, 3) for name, seconds in used.items()}
    return {**per, "all": round(sum(per.values()), 3)}


async def raw_signal_with_start(stack: Stack, count: int) -> tuple[float, dict[str, float]]:
    """(calls/s, CPU ms per call by process) of signal-with-start of a trivial workflow,
    CONCURRENCY in flight."""
    client = stack.temporal
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            await client.start_workflow(
                "BenchTrivial",
                {"n": i},
                id=f"bench-raw:{queue}:{i}",
                task_queue=queue,
                start_signal=contract.SIGNAL_TOUCHPOINT,
                start_signal_args=[{"event_id": str(i)}],
            )

    meter = stack.cpu()
    meter.start()
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return count / elapsed, per_call_ms(meter.stop(), count)


async def enrollments(
    stack: Stack, count: int, profile: cProfile.Profile | None = None
) -> tuple[float, dict[str, float]]:
    """(enrollments/s, CPU ms per enrollment by process): `count` trigger events already on
    a topic → the processor → one signal-with-start each, from its first batch to the last
    answer. The CPU is counted from before the processor starts to the last answer."""
    # New customers each run: an enrollment that never ran (no worker here) stays active.
    run = uuid.uuid4().hex[:8]
    topic = await _new_topic(stack, [touchpoint(f"enr-{run}-{i}") for i in range(count)])
    meter = stack.cpu()
    meter.start()
    async with processor(stack, topic, f"bench-enroll-{run}") as running:
        if profile is not None:
            profile.enable()
        try:
            await _until(lambda: running.calls.starts >= count, 300, running.task)
        finally:
            if profile is not None:
                profile.disable()
        used = meter.stop()
        assert running.stream.first_batch_at is not None
        elapsed = running.calls.last_done_at - running.stream.first_batch_at
    return count / elapsed, per_call_ms(used, count)


async def event_mix(stack: Stack, events: int, customers: int) -> dict[str, Any]:
    """Temporal calls for `events` of the `MIX` over `customers` (no worker runs them)."""
    rng = random.Random(11)
    run = uuid.uuid4().hex[:8]
    names = rng.choices(list(MIX), weights=list(MIX.values()), k=events)
    batch = [touchpoint(f"mix-{run}-{rng.randrange(customers)}", name) for name in names]
    ignored = {tp.event_id for tp in batch if tp.name not in NAMED_BY_JOURNEYS}
    topic = await _new_topic(stack, batch)
    before = calls_by_kind()
    async with processor(stack, topic, f"bench-mix-{run}") as running:
        await _until(lambda: running.seen.count >= events, 120, running.task)
        made = running.calls.done
    after = calls_by_kind()
    by_kind = {kind: after[kind] - before.get(kind, 0) for kind in after}
    total = sum(by_kind.values())
    for_ignored = sum(1 for _, event_id in made if event_id in ignored)
    return {
        "events": events,
        "customers": customers,
        "shares": MIX,
        "calls": total,
        "calls_by_kind": by_kind,
        "calls_per_1000_events": total * 1000 / events,
        "ignored_events": len(ignored),
        "calls_for_ignored_events": for_ignored,
        "calls_per_1000_ignored_events": for_ignored * 1000 / max(len(ignored), 1),
    }


@dataclass
class Runtime:
    """The stream processor and the journey worker running in this process, one task queue."""

    stack: Stack
    queue: str
    producer: AIOKafkaProducer
    running: Running

    async def settle(self, timeout: float) -> None:
        """Wait until no run on this task queue is running: the worker is idle again."""
        query = f"TaskQueue = '{self.queue}' AND ExecutionStatus = 'Running'"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (await self.stack.temporal.count_workflows(query)).count:
                    await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def journey_runtime(stack: Stack) -> AsyncIterator[Runtime]:
    """The processor on `touchpoints` and the worker with its real activities."""
    queue = f"bench-runtime-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        kafka_bootstrap=stack.kafka,
        redis_url=stack.redis_url,
        sending_cap_day=0,
        sending_cap_week=0,
        sending_cap_channel_day=0,
    )
    producer = kafka.producer(settings)
    await producer.start()
    try:
        worker = build_worker(
            stack.temporal, activities(stack.redis, producer, settings), settings, task_queue=queue
        )
        async with worker, processor(stack, topics.TOUCHPOINTS, queue) as running:
            yield Runtime(stack, queue, producer, running)
    finally:
        await producer.stop()


async def _enter(runtime: Runtime, customer: str, name: str) -> str:
    """Produce a LINE identity and then `name` for `customer`; the event's id."""
    event = touchpoint(customer, name)
    for tp in (identified(customer), event):
        await runtime.producer.send(
            topics.TOUCHPOINTS, value=tp.SerializeToString(), key=customer.encode()
        )
    return event.event_id


@dataclass(frozen=True)
class Latency:
    """Trigger → dispatch under one load."""

    rate_per_s: float
    seconds: float
    sent: int
    dispatched: int
    pace_per_s: float
    """Dispatches read per second from the load's start to the last one: the worker's pace
    when the load is more than it keeps up with."""
    ms: dict[str, float]
    """p50, p95, p99, max; a trigger not dispatched by the end of the drain counts as the
    time it had waited then, so with `dispatched < sent` these are lower bounds."""


async def latency(
    runtime: Runtime, rate: float, seconds: float, drain: float, prefix: str
) -> Latency:
    """`bench-thanks` triggers at `rate`/s for `seconds` for customers `<prefix>-<n>`, each
    timed from its produce to its `DispatchEvent`; then up to `drain` seconds for the
    stragglers."""
    stack = runtime.stack
    dispatches = AIOKafkaConsumer(bootstrap_servers=stack.kafka, enable_auto_commit=False)
    produced: dict[str, float] = {}
    latencies: list[float] = []
    last = 0.0
    await dispatches.start()
    try:
        line = topics.dispatch("line")
        partitions = [
            TopicPartition(line, p) for p in sorted(dispatches.partitions_for_topic(line) or ())
        ]
        dispatches.assign(partitions)
        await dispatches.seek_to_end(*partitions)
        for partition in partitions:
            await dispatches.position(partition)

        async def read() -> None:
            nonlocal last
            while True:
                batch = await dispatches.getmany(timeout_ms=50)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        event = dispatch_pb2.DispatchEvent.FromString(record.value)
                        sent_at = produced.get(event.reason.trigger_event_id)
                        if sent_at is not None:
                            latencies.append((now - sent_at) * 1000)
                            last = now

        reader = asyncio.create_task(read())
        count = max(1, int(rate * seconds))
        started = time.perf_counter()
        for i in range(count):
            # Paced by the clock, not by sleeps adding up.
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at = time.perf_counter()
            produced[await _enter(runtime, f"{prefix}-{i}", TRIGGER)] = sent_at
        await runtime.producer.flush()
        with contextlib.suppress(TimeoutError):
            await _until(lambda: len(latencies) >= count, drain, runtime.running.task)
        ended = time.perf_counter()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await dispatches.stop()
    waited = [(ended - at) * 1000 for at in list(produced.values())[len(latencies) :]]
    return Latency(
        rate_per_s=round(rate, 2),
        seconds=seconds,
        sent=count,
        dispatched=len(latencies),
        pace_per_s=round(len(latencies) / max((last or ended) - started, 1e-9), 2),
        ms={k: round(v, 1) for k, v in percentiles([*latencies, *waited]).items()},
    )


async def histories(runtime: Runtime, count: int, timeout: float) -> dict[str, Any]:
    """`bench-steps` for `count` new customers, run to completion: history events per step."""
    run = uuid.uuid4().hex[:8]
    customers = [f"hist-{run}-{i}" for i in range(count)]
    for customer in customers:
        await _enter(runtime, customer, SIGNED_UP)
    await runtime.producer.flush()
    client = runtime.stack.temporal
    handles = [client.get_workflow_handle(contract.workflow_id(STEPS, c)) for c in customers]
    async with asyncio.timeout(timeout):
        return await history_figures(handles)


async def history_figures(handles: Sequence[WorkflowHandle[Any, Any]]) -> dict[str, Any]:
    """Each run's history length over the steps it took, once it ended; and the event types."""
    outcomes = await asyncio.gather(*(_result(h) for h in handles))
    per_step: list[float] = []
    lengths: list[int] = []
    steps_taken: list[int] = []
    types: Counter[str] = Counter()
    for handle in handles:
        steps = len(await handle.query("steps_taken"))
        events = (await handle.fetch_history()).events
        types.update(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in events)
        lengths.append(len(events))
        steps_taken.append(steps)
        per_step.append(len(events) / max(steps, 1))
    return {
        "workflows": len(handles),
        "outcomes": dict(Counter(str(o.get("status")) for o in outcomes)),
        "steps_mean": statistics.fmean(steps_taken),
        "events_mean": statistics.fmean(lengths),
        "events_per_step_mean": statistics.fmean(per_step),
        "events_per_step_max": max(per_step),
        "event_types_per_run": {t: round(n / len(handles), 2) for t, n in types.most_common()},
    }


async def _result(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The run's outcome, once it exists (the processor starts it) and has ended."""
    while True:
        try:
            outcome: dict[str, Any] = await handle.result()
            return outcome
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.2)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive")
        if len(values) > 1
        else [values[0]] * 99
    )
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


async def measure(
    sizes: Sizes = Sizes(), *, partitions: int = 4, profile: Path | None = None
) -> Results:
    """Every figure of this benchmark, on a fresh local stack (the runner's entry point).

    `profile`: write cProfile statistics of the first run's enrollments there (and print
    the top of them).
    """
    results = Results()
    async with local_stack(partitions) as stack:
        await kafka.ensure_topics(
            CommonSettings(kafka_bootstrap=stack.kafka),
            [topics.TOUCHPOINTS, topics.dlq(topics.TOUCHPOINTS), topics.dispatch("line")],
            partitions=partitions,
        )
        await register_journeys(stack)
        # Warm up the server's start path (namespace caches, SQLite pages) before timing.
        await raw_signal_with_start(stack, WARM_UP)
        # Raw and project interleaved, best of `runs` each, which goes first alternating: the
        # box is shared, and a busy moment (or a load that grows) then hurts both alike.
        for run in range(sizes.runs):
            profiler = cProfile.Profile() if profile is not None and run == 0 else None
            enrolled = raw = 0.0
            enrolled_cpu: dict[str, float] = {}
            raw_cpu: dict[str, float] = {}
            for which in ("raw", "enrollments") if run % 2 == 0 else ("enrollments", "raw"):
                log(f"run {run + 1}/{sizes.runs}: {which} ...")
                if which == "raw":
                    raw, raw_cpu = await raw_signal_with_start(stack, sizes.raw_starts)
                else:
                    enrolled, enrolled_cpu = await enrollments(stack, sizes.enrollments, profiler)
            if profiler is not None and profile is not None:
                _dump(profiler, profile)
            results.raw_samples.append(round(raw, 1))
            results.enrollment_samples.append(round(enrolled, 1))
            results.raw_cpu_ms.append(raw_cpu)
            results.enrollment_cpu_ms.append(enrolled_cpu)
        log("Temporal calls for a mix of events ...")
        results.mix = await event_mix(stack, sizes.mix_events, sizes.mix_customers)
        rate = sizes.latency_rate or max(results.enrollment_samples) / 2
        results.runtime_rss_before_mb = proc.rss_mb()
        proc.reset_peak_rss()
        async with journey_runtime(stack) as runtime:
            # Histories first, on an idle worker: under a backlog a 2 s wait can pass during
            # the activities before it and leave no timer in the history.
            log(f"{STEPS} to its end for {sizes.histories} customers ...")
            results.history = await histories(runtime, sizes.histories, timeout=120)
            seconds, drain = sizes.latency_seconds, sizes.drain_seconds
            log(f"trigger → dispatch at {rate:.1f}/s (half of the enrollment peak) ...")
            prefix = f"lat-{uuid.uuid4().hex[:8]}"
            first = await latency(runtime, rate, seconds, drain, prefix)
            results.latency = asdict(first)
            # A dispatch is not the end of a run: let the worker finish the first load's
            # runs before the second load, and read the histories of some of them.
            await runtime.settle(drain)
            thanks = [
                stack.temporal.get_workflow_handle(contract.workflow_id(THANKS, f"{prefix}-{i}"))
                for i in range(min(first.sent, sizes.histories))
            ]
            async with asyncio.timeout(120):
                results.history_thanks = await history_figures(thanks)
            pace = first.pace_per_s / 2
            log(f"trigger → dispatch at {pace:.1f}/s (half of the worker's pace) ...")
            second = await latency(runtime, pace, seconds, drain, f"lat-{uuid.uuid4().hex[:8]}")
            results.latency_at_worker_pace = asdict(second)
        results.runtime_peak_rss_mb = proc.peak_rss_mb()
    return results


def _dump(profiler: cProfile.Profile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(path))
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    log(f"profile of the enrollments written to {path}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    """`python -m bench.bench_journeys`: `python -m bench --only journeys`."""
    from bench.__main__ import main as run_all

    run_all([*sys.argv[1:], "--only", "journeys"])


if __name__ == "__main__":
    main()
