"""The raw limits of design.md §5, measured on the same servers in the same run.

Each is the library alone, configured as enishi configures it, doing the simplest version
of what the hot path does: produce, consume, pipelined Redis writes. The project's
figures are reported as ratios to these.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from enishi import kafka, keys
from enishi.config import CommonSettings

VALUE_BYTES = 200
LINGER_MS = 5
_KEYS = [f"c-{i}".encode() for i in range(10_000)]


async def produce(bootstrap: str, count: int, partitions: int, *, batches: bool = False) -> float:
    """Messages/s of aiokafka produce, 200-byte values, linger 5 ms, until all acked.

    `batches=False` is design.md §5's figure: one `send()` per message. `batches=True`
    builds one record batch per partition per 500 messages (`create_batch`/`send_batch`),
    what enishi's publisher does: the ceiling of that technique.
    """
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    await kafka.ensure_topics(settings, [topic], partitions=partitions)
    producer = kafka.producer(settings, linger_ms=LINGER_MS)
    await producer.start()
    try:
        value = os.urandom(VALUE_BYTES)
        await (await producer.send(topic, value=value, key=_KEYS[0]))  # connect, metadata
        started = time.perf_counter()
        if batches:
            pending = []
            for offset in range(0, count, 500):
                for partition in range(partitions):
                    batch = producer.create_batch()
                    for i in range(offset + partition, min(offset + 500, count), partitions):
                        batch.append(key=_KEYS[i % len(_KEYS)], value=value, timestamp=None)
                    batch.close()
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
        else:
            pending = [
                await producer.send(topic, value=value, key=_KEYS[i % len(_KEYS)])
                for i in range(count)
            ]
        await asyncio.gather(*pending)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def consume(bootstrap: str, count: int, partitions: int) -> float:
    """Messages/s of an aiokafka consumer reading `count` 200-byte records already there."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    await kafka.ensure_topics(settings, [topic], partitions=partitions)
    producer = kafka.producer(settings, linger_ms=LINGER_MS)
    await producer.start()
    try:
        value = os.urandom(VALUE_BYTES)
        pending = [
            await producer.send(topic, value=value, key=_KEYS[i % len(_KEYS)]) for i in range(count)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            seen += sum(len(records) for records in batches.values())
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def redis_hincrby(redis: Redis, ops: int) -> float:
    """Ops/s of HINCRBY through redis-py asyncio, pipelined 1,000 per round trip."""
    key = keys.customer("bench-raw", keys.COUNTERS)
    started = time.perf_counter()
    for offset in range(0, ops, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, ops - offset)):
                pipe.hincrby(key, "n", 1)
            await pipe.execute()
    return ops / (time.perf_counter() - started)
