"""The send activity on real Valkey and Tansu: dispatches with their why, atomic caps,
idempotent retries, quiet hours and skips recorded on `touchpoints`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf import json_format
from redis.asyncio import Redis
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from enishi import kafka, keys, topics
from enishi.config import CommonSettings, SendingPolicySettings
from enishi.journeys import Journey
from enishi.journeys.model import LineContent, Template
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.writer import MemoryWriter
from enishi.v1 import channel_pb2, consent_pb2, dispatch_pb2, touchpoint_pb2
from tests.conftest import LocalServers
from tests.integration.stream_support import event, unique
from tests.sending_support import journey, request
from workflows.activities.sending import SendActivities
from workflows.contract import SendOutcome, SendRequest, dispatch_id, workflow_id

Kind = touchpoint_pb2.TouchpointKind
NOON_TOKYO = "2025-03-10T03:00:00+00:00"  # Monday 12:00 in Tokyo
LINE_ID = "U" + "5" * 32


@pytest_asyncio.fixture
async def producer(servers: LocalServers) -> AsyncIterator[AIOKafkaProducer]:
    client = kafka.producer(CommonSettings(kafka_bootstrap=servers.kafka_bootstrap))
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def _activities(
    redis: Redis,
    producer: AIOKafkaProducer,
    servers: LocalServers,
    *,
    loaded: Journey | None = None,
    **settings: Any,
) -> SendActivities:
    async def load(journey_id: str, version: int) -> Journey:
        assert (journey_id, version) == ("sending-test", 1)
        return loaded or journey()

    policy = SendingPolicySettings(
        kafka_bootstrap=servers.kafka_bootstrap, redis_url=servers.redis_url, **settings
    )
    return SendActivities(redis, producer, load, policy)


async def _send(activities: SendActivities, req: SendRequest) -> SendOutcome:
    result: SendOutcome = await ActivityEnvironment().run(activities.send, req)
    return result


async def _remember(redis: Redis, customer_id: str, **prefs: Any) -> None:
    """Seed customer memory the way the stream processor writes it."""
    at = datetime(2025, 3, 1, tzinfo=UTC)
    identify = event(customer_id, "customer.identified", at=at, kind=Kind.TOUCHPOINT_KIND_IDENTIFY)
    identify.identify.identity.email = f"{customer_id}@example.jp"
    identify.identify.identity.line_user_id = LINE_ID
    identify.identify.traits.update({"first_name": "花子", "last_name": "佐藤"})
    consent = event(customer_id, "consent.changed", at=at, kind=Kind.TOUCHPOINT_KIND_CONSENT)
    consent.consent.consents.add(
        channel=channel_pb2.CHANNEL_EMAIL, status=consent_pb2.CONSENT_STATUS_OPTED_IN
    )
    prefs_tp = event(
        customer_id, "preferences.changed", at=at, kind=Kind.TOUCHPOINT_KIND_PREFERENCES
    )
    preferences = prefs_tp.preferences.preferences
    preferences.preferred_channel = prefs.get("preferred", channel_pb2.CHANNEL_LINE)
    preferences.locale = prefs.get("locale", "ja-JP")
    preferences.time_zone = prefs.get("time_zone", "Asia/Tokyo")
    preferences.quiet_hours.start, preferences.quiet_hours.end = prefs.get(
        "quiet", ("21:00", "08:00")
    )
    order = event(
        customer_id,
        "order.completed",
        at=at + timedelta(days=1),
        event_id="ev-trigger",
        props={"order_id": "A-77", "product": "湯呑み", "amount": 2400},
    )
    history = [identify, consent, prefs_tp, order]
    now_ms = model.datetime_ms(datetime(2025, 3, 10, tzinfo=UTC))
    await MemoryWriter(redis).apply([plan(tp, now_ms=now_ms) for tp in history])


async def _records(bootstrap: str, topic: str, key: str) -> list[bytes]:
    """Every value on `topic` keyed `key`, up to the end offsets as of now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches metadata for every topic
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[bytes] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            for records in batch.values():
                found += [r.value for r in records if r.key == key.encode() and r.value]
        return found
    finally:
        await consumer.stop()


