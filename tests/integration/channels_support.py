"""Helpers of the channel tests: dispatch records, an in-process sandbox, reading receipts back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.struct_pb2 import Struct
from redis.asyncio import Redis

from enishi import kafka, topics
from enishi.channels.consumer import run_channel
from enishi.channels.protocol import ChannelSender
from enishi.config import ChannelSettings, CommonSettings, EmailSettings, SandboxSettings
from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2
from services.sandbox.app import Sandbox
from tests.conftest import LocalServers
from tests.polling import eventually as eventually  # re-exported for the channel tests

UNSUBSCRIBE_SECRET = "integration-test-unsubscribe-secret-0123456789"
CHANNELS = {
    "email": channel_pb2.CHANNEL_EMAIL,
    "line": channel_pb2.CHANNEL_LINE,
    "sms": channel_pb2.CHANNEL_SMS,
    "push": channel_pb2.CHANNEL_PUSH,
}


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def line_user() -> str:
    """A fresh LINE user id (U + 32 hex digits)."""
    return "U" + uuid.uuid4().hex


def phone() -> str:
    """A fresh E.164 number."""
    return "+8190" + str(uuid.uuid4().int)[:8]


def address_for(channel: str) -> str:
    if channel == "email":
        return f"{unique('to')}@example.com"
    if channel == "line":
        return line_user()
    if channel == "sms":
        return phone()
    return unique("device-token")


def dispatch(
    channel: str,
    *,
    customer_id: str | None = None,
    address: str | None = None,
    dispatch_id: str | None = None,
) -> dispatch_pb2.DispatchEvent:
    """A valid dispatch for `channel`, with its why and believable content."""
    event = dispatch_pb2.DispatchEvent(
        dispatch_id=dispatch_id or "d_" + uuid.uuid4().hex,
        channel=CHANNELS[channel],
        customer_id=customer_id or unique("cust"),
        address=address or address_for(channel),
        locale="ja-JP",
        reason=dispatch_pb2.DispatchReason(
            journey_id="f2-second-purchase",
            journey_version=3,
            step_id="thanks",
            trigger_event_id="01J0TRIGGER",
            designer="hanako",
            workflow_id="journey:f2-second-purchase:c1",
            template_id="thanks_first_order",
        ),
    )
    event.created_at.GetCurrentTime()
    if channel == "email":
        event.email.subject = "ご購入ありがとうございます"
        event.email.text = "Thank you for your first order."
        event.email.html = "<p>Thank you for your <b>first</b> order.</p>"
        event.email.list_unsubscribe = "<https://shop.example/u/abc>"
        event.email.list_unsubscribe_one_click = True
    elif channel == "line":
        message = Struct()
        message.update({"type": "text", "text": "ご購入ありがとうございます"})
        event.line.messages.append(message)
    elif channel == "sms":
        event.sms.text = "Thanks for your order"
    else:
        event.push.title = "Thanks"
        event.push.body = "For your first order"
        event.push.data["deep_link"] = "shop://orders/1"
    return event


@dataclass(frozen=True)
class Record:
    """A consumed record as the processor sees it (aiokafka's ConsumerRecord shape)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


def record(topic: str, event: dispatch_pb2.DispatchEvent, offset: int = 0) -> Record:
    return Record(topic, 0, offset, event.customer_id.encode(), event.SerializeToString())


async def new_dispatch_topic(bootstrap: str, channel: str) -> str:
    """A fresh `dispatch.<channel>`-like topic and its dead-letter topic."""
    topic = unique(f"dispatch-{channel}-test")
    settings = CommonSettings(kafka_bootstrap=bootstrap)
    await kafka.ensure_topics(settings, [topic, topics.dlq(topic)], partitions=2)
    return topic


async def produce(bootstrap: str, topic: str, values: Sequence[tuple[bytes, bytes]]) -> None:
    """Produce (key, value) records and wait for the acks."""
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap))
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` now (all partitions, from the beginning)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Any] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for records in batches.values():
                found += records
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return found
    finally:
        await consumer.stop()


async def receipts(bootstrap: str, customer_ids: set[str]) -> list[touchpoint_pb2.Touchpoint]:
    """The receipt touchpoints on `touchpoints` about these customers, in topic order."""
    found = []
    for rec in await read_topic(bootstrap, topics.TOUCHPOINTS):
        if rec.key is None or rec.key.decode() not in customer_ids:
            continue
        touchpoint = touchpoint_pb2.Touchpoint.FromString(rec.value)
        if touchpoint.WhichOneof("detail") == "receipt":
            found.append(touchpoint)
    return found


@contextlib.asynccontextmanager
async def running_sandbox(servers: LocalServers, **values: Any) -> AsyncIterator[Sandbox]:
    """The provider sandbox in this process, on free ports."""
    settings = SandboxSettings(
        **{
            "redis_url": servers.redis_url,
            "kafka_bootstrap": servers.kafka_bootstrap,
            "sandbox_smtp_port": 0,
            "sandbox_http_port": 0,
            **values,
        }
    )
    redis = Redis.from_url(servers.redis_url)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        async with Sandbox(settings, redis, producer) as sandbox:
            yield sandbox
    finally:
        await producer.stop()
        await redis.aclose()


@contextlib.asynccontextmanager
async def running_channel(
    channel: str, settings: ChannelSettings, sender: ChannelSender
) -> AsyncIterator[None]:
    """`run_channel` in a task, cancelled on exit."""
    task = asyncio.create_task(run_channel(channel, settings, sender))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


S = TypeVar("S", bound=ChannelSettings)


def channel_settings(cls: type[S], servers: LocalServers, **values: Any) -> S:
    """Settings of a channel service for tests: local servers, fast retries, no metrics."""
    defaults: dict[str, Any] = {
        "kafka_bootstrap": servers.kafka_bootstrap,
        "redis_url": servers.redis_url,
        "metrics_port": 0,
        "channel_retry_base_seconds": 0.05,
        "channel_retry_max_seconds": 0.5,
        "channel_batch_wait_ms": 50,
        "channel_send_timeout_seconds": 5.0,
    }
    if issubclass(cls, EmailSettings):
        defaults["unsubscribe_secret"] = UNSUBSCRIBE_SECRET
    defaults.update(values)
    return cls(**defaults)
