"""Stream processing throughput: touchpoints → customer memory in Redis.

Three figures, each on fresh customers so nothing is a duplicate:
- the memory writer alone (plan + apply, 2,000-event batches) in the worst case, every
  event of a batch for a different customer (one script call per event);
- the same with 10 events per customer per batch (one call per 10 events);
- the whole processor, `services.stream.app.consume`: Kafka poll → decode → plan → Redis
  → hook → commit, with 2,000-record polls from 4 partitions (about one event per
  customer per batch).
Then the Redis memory the processor's customers take (`MEMORY USAGE` of every key of a
sample of them), per customer and per key family. `python -m bench.bench_stream` runs this
benchmark and its raw limits alone; `python -m bench` runs everything. It never asserts a
time.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from bench.consumer import assigned
from enishi import kafka, keys, topics
from enishi.config import CommonSettings
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.writer import MemoryWriter
from enishi.v1 import touchpoint_pb2
from services.stream.app import StreamProcessor, consume
from services.stream.hooks import AppliedBatch

BATCH = 2000


def touchpoints(count: int, customers: int, *, group: int = 1) -> list[touchpoint_pb2.Touchpoint]:
    """`count` touchpoints of a new run: event i is for customer (i // group) % customers;
    every tenth an order."""
    run = uuid.uuid4().hex[:8]
    now = model.from_ms(model.datetime_ms(datetime.now(UTC)))
    result = []
    for index in range(count):
        touchpoint = touchpoint_pb2.Touchpoint(
            event_id=f"{run}-{index}",
            customer_id=f"bench-{run}-{(index // group) % customers}",
            name="order.completed" if index % 10 == 0 else "page.viewed",
            kind=touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
            source="bench",
            channel="web",
        )
        touchpoint.occurred_at.CopyFrom(now)
        touchpoint.props.update({"amount": 1200, "currency": "JPY", "sku": f"S{index % 50}"})
        result.append(touchpoint)
    return result


async def writer(redis: Redis, batch: list[touchpoint_pb2.Touchpoint]) -> float:
    """Events/s of plan + `MemoryWriter.apply`, `BATCH` touchpoints at a time."""
    memory = MemoryWriter(redis)
    now_ms = model.datetime_ms(datetime.now(UTC))
    started = time.perf_counter()
    for offset in range(0, len(batch), BATCH):
        await memory.apply([plan(tp, now_ms=now_ms) for tp in batch[offset : offset + BATCH]])
    return len(batch) / (time.perf_counter() - started)


# Every per-customer key family: the memory, the journey bookkeeping, the identity index.
# (The send caps' keys are per local day and week and expire; they are not counted.)
CUSTOMER_FAMILIES = (*keys.MEMORY_PARTS, keys.AWAITS, keys.ENROLLMENTS, keys.CONDITIONS)
IDENTITIES = "ids"


@dataclass(frozen=True)
class CustomerBytes:
    """`MEMORY USAGE` (every element counted) of a sample of customers' keys."""

    customers: int
    mean: float
    p99: float
    families: dict[str, float]
    """Key family -> mean bytes per customer (families no sampled customer has: left out)."""


async def customer_bytes(redis: Redis, customer_ids: list[str]) -> CustomerBytes:
    """Bytes per customer over every key family of these customers."""
    names = [*CUSTOMER_FAMILIES, IDENTITIES]
    async with redis.pipeline(transaction=False) as pipe:
        for customer_id in customer_ids:
            for part in CUSTOMER_FAMILIES:
                pipe.memory_usage(keys.customer(customer_id, part), samples=0)
            pipe.memory_usage(keys.identities(customer_id), samples=0)
        sizes = [size or 0 for size in await pipe.execute()]
    per_customer = [sum(sizes[n : n + len(names)]) for n in range(0, len(sizes), len(names))]
    families = {
        name: sum(sizes[i :: len(names)]) / len(customer_ids) for i, name in enumerate(names)
    }
    return CustomerBytes(
        customers=len(customer_ids),
        mean=statistics.fmean(per_customer),
        p99=_p99(per_customer),
        families={name: round(size, 1) for name, size in families.items() if size},
    )


def _p99(values: list[int]) -> float:
    if len(values) < 2:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class _Counter:
    """Counts applied touchpoints through the processor's batch hook."""

    def __init__(self) -> None:
        self.applied = 0

    async def on_applied(self, batch: AppliedBatch) -> None:
        self.applied += len(batch.applied)


async def processor(
    bootstrap: str, redis: Redis, batch: list[touchpoint_pb2.Touchpoint], partitions: int
) -> float:
    """Events/s through the whole consume loop, from the first poll to the last applied."""
    topic = f"bench-touchpoints-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    await kafka.ensure_topics(settings, [topic, topics.dlq(topic)], partitions=partitions)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, value=tp.SerializeToString(), key=tp.customer_id.encode())
            for tp in batch
        ]
        await asyncio.gather(*deliveries)
        consumer = await assigned(bootstrap, topic, partitions, batch_max=BATCH)
        try:
            counter = _Counter()
            stream = StreamProcessor(MemoryWriter(redis), producer, hook=counter)
            started = time.perf_counter()
            task = asyncio.create_task(consume(consumer, stream, batch_max=BATCH, batch_wait_ms=20))
            while counter.applied < len(batch) and not task.done():
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(0.3)  # let the last batch's commit finish before stopping
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if counter.applied < len(batch):
                raise RuntimeError(f"processor applied {counter.applied} of {len(batch)}")
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return len(batch) / elapsed


def main() -> None:
    """`python -m bench.bench_stream`: `python -m bench --only stream`."""
    from bench.__main__ import main as run_all

    run_all([*sys.argv[1:], "--only", "stream"])


if __name__ == "__main__":
    main()