async def _dispatches(
    servers: LocalServers, channel: str, customer_id: str
) -> list[dispatch_pb2.DispatchEvent]:
    values = await _records(servers.kafka_bootstrap, topics.dispatch(channel), customer_id)
    return [dispatch_pb2.DispatchEvent.FromString(v) for v in values]


async def _touchpoints(servers: LocalServers, customer_id: str) -> list[touchpoint_pb2.Touchpoint]:
    values = await _records(servers.kafka_bootstrap, topics.TOUCHPOINTS, customer_id)
    return [touchpoint_pb2.Touchpoint.FromString(v) for v in values]


async def test_a_send_lands_on_the_preferred_channel_topic_with_its_why(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("send")
    await _remember(redis, customer)
    req = request(customer, now=NOON_TOKYO)
    outcome = await _send(_activities(redis, producer, servers), req)
    assert outcome == SendOutcome(status="sent", channel="line")
    [sent] = await _dispatches(servers, "line", customer)
    assert sent.dispatch_id == req.dispatch_id
    assert sent.address == LINE_ID
    assert sent.locale == "ja"
    assert json_format.MessageToDict(sent.line.messages[0]) == {
        "type": "text",
        "text": "佐藤 花子様、湯呑みのご購入ありがとうございます！",
    }
    assert sent.reason.journey_id == "sending-test"
    assert sent.reason.journey_version == 1
    assert sent.reason.step_id == "thanks"
    assert sent.reason.trigger_event_id == "ev-trigger"
    assert sent.reason.designer == "crm-team@shop.example"
    assert sent.reason.workflow_id == workflow_id("sending-test", customer)
    assert sent.reason.template_id == "thanks"
    assert sent.created_at.ToDatetime(tzinfo=UTC) == datetime.fromisoformat(NOON_TOKYO)


async def test_twenty_concurrent_sends_with_a_cap_of_three_send_exactly_three(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("caps")
    await _remember(redis, customer)
    activities = _activities(
        redis, producer, servers, sending_cap_day=3, sending_cap_week=0, sending_cap_channel_day=0
    )
    wf = workflow_id("sending-test", customer)
    requests = [
        request(customer, dispatch_id=dispatch_id(wf, 1, "thanks", visit), now=NOON_TOKYO)
        for visit in range(1, 21)
    ]
    outcomes = await asyncio.gather(*(_send(activities, r) for r in requests))
    statuses = [o.status for o in outcomes]
    assert statuses.count("sent") == 3
    assert statuses.count("deferred") == 17
    deferred = next(o for o in outcomes if o.status == "deferred")
    assert deferred.reason == "frequency_cap"
    # The day frees at local midnight, 15:00 UTC; that is inside quiet hours (21:00-08:00
    # Tokyo), so the retry waits for 08:00 Tokyo.
    assert deferred.retry_at == "2025-03-10T23:00:00+00:00"
    assert len(await _dispatches(servers, "line", customer)) == 3


async def test_the_channel_cap_falls_back_to_the_next_eligible_channel(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("chcap")
    await _remember(redis, customer)
    activities = _activities(redis, producer, servers, sending_cap_channel_day=1)
    wf = workflow_id("sending-test", customer)
    first, second, third = [
        await _send(activities, request(customer, dispatch_id=dispatch_id(wf, 1, "thanks", v)))
        for v in (1, 2, 3)
    ]
    assert (first.channel, second.channel) == ("line", "email")
    assert (third.status, third.reason) == ("deferred", "frequency_cap")


async def test_the_same_dispatch_id_twice_counts_once_and_publishes_the_same_event(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("retry")
    await _remember(redis, customer)
    activities = _activities(redis, producer, servers)
    req = request(customer, now=NOON_TOKYO)
    assert (await _send(activities, req)).status == "sent"
    assert (await _send(activities, req)).status == "sent"
    day = await redis.hgetall(keys.cap_day(customer, "2025-03-10"))
    assert day == {b"*": b"1", b"line": b"1"}
    assert await redis.get(keys.cap_week(customer, "2025-W11")) == b"1"
    first, second = await _dispatches(servers, "line", customer)
    assert first.SerializeToString() == second.SerializeToString()


async def test_a_send_without_consent_is_skipped_and_the_timeline_learns_why(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("noconsent")  # nothing remembered: no consent, no address
    req = request(customer, channel="email", fallback=(), now=NOON_TOKYO)
    outcome = await _send(_activities(redis, producer, servers), req)
    assert outcome == SendOutcome(status="skipped", channel="email", reason="no_consent")
    [skip] = await _touchpoints(servers, customer)
    assert skip.kind == Kind.TOUCHPOINT_KIND_SKIP
    assert skip.name == "message.skipped"
    assert skip.skipped.skip_reason == dispatch_pb2.SKIP_REASON_NO_CONSENT
    assert skip.skipped.dispatch_id == req.dispatch_id
    assert skip.skipped.reason.step_id == "thanks"
    assert skip.skipped.reason.designer == "crm-team@shop.example"
    assert await _dispatches(servers, "email", customer) == []


async def test_quiet_hours_defer_to_the_local_morning_or_skip_when_the_step_says_so(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("quiet")
    await _remember(redis, customer)
    activities = _activities(redis, producer, servers)
    late = "2025-03-10T13:30:00+00:00"  # 22:30 in Tokyo
    deferred = await _send(activities, request(customer, now=late))
    assert deferred == SendOutcome(
        status="deferred",
        channel="line",
        reason="quiet_hours",
        retry_at="2025-03-10T23:00:00+00:00",
    )
    skipped = await _send(
        activities,
        request(customer, now=late, on_quiet_hours="skip", step_id="line_note"),
    )
    assert (skipped.status, skipped.reason) == ("skipped", "quiet_hours")
    names = sorted(t.name for t in await _touchpoints(servers, customer))
    assert names == ["message.deferred", "message.skipped"]
    assert await redis.hgetall(keys.cap_day(customer, "2025-03-10")) == {}
    assert await _dispatches(servers, "line", customer) == []


async def test_holdout_is_skipped_and_nothing_is_dispatched(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("holdout")
    await _remember(redis, customer)
    outcome = await _send(
        _activities(redis, producer, servers), request(customer, now=NOON_TOKYO, holdout=True)
    )
    assert (outcome.status, outcome.reason) == ("skipped", "holdout")
    assert await _dispatches(servers, "line", customer) == []
    [skip] = await _touchpoints(servers, customer)
    assert skip.skipped.skip_reason == dispatch_pb2.SKIP_REASON_HOLDOUT


async def test_a_template_error_is_permanent_and_gives_the_cap_back(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("render")
    await _remember(redis, customer)
    broken = journey().model_copy(
        update={
            "templates": {
                **journey().templates,
                "thanks": Template(line={"ja": LineContent(text="{{ 1 / 0 }}")}),
            }
        }
    )
    activities = _activities(redis, producer, servers, loaded=broken)
    with pytest.raises(ApplicationError) as caught:
        await _send(activities, request(customer, now=NOON_TOKYO))
    assert caught.value.non_retryable
    assert "template 'thanks', channel line, locale ja" in str(caught.value)
    day = await redis.hgetall(keys.cap_day(customer, "2025-03-10"))
    assert day.get(b"*") == b"0"
    [skip] = await _touchpoints(servers, customer)
    assert skip.skipped.skip_reason == dispatch_pb2.SKIP_REASON_RENDER_FAILED
