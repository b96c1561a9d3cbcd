"""Killing the stream processor mid-stream (SIGKILL) and restarting it loses and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from redis.asyncio import Redis

from enishi import kafka, keys
from enishi.config import CommonSettings
from enishi.memory import model
from enishi.memory.reader import MemoryReader
from tests.conftest import LocalServers
from tests.integration.stream_support import event, eventually, new_topic, unique

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = 10
EVENTS_PER_CUSTOMER = 600
TIMELINE_MAX = 50


async def _start(servers: LocalServers, topic: str, group: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "ENISHI_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
        "ENISHI_REDIS_URL": servers.redis_url,
        "ENISHI_STREAM_TOPIC": topic,
        "ENISHI_STREAM_GROUP_ID": group,
        "ENISHI_STREAM_BATCH_MAX": "50",  # small batches, so the kill lands mid-stream
        "ENISHI_MEMORY_TIMELINE_MAX": str(TIMELINE_MAX),
        "ENISHI_METRICS_PORT": "0",
        "ENISHI_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.stream", cwd=REPO, env=env
    )


async def _applied(redis: Redis, customers: list[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for customer in customers:
            pipe.hget(keys.customer(customer, keys.COUNTERS), model.EVENTS_COUNT)
        counts = await pipe.execute()
    return sum(int(count or 0) for count in counts)


async def test_killing_the_processor_mid_stream_loses_nothing_and_double_counts_nothing(
    servers: LocalServers, redis: Redis
) -> None:
    topic, group = await new_topic(servers.kafka_bootstrap), unique("group")
    customers = [unique("crash") for _ in range(CUSTOMERS)]
    total = CUSTOMERS * EVENTS_PER_CUSTOMER
    producer = kafka.producer(CommonSettings(kafka_bootstrap=servers.kafka_bootstrap))
    await producer.start()
    try:
        deliveries = []
        for index in range(EVENTS_PER_CUSTOMER):
            for customer in customers:
                touchpoint = event(customer, "page.viewed", props={"n": index})
                deliveries.append(
                    await producer.send(
                        topic, value=touchpoint.SerializeToString(), key=customer.encode()
                    )
                )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()

    first = await _start(servers, topic, group)
    try:

        async def some_applied() -> bool:
            return await _applied(redis, customers) > 0

        await eventually(some_applied, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    applied_at_kill = await _applied(redis, customers)
    assert applied_at_kill < total, "the kill came too late to prove anything"

    second = await _start(servers, topic, group)
    try:

        async def all_applied() -> bool:
            return await _applied(redis, customers) >= total

        await eventually(all_applied, timeout=120)
        await asyncio.sleep(1.0)  # a double count would show up after the last batch
    finally:
        second.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(second.wait(), timeout=30)
    assert exit_code == 0

    reader = MemoryReader(redis)
    for customer in customers:
        view = await reader.customer(customer, timeline_limit=TIMELINE_MAX)
        assert view is not None
        assert view.counters.events_count == EVENTS_PER_CUSTOMER
        folded = sum(aggregate.count for aggregate in view.timeline_aggregates)
        assert len(view.timeline) == TIMELINE_MAX
        assert folded + len(view.timeline) == EVENTS_PER_CUSTOMER
