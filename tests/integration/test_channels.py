"""The channel framework on real Kafka and Redis against the in-process provider sandbox:
exactly one delivery per dispatch id, retries that honour the provider, receipts with the why."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi import dead_letters, topics
from enishi.channels import line
from enishi.channels.consumer import ChannelProcessor
from enishi.channels.email import SmtpSender
from enishi.channels.line import LinePushSender
from enishi.channels.push import FcmSender, collapse_id
from enishi.channels.ratelimit import TokenBucket
from enishi.channels.sms import HttpSmsSender
from enishi.config import EmailSettings, LineSettings, PushSettings, SmsSettings
from enishi.v1 import dispatch_pb2, touchpoint_pb2
from services.sandbox.app import Sandbox
from services.sandbox.faults import Fault
from tests.conftest import LocalServers
from tests.integration.channels_support import (
    channel_settings,
    dispatch,
    eventually,
    new_dispatch_topic,
    produce,
    read_topic,
    receipts,
    record,
    running_channel,
    running_sandbox,
    unique,
)


@pytest_asyncio.fixture(scope="module")
async def sandbox(servers: LocalServers) -> AsyncIterator[Sandbox]:
    async with running_sandbox(servers) as running:
        yield running


def email_settings(servers: LocalServers, sandbox: Sandbox, topic: str) -> EmailSettings:
    return channel_settings(
        EmailSettings,
        servers,
        channel_topic=topic,
        channel_group_id=unique("group"),
        email_smtp_host="127.0.0.1",
        email_smtp_port=sandbox.smtp_port,
    )


def line_settings(servers: LocalServers, sandbox: Sandbox, **values: object) -> LineSettings:
    return channel_settings(
        LineSettings, servers, line_api_url=f"{sandbox.http_url}/line", **values
    )


async def test_an_email_dispatch_is_delivered_once_as_text_and_html_and_its_receipt_carries_the_why(
    servers: LocalServers, sandbox: Sandbox
) -> None:
    topic = await new_dispatch_topic(servers.kafka_bootstrap, "email")
    event = dispatch("email")
    await produce(
        servers.kafka_bootstrap, topic, [(event.customer_id.encode(), event.SerializeToString())]
    )
    async with running_channel(
        "email",
        email_settings(servers, sandbox, topic),
        SmtpSender(email_settings(servers, sandbox, topic)),
    ):

        async def receipt_arrived() -> bool:
            return bool(await receipts(servers.kafka_bootstrap, {event.customer_id}))

        await eventually(receipt_arrived)
    [entry] = await sandbox.ledger.entries(provider="smtp", to=event.address)
    request = entry["request"]
    assert request["content_type"] == "multipart/alternative"
    assert request["parts"] == ["text/plain", "text/html"]
    assert request["text"].strip() == event.email.text
    assert "<b>first</b>" in request["html"]
    assert request["list_unsubscribe"] == event.email.list_unsubscribe
    assert request["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    assert request["dispatch_id"] == event.dispatch_id
    assert request["subject"] == event.email.subject

    [sent] = await receipts(servers.kafka_bootstrap, {event.customer_id})
    assert sent.name == "message.sent"
    assert sent.kind == touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE
    assert sent.customer_id == event.customer_id
    assert sent.source == "enishi.channel.email"
    assert sent.receipt.dispatch_id == event.dispatch_id
    assert sent.receipt.status == dispatch_pb2.DELIVERY_STATUS_SENT
    assert sent.receipt.reason == event.reason
    assert sent.receipt.provider == "smtp"
    assert sent.receipt.provider_message_id == request["message_id"]
    assert sent.receipt.attempts == 1


async def test_the_same_dispatch_produced_twice_is_delivered_once(
    servers: LocalServers, sandbox: Sandbox
) -> None:
    topic = await new_dispatch_topic(servers.kafka_bootstrap, "email")
    event = dispatch("email")
    key, value = event.customer_id.encode(), event.SerializeToString()
    # A later dispatch to the same customer (same partition, so consumed after both copies)
    # tells when the copies are behind us.
    sentinel = dispatch("email", customer_id=event.customer_id)
    settings = email_settings(servers, sandbox, topic)
    await produce(servers.kafka_bootstrap, topic, [(key, value), (key, value)])
    async with running_channel("email", settings, SmtpSender(settings)):

        async def first_sent() -> bool:
            return len(await sandbox.ledger.entries(to=event.address)) == 1

        await eventually(first_sent)
        # A third copy, in a later batch: found `done` in Redis, not sent again.
        await produce(
            servers.kafka_bootstrap,
            topic,
            [(key, value), (key, sentinel.SerializeToString())],
        )

        async def sentinel_sent() -> bool:
            return len(await sandbox.ledger.entries(to=sentinel.address)) == 1

        await eventually(sentinel_sent)
    assert len(await sandbox.ledger.entries(to=event.address)) == 1
    sent = [
        r
        for r in await receipts(servers.kafka_bootstrap, {event.customer_id})
        if r.receipt.dispatch_id == event.dispatch_id
    ]
    # Re-published for the copy, under the same event id: one event to the stream processor.
    assert len({r.event_id for r in sent}) == 1
    assert {r.name for r in sent} == {"message.sent"}


async def test_a_provider_answering_5xx_twice_then_succeeding_delivers_once_with_the_retry_key(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("line")
    sandbox.faults.add(Fault(provider="line", status=503, times=2, to=event.address))
    settings = line_settings(servers, sandbox)
    sender = LinePushSender(settings)
    try:
        finished = await ChannelProcessor("line", sender, redis, producer, settings).deliver(event)
    finally:
        await sender.aclose()
    assert finished.receipt.name == "message.sent"
    assert finished.receipt.receipt.attempts == 3
    [entry] = await sandbox.ledger.entries(provider="line", to=event.address)
    assert entry["idempotency_key"] == line.retry_key(event.dispatch_id)
    assert str(uuid.UUID(entry["idempotency_key"])) == entry["idempotency_key"]
    assert finished.receipt.receipt.provider_message_id == entry["message_id"]


async def test_a_429_retry_after_is_honoured_before_the_next_attempt(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("sms")
    fault = sandbox.faults.add(
        Fault(provider="sms", status=429, retry_after=1.0, times=1, to=event.address)
    )
    settings = channel_settings(SmsSettings, servers, sms_api_url=f"{sandbox.http_url}/sms")
    sender = HttpSmsSender(settings)
    try:
        finished = await ChannelProcessor("sms", sender, redis, producer, settings).deliver(event)
    finally:
        await sender.aclose()
    assert finished.receipt.name == "message.sent"
    assert finished.receipt.receipt.attempts == 2
    [entry] = await sandbox.ledger.entries(provider="sms", to=event.address)
    delivered_at = datetime.fromisoformat(entry["at"]).timestamp()
    # Without Retry-After the backoff here is at most 0.05 s.
    assert delivered_at - fault.last_hit_at >= 0.95
    assert entry["idempotency_key"] == event.dispatch_id
    assert entry["request"] == {"to": event.address, "from": "ENISHI", "body": event.sms.text}


async def test_a_permanent_4xx_becomes_message_failed_and_a_dead_letter_with_its_reason(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    topic = await new_dispatch_topic(servers.kafka_bootstrap, "line")
    event = dispatch("line")
    sandbox.faults.add(Fault(provider="line", status=400, times=1, to=event.address))
    settings = line_settings(servers, sandbox)
    sender = LinePushSender(settings)
    processor = ChannelProcessor("line", sender, redis, producer, settings)
    try:
        outcome = await processor.process([record(topic, event, offset=7)])
    finally:
        await sender.aclose()
    assert (outcome.sent, outcome.failed) == (0, 1)
    assert await sandbox.ledger.entries(to=event.address) == []
    [failed] = await receipts(servers.kafka_bootstrap, {event.customer_id})
    assert failed.name == "message.failed"
    assert failed.kind == touchpoint_pb2.TOUCHPOINT_KIND_RECEIPT
    assert failed.receipt.error_code == "http_400"
    assert failed.receipt.permanent is True
    assert failed.receipt.attempts == 1
    assert failed.receipt.reason == event.reason
    [letter] = await read_topic(servers.kafka_bootstrap, topics.dlq(topic))
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers[dead_letters.REASON_HEADER].startswith("line: permanent failure: http_400")
    assert headers[dead_letters.SOURCE_TOPIC_HEADER] == topic
    assert headers[dead_letters.SOURCE_OFFSET_HEADER] == "7"
    assert letter.value == event.SerializeToString()
    assert letter.key == event.customer_id.encode()


async def test_a_reply_lost_after_the_provider_accepted_is_retried_under_the_same_key_and_sent_once(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("line")
    sandbox.faults.add(Fault(provider="line", kind="lost_reply", seconds=1.0, to=event.address))
    settings = line_settings(servers, sandbox, channel_send_timeout_seconds=0.3)
    sender = LinePushSender(settings)
    try:
        finished = await ChannelProcessor("line", sender, redis, producer, settings).deliver(event)
    finally:
        await sender.aclose()
    assert finished.receipt.name == "message.sent"
    entries = await sandbox.ledger.entries(to=event.address)
    assert [e["duplicate"] for e in entries] == [False, True]
    assert finished.receipt.receipt.provider_message_id == entries[0]["message_id"]


async def test_the_rate_limit_is_shared_by_two_instances(
    servers: LocalServers, sandbox: Sandbox, producer: AIOKafkaProducer
) -> None:
    bucket, rate, per_instance = unique("bucket"), 5.0, 6
    settings = channel_settings(SmsSettings, servers, sms_api_url=f"{sandbox.http_url}/sms")
    instances = []
    for _ in range(2):
        client = Redis.from_url(servers.redis_url)
        sender = HttpSmsSender(settings)
        limiter = TokenBucket(client, bucket, rate=rate, burst=1)
        instances.append(
            (
                client,
                sender,
                ChannelProcessor("sms", sender, client, producer, settings, limiter=limiter),
            )
        )
    events = [[dispatch("sms") for _ in range(per_instance)] for _ in instances]
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(
                processor.process([record("t", e, i) for i, e in enumerate(batch)])
                for (_, _, processor), batch in zip(instances, events, strict=True)
            )
        )
    finally:
        for client, sender, _ in instances:
            await sender.aclose()
            await client.aclose()
    elapsed = time.monotonic() - started
    # 12 calls at 5/s with a bucket of 1: 11 waits of 0.2 s. Two private buckets: ~1 s.
    assert elapsed >= 2.0
    for batch in events:
        for event in batch:
            assert len(await sandbox.ledger.entries(to=event.address)) == 1


async def test_a_push_dispatch_goes_out_in_the_fcm_v1_shape(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("push")
    settings = channel_settings(
        PushSettings, servers, push_api_url=f"{sandbox.http_url}/fcm", push_project_id="shop"
    )
    sender = FcmSender(settings)
    try:
        finished = await ChannelProcessor("push", sender, redis, producer, settings).deliver(event)
    finally:
        await sender.aclose()
    [entry] = await sandbox.ledger.entries(provider="fcm", to=event.address)
    message = entry["request"]
    assert message["notification"] == {"title": event.push.title, "body": event.push.body}
    assert message["data"] == {
        "deep_link": "shop://orders/1",
        "enishi_dispatch_id": event.dispatch_id,
    }
    assert message["android"]["collapse_key"] == collapse_id(event.dispatch_id)
    assert finished.receipt.receipt.provider_message_id.startswith("projects/shop/messages/")


async def test_an_expired_dispatch_is_failed_without_reaching_the_provider(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("line")
    event.expires_at.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    settings = line_settings(servers, sandbox)
    sender = LinePushSender(settings)
    try:
        finished = await ChannelProcessor("line", sender, redis, producer, settings).deliver(event)
    finally:
        await sender.aclose()
    assert finished.receipt.name == "message.failed"
    assert finished.receipt.receipt.error_code == "expired"
    assert finished.receipt.receipt.permanent is True
    assert finished.dead_letter_reason == ""
    assert await sandbox.ledger.entries(to=event.address) == []
