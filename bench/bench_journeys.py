"""`python -m bench.bench_journeys`: the journey engine next to raw Temporal, on one server.

Starts its own local stack (Tansu, the Temporal dev server with its SQLite file, Valkey; no
enishi services) on free ports, registers and activates a one-send journey through the real
registry, then measures, in order:

1. **raw signal-with-start/s**: `start_workflow(..., start_signal=...)` of a trivial workflow
   type, as many in flight as the stream processor allows (no worker polls: the figure is
   the server's start path, like the one below);
2. **enrollments/s** through the stream processor's trigger path: trigger events already on
   a topic → memory → trigger index, CEL, enrollment record → signal-with-start, counted by
   `enishi_temporal_calls_total`; the ratio to (1) is the design's goal (>= 0.8);
3. **Temporal calls per 1,000 events no journey cares about** (must be 0);
4. **trigger → dispatch latency** p50/p95/p99 at about half of (2) with the real worker and
   its real activities: from producing the trigger touchpoint on `touchpoints` to reading its
   `DispatchEvent` on `dispatch.line`.

Prints a table and writes `bench/results/journeys.json`. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from temporalio.client import Client

from enishi import kafka, topics
from enishi.config import CommonSettings, DevStackSettings, RegistrySettings, WorkerSettings
from enishi.devstack.parts import kafka_bootstrap, redis_url, temporal_address
from enishi.devstack.ports import free_port
from enishi.devstack.supervisor import Supervisor
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.grpc_server import GrpcServer
from enishi.logs import configure_logging
from enishi.memory import model
from enishi.memory.writer import MemoryWriter
from enishi.metrics import TEMPORAL_CALLS
from enishi.v1 import dispatch_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import journey_registry_pb2 as registry_pb
from enishi.v1 import journey_registry_pb2_grpc as registry_grpc
from services.registry.enrollments import Enrollments
from services.registry.servicer import JourneyRegistryServicer, add_to_server
from services.registry.store import JourneyStore
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import AppliedBatch, Hooks
from services.stream.triggers import JourneyTriggers
from services.worker.app import activities, build_worker
from workflows import contract

RESULTS: Final = Path(__file__).resolve().parent / "results" / "journeys.json"
JOURNEY_ID: Final = "bench-thanks"
TRIGGER: Final = "bench.order_completed"
IGNORED: Final = "bench.page_viewed"
CONCURRENCY: Final = 32  # ENISHI_STREAM_TEMPORAL_CONCURRENCY's default, for both paths
BATCH: Final = 500
SOURCE: Final = f"""\
id: {JOURNEY_ID}
name: Bench thanks
designer: bench@enishi.example
trigger: {{event: {TRIGGER}, where: "event.props.total > 0"}}
reentry: {{policy: always}}
templates:
  thanks:
    line:
      ja: {{text: "{{{{ customer.name | default('お客様') }}}}、ありがとうございます"}}
      en: {{text: "Thank you, {{{{ customer.name | default('friend') }}}}"}}
steps:
  - id: thanks
    send: {{channel: line, template: thanks}}
  - id: done
    exit: {{}}
"""


@dataclass(frozen=True)
class Sizes:
    """How much each measurement moves."""

    raw_starts: int = 400
    enrollments: int = 400
    runs: int = 2
    ignored: int = 1000
    latency_seconds: float = 20.0
    latency_rate: float = 0.0  # 0: half of the measured enrollments/s


QUICK: Final = Sizes(raw_starts=200, enrollments=200, runs=1, ignored=1000, latency_seconds=8.0)
WARM_UP: Final = 50


@dataclass
class Results:
    """The figures of one run (JSON-ready)."""

    raw_signal_with_start_per_s: float = 0.0
    enrollments_per_s: float = 0.0
    raw_samples: list[float] = field(default_factory=list)
    enrollment_samples: list[float] = field(default_factory=list)
    enrollment_ratio: float = 0.0
    temporal_calls_per_1000_ignored: float = 0.0
    latency_rate_per_s: float = 0.0
    latency_sent: int = 0
    latency_dispatched: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(figure, value, goal, verdict) for the table."""
        p = self.latency_ms
        ratio_met = "met" if self.enrollment_ratio >= 0.8 else "NOT met"
        p99_met = "met" if p.get("p99", float("inf")) < 500 else "NOT met"
        return [
            ("raw signal-with-start", f"{self.raw_signal_with_start_per_s:,.1f} /s", "", ""),
            ("enrollments (trigger path)", f"{self.enrollments_per_s:,.1f} /s", "", ""),
            ("enrollments / raw", f"{self.enrollment_ratio:.2f}", ">= 0.80", ratio_met),
            (
                "Temporal calls per 1,000 ignored events",
                f"{self.temporal_calls_per_1000_ignored:g}",
                "0",
                "met" if self.temporal_calls_per_1000_ignored == 0 else "NOT met",
            ),
            (
                "trigger → dispatch, load",
                f"{self.latency_rate_per_s:,.1f} /s, "
                f"{self.latency_dispatched}/{self.latency_sent} dispatched",
                "~ half of enrollments/s",
                "",
            ),
            ("trigger → dispatch p50", f"{p.get('p50', 0):,.0f} ms", "", ""),
            ("trigger → dispatch p95", f"{p.get('p95', 0):,.0f} ms", "", ""),
            ("trigger → dispatch p99", f"{p.get('p99', 0):,.0f} ms", "< 500 ms", p99_met),
        ]


