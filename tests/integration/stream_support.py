"""Helpers for the stream processor's integration tests: topics, producing, a running processor."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from enishi import kafka, topics
from enishi.config import CommonSettings
from enishi.memory import model
from enishi.memory.writer import MemoryWriter
from enishi.v1 import touchpoint_pb2
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import AppliedBatch, BatchHook
from tests.polling import eventually as eventually  # re-exported for the stream tests


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def new_topic(bootstrap: str) -> str:
    """A fresh touchpoints-like topic and its dead-letter topic."""
    topic = unique("touchpoints-test")
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    await kafka.ensure_topics(settings, [topic, topics.dlq(topic)], partitions=2)
    return topic


def event(
    customer_id: str,
    name: str = "page.viewed",
    *,
    at: datetime | None = None,
    event_id: str | None = None,
    kind: touchpoint_pb2.TouchpointKind.ValueType = touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
    props: dict[str, Any] | None = None,
) -> touchpoint_pb2.Touchpoint:
    """A touchpoint as ingest would put it on the topic."""
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id=event_id or unique("ev"), customer_id=customer_id, name=name, kind=kind
    )
    moment = at or datetime.now(UTC)
    touchpoint.occurred_at.CopyFrom(model.from_ms(model.datetime_ms(moment)))
    touchpoint.received_at.CopyFrom(touchpoint.occurred_at)
    if props:
        touchpoint.props.update(props)
    return touchpoint


async def produce(
    bootstrap: str,
    topic: str,
    touchpoints: Iterable[touchpoint_pb2.Touchpoint | tuple[bytes | None, bytes]],
) -> None:
    """Produce touchpoints keyed by customer id (or raw (key, value) pairs), in order."""
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap))
    await producer.start()
    try:
        for item in touchpoints:
            if isinstance(item, tuple):
                key, value = item
            else:
                key, value = item.customer_id.encode(), item.SerializeToString()
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


class RecordingHook:
    """Keeps every batch the processor hands to its hook."""

    def __init__(self) -> None:
        self.batches: list[AppliedBatch] = []

    async def on_applied(self, batch: AppliedBatch) -> None:
        self.batches.append(batch)


@contextlib.asynccontextmanager
async def running_processor(
    bootstrap: str,
    redis: Redis,
    topic: str,
    *,
    hook: BatchHook | None = None,
    retention: model.Retention | None = None,
) -> AsyncIterator[None]:
    """The stream processor consuming `topic` in this process, with its own group."""
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    consumer = consumer_for(settings, topic, unique("group"), batch_max=500)
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap))
    await producer.start()
    await consumer.start()
    processor = StreamProcessor(MemoryWriter(redis, retention), producer, hook=hook)
    task = asyncio.create_task(consume(consumer, processor, batch_max=500, batch_wait_ms=50))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
