"""The one consume loop: effects first, then offsets; a stop mid-batch finishes the batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from enishi.kafka import consume_batches

TP = TopicPartition("touchpoints", 0)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeConsumer:
    """Hands out one batch, then waits forever; records what was committed."""

    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []
        self._batches = [{TP: [Record(7), Record(8)]}]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self._batches:
            return self._batches.pop()
        await asyncio.Event().wait()
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(offsets)


async def test_a_stop_in_the_middle_of_a_batch_lets_it_finish_and_commit() -> None:
    consumer = FakeConsumer()
    started, release = asyncio.Event(), asyncio.Event()
    processed: list[int] = []

    async def process(records: list[Any]) -> None:
        started.set()
        await release.wait()
        processed.extend(r.offset for r in records)

    loop = asyncio.create_task(
        consume_batches(consumer, process, batch_max=10, batch_wait_ms=1, name="test")
    )
    await started.wait()
    loop.cancel()
    await asyncio.sleep(0.01)
    assert not loop.done(), "the stop must wait for the batch in hand"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert processed == [7, 8]
    assert consumer.committed == [{TP: 9}]


async def test_offsets_are_committed_only_after_the_batch_is_processed() -> None:
    consumer = FakeConsumer()
    seen_commits: list[int] = []

    async def process(records: list[Any]) -> None:
        seen_commits.append(len(consumer.committed))

    loop = asyncio.create_task(
        consume_batches(consumer, process, batch_max=10, batch_wait_ms=1, name="test")
    )
    while not consumer.committed:
        await asyncio.sleep(0.001)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert seen_commits == [0]
    assert consumer.committed == [{TP: 9}]


async def test_a_batch_that_cannot_reach_redis_is_retried_not_fatal() -> None:
    consumer = FakeConsumer()
    attempts: list[list[int]] = []

    async def process(records: list[Any]) -> None:
        attempts.append([r.offset for r in records])
        if len(attempts) < 3:
            raise RedisConnectionError("Connection refused")

    loop = asyncio.create_task(
        consume_batches(consumer, process, batch_max=10, batch_wait_ms=1, name="retry_test")
    )
    while not consumer.committed:
        await asyncio.sleep(0.01)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert attempts == [[7, 8]] * 3
    assert consumer.committed == [{TP: 9}]
    assert (
        REGISTRY.get_sample_value("enishi_consumer_batch_retries_total", {"consumer": "retry_test"})
        == 2.0
    )


async def test_a_batch_that_fails_for_another_reason_ends_the_loop_uncommitted() -> None:
    consumer = FakeConsumer()

    async def process(records: list[Any]) -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await consume_batches(consumer, process, batch_max=10, batch_wait_ms=1, name="test")
    assert consumer.committed == []