def table(results: Results) -> str:
    """The figures as a Markdown table."""
    rows = [("figure", "value", "goal", "verdict"), *results.rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# --- the stack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    kafka: str
    redis_url: str
    redis: Redis
    temporal: Client
    partitions: int


class Seen:
    """Counts the touchpoints the processor handed to its hook (applied or duplicate)."""

    def __init__(self) -> None:
        self.count = 0

    async def on_applied(self, batch: AppliedBatch) -> None:
        self.count += len(batch.applied) + len(batch.duplicates)


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
            yield Stack(kafka_bootstrap(settings), redis_url(settings), redis, temporal, partitions)
        finally:
            await redis.aclose()
            await supervisor.down()


async def register_journey(stack: Stack) -> None:
    """Register and activate the bench journey through the real registry (in-process)."""
    settings = RegistrySettings(
        redis_url=stack.redis_url, grpc_host="127.0.0.1", grpc_port=0, metrics_port=0
    )
    store = JourneyStore(stack.redis)
    servicer = JourneyRegistryServicer(store, Enrollments(stack.temporal))

    def add(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    server = GrpcServer(settings, "registry", add, ready=store.ping)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = registry_grpc.JourneyRegistryStub(channel)
            await stub.RegisterJourney(
                registry_pb.RegisterJourneyRequest(source=SOURCE, designer="bench")
            )
            await stub.ActivateJourney(
                registry_pb.ActivateJourneyRequest(journey_id=JOURNEY_ID, version=1)
            )
    finally:
        await server.stop(0)


def calls() -> float:
    """`enishi_temporal_calls_total`, every kind."""
    return sum(
        s.value for m in TEMPORAL_CALLS.collect() for s in m.samples if s.name.endswith("_total")
    )


def trigger(customer_id: str, name: str = TRIGGER) -> touchpoint_pb2.Touchpoint:
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


@contextlib.asynccontextmanager
async def processor(
    stack: Stack, topic: str, task_queue: str, seen: Seen | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """The stream processor with the real trigger hook, consuming `topic` in this process."""
    consumer = consumer_for(stack.kafka, topic, f"bench-{uuid.uuid4().hex[:8]}", batch_max=BATCH)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=stack.kafka))
    await producer.start()
    await consumer.start()
    writer = MemoryWriter(stack.redis)
    hook = JourneyTriggers(
        stack.redis,
        TemporalJourneyCalls(stack.temporal, task_queue=task_queue, concurrency=CONCURRENCY),
        resolve=writer.resolve,
    )
    hooks = Hooks(hook, seen) if seen is not None else hook
    stream = StreamProcessor(writer, producer, hook=hooks)
    task = asyncio.create_task(consume(consumer, stream, batch_max=BATCH, batch_wait_ms=20))
    try:
        yield task
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
        await asyncio.sleep(0.005)


# --- the measurements --------------------------------------------------------------------------


async def raw_signal_with_start(client: Client, count: int) -> float:
    """Signal-with-start calls/s of a trivial workflow type, CONCURRENCY in flight."""
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

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def enrollments(stack: Stack, count: int) -> float:
    """Enrollments/s: trigger events on a topic → the processor → signal-with-start each."""
    topic = f"bench-touchpoints-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(stack.kafka, [topic, topics.dlq(topic)], partitions=stack.partitions)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=stack.kafka))
    await producer.start()
    try:
        # New customers each run: an enrollment that never ran (no worker here) stays active.
        run = uuid.uuid4().hex[:8]
        await _produce(producer, topic, [trigger(f"enr-{run}-{i}") for i in range(count)])
    finally:
        await producer.stop()
    before = calls()
    started = time.perf_counter()
    async with processor(stack, topic, f"bench-enroll-{uuid.uuid4().hex[:8]}") as task:
        await _until(lambda: calls() - before >= count, 300, task)
        elapsed = time.perf_counter() - started
    return count / elapsed


async def ignored_calls(stack: Stack, count: int) -> float:
    """Temporal calls made for `count` events no journey triggers on or awaits (per 1,000)."""
    topic = f"bench-ignored-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(stack.kafka, [topic, topics.dlq(topic)], partitions=stack.partitions)
    events = [trigger(f"ign-{i % 100}", IGNORED) for i in range(count)]
    producer = kafka.producer(CommonSettings(kafka_bootstrap=stack.kafka))
    await producer.start()
    try:
        await _produce(producer, topic, events)
    finally:
        await producer.stop()
    before = calls()
    seen = Seen()
    async with processor(stack, topic, f"bench-ignored-{uuid.uuid4().hex[:8]}", seen) as task:
        await _until(lambda: seen.count >= count, 60, task)
    return (calls() - before) * 1000 / count


async def latency(stack: Stack, rate: float, seconds: float) -> tuple[int, list[float]]:
    """Trigger → dispatch latencies (ms) at `rate` triggers/s for `seconds`, real worker."""
    queue = f"bench-latency-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        kafka_bootstrap=stack.kafka,
        redis_url=stack.redis_url,
        sending_cap_day=0,
        sending_cap_week=0,
        sending_cap_channel_day=0,
    )
    producer = kafka.producer(settings)
    dispatches = AIOKafkaConsumer(bootstrap_servers=stack.kafka, enable_auto_commit=False)
    produced: dict[str, float] = {}
    latencies: list[float] = []
    await producer.start()
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
            while True:
                batch = await dispatches.getmany(timeout_ms=50)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        event = dispatch_pb2.DispatchEvent.FromString(record.value)
                        sent_at = produced.get(event.reason.trigger_event_id)
                        if sent_at is not None:
                            latencies.append((now - sent_at) * 1000)

        reader = asyncio.create_task(read())
        worker = build_worker(
            stack.temporal, activities(stack.redis, producer, settings), settings, task_queue=queue
        )
        async with worker, processor(stack, topics.TOUCHPOINTS, queue) as task:
            count = max(1, int(rate * seconds))
            started = time.perf_counter()
            for i in range(count):
                # Paced by the clock, not by sleeps adding up.
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                customer = f"lat-{i}"
                order = trigger(customer)
                await producer.send(
                    topics.TOUCHPOINTS,
                    value=identified(customer).SerializeToString(),
                    key=customer.encode(),
                )
                produced[order.event_id] = time.perf_counter()
                await producer.send(
                    topics.TOUCHPOINTS, value=order.SerializeToString(), key=customer.encode()
                )
            await producer.flush()
            with contextlib.suppress(TimeoutError):
                await _until(lambda: len(latencies) >= count, 60, task)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await dispatches.stop()
        await producer.stop()
    return count, latencies


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive")
        if len(values) > 1
        else [values[0]] * 99
    )
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


