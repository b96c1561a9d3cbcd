"""Stream processor throughput (Kafka → customer memory) next to the raw limits, same run.

Starts Tansu and Valkey on free ports (or uses `--kafka`/`--redis`), produces touchpoints to
a fresh topic, and measures: raw pipelined HINCRBY ops/s, the memory writer alone
(plans → Redis) events/s, and the whole processor (consume → decode → Redis → commit)
events/s. Prints a JSON object; it never asserts a time. Run: `python -m bench.bench_stream`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from enishi import kafka, keys, topics
from enishi.config import CommonSettings, DevStackSettings
from enishi.devstack.parts import kafka_bootstrap, redis_url
from enishi.devstack.ports import free_port
from enishi.devstack.supervisor import Supervisor
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.writer import MemoryWriter
from enishi.v1 import touchpoint_pb2
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import AppliedBatch


@asynccontextmanager
async def _servers(args: argparse.Namespace) -> AsyncIterator[tuple[str, str]]:
    if args.kafka and args.redis:
        yield args.kafka, args.redis
        return
    with tempfile.TemporaryDirectory() as state:
        settings = DevStackSettings.model_validate(
            {
                "state_dir": Path(state),
                "kafka_port": free_port(),
                "temporal_port": free_port(),
                "temporal_ui_port": free_port(),
                "redis_port": free_port(),
                "partitions": 4,
            }
        )
        supervisor = Supervisor(settings, services=False)
        await supervisor.up()
        try:
            yield kafka_bootstrap(settings), redis_url(settings)
        finally:
            await supervisor.down()


def _touchpoints(count: int, customers: int) -> list[touchpoint_pb2.Touchpoint]:
    run = uuid.uuid4().hex[:8]
    now = model.from_ms(model.datetime_ms(datetime.now(UTC)))
    result = []
    for index in range(count):
        touchpoint = touchpoint_pb2.Touchpoint(
            event_id=f"{run}-{index}",
            customer_id=f"bench-{run}-{index % customers}",
            name="order.completed" if index % 10 == 0 else "page.viewed",
            kind=touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
            source="bench",
            channel="web",
        )
        touchpoint.occurred_at.CopyFrom(now)
        touchpoint.props.update({"amount": 1200, "currency": "JPY", "sku": f"S{index % 50}"})
        result.append(touchpoint)
    return result


async def _raw_hincrby(redis: Redis, ops: int) -> float:
    key = keys.customer("bench-raw", keys.COUNTERS)
    started = time.perf_counter()
    for offset in range(0, ops, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, ops - offset)):
                pipe.hincrby(key, "n", 1)
            await pipe.execute()
    return ops / (time.perf_counter() - started)


async def _writer_only(redis: Redis, touchpoints: list[touchpoint_pb2.Touchpoint]) -> float:
    writer = MemoryWriter(redis)
    now_ms = model.datetime_ms(datetime.now(UTC))
    started = time.perf_counter()
    for offset in range(0, len(touchpoints), 2000):
        batch = touchpoints[offset : offset + 2000]
        await writer.apply([plan(tp, now_ms=now_ms) for tp in batch])
    return len(touchpoints) / (time.perf_counter() - started)


class _Counter:
    """Counts applied touchpoints through the processor's batch hook."""

    def __init__(self) -> None:
        self.applied = 0

    async def on_applied(self, batch: AppliedBatch) -> None:
        self.applied += len(batch.applied)


async def _processor(
    bootstrap: str, redis: Redis, touchpoints: list[touchpoint_pb2.Touchpoint]
) -> float:
    topic = f"bench-touchpoints-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(bootstrap, [topic, topics.dlq(topic)], partitions=4)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap))
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, value=tp.SerializeToString(), key=tp.customer_id.encode())
            for tp in touchpoints
        ]
        await asyncio.gather(*deliveries)
        consumer = consumer_for(bootstrap, topic, f"bench-{topic}", batch_max=2000)
        await consumer.start()
        counter = _Counter()
        processor = StreamProcessor(MemoryWriter(redis), producer, hook=counter)
        started = time.perf_counter()
        task = asyncio.create_task(consume(consumer, processor, batch_max=2000, batch_wait_ms=20))
        while counter.applied < len(touchpoints) and not task.done():
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
    finally:
        await producer.stop()
    return len(touchpoints) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--kafka", default="")
    parser.add_argument("--redis", default="")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    async with _servers(args) as (bootstrap, url):
        redis = Redis.from_url(url)
        try:
            raw = await _raw_hincrby(redis, 100_000)
            writer = await _writer_only(redis, _touchpoints(args.events, args.customers))
            processor = await _processor(
                bootstrap, redis, _touchpoints(args.events, args.customers)
            )
            used = await redis.info("memory")
        finally:
            await redis.aclose()
    result = {
        "events": args.events,
        "customers": args.customers,
        "raw_pipelined_hincrby_ops_per_s": round(raw),
        "memory_writer_events_per_s": round(writer),
        "stream_processor_events_per_s": round(processor),
        "goal_events_per_s": 10_000,
        "redis_used_memory_bytes": used["used_memory"],
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