async def measure(sizes: Sizes = Sizes(), *, partitions: int = 4) -> Results:
    """Every figure of this benchmark, on a fresh local stack (the runner's entry point)."""
    results = Results(sizes=asdict(sizes))
    async with local_stack(partitions) as stack:
        await kafka.ensure_topics(
            stack.kafka,
            [topics.TOUCHPOINTS, topics.dlq(topics.TOUCHPOINTS), topics.dispatch("line")],
            partitions=partitions,
        )
        await register_journey(stack)
        # Warm up the server's start path (namespace caches, SQLite pages) before timing.
        await raw_signal_with_start(stack.temporal, WARM_UP)
        # Raw and project interleaved, best of `runs` each: the box is shared, and a busy
        # moment then hurts both alike.
        for run in range(sizes.runs):
            log(f"run {run + 1}/{sizes.runs}: raw signal-with-start ...")
            raw = await raw_signal_with_start(stack.temporal, sizes.raw_starts)
            log(f"run {run + 1}/{sizes.runs}: enrollments through the trigger path ...")
            enrolled = await enrollments(stack, sizes.enrollments)
            results.raw_samples.append(round(raw, 1))
            results.enrollment_samples.append(round(enrolled, 1))
        results.raw_signal_with_start_per_s = max(results.raw_samples)
        results.enrollments_per_s = max(results.enrollment_samples)
        results.enrollment_ratio = results.enrollments_per_s / results.raw_signal_with_start_per_s
        log("events no journey cares about ...")
        results.temporal_calls_per_1000_ignored = await ignored_calls(stack, sizes.ignored)
        rate = sizes.latency_rate or results.enrollments_per_s / 2
        log(f"trigger → dispatch at {rate:.1f}/s for {sizes.latency_seconds:g}s ...")
        sent, latencies = await latency(stack, rate, sizes.latency_seconds)
        results.latency_rate_per_s = rate
        results.latency_sent, results.latency_dispatched = sent, len(latencies)
        results.latency_ms = {k: round(v, 1) for k, v in percentiles(latencies).items()}
    return results


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_journeys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="latency load, triggers/s (default: half of enrollments/s)",
    )
    parser.add_argument("--seconds", type=float, help="how long the latency load runs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console", "bench", stream=sys.stderr)
    sizes = QUICK if args.quick else Sizes()
    overrides: dict[str, Any] = {"latency_rate": args.rate}
    if args.seconds:
        overrides["latency_seconds"] = args.seconds
    sizes = Sizes(**{**asdict(sizes), **overrides})
    started = time.perf_counter()
    results = asyncio.run(measure(sizes))
    document = {
        "benchmark": "journeys",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        **asdict(results),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
