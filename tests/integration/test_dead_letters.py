"""Garbage on every topic an enishi service consumes goes to the topic's dead-letter topic with
its reason, and the service goes on with the next record (design §6, issue #6).

The consumers (every `enishi.kafka.consume_batches` caller): the stream processor on
`touchpoints`, and the channel framework on `dispatch.<channel>` for each of the four channels.
Each test runs the consumer's own loop on a fresh copy of its topic, produces one record of each
kind of garbage and then a valid one, and checks that every garbage record is on `<topic>.dlq`
(original key and value, the reason, the source headers), that the valid record after them was
processed, and that the loop is still running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from google.protobuf.message import DecodeError, Message
from redis.asyncio import Redis

from enishi import dead_letters, kafka, topics
from enishi.channels.email import SmtpSender
from enishi.channels.line import LinePushSender
from enishi.channels.protocol import ChannelSender
from enishi.channels.push import FcmSender
from enishi.channels.sms import HttpSmsSender
from enishi.config import (
    ChannelSettings,
    CommonSettings,
    EmailSettings,
    LineSettings,
    PushSettings,
    SmsSettings,
)
from enishi.memory.reader import MemoryReader
from enishi.v1 import dispatch_pb2, touchpoint_pb2
from services.sandbox.app import Sandbox
from tests.conftest import LocalServers
from tests.integration import channels_support, stream_support
from tests.integration.channels_support import (
    dispatch,
    read_topic,
    running_channel,
    running_sandbox,
)
from tests.integration.stream_support import event, running_processor, unique
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

# aiokafka's default max_request_size: the largest record a producer with defaults can send.
MAX_REQUEST_BYTES = 1024 * 1024
# Not a protobuf of any kind: 0xff starts a varint that never ends.
NOT_PROTOBUF = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage \xff"


@dataclass(frozen=True)
class Garbage:
    """A record the consumer must dead-letter, and how its reason starts."""

    label: str
    key: bytes | None
    value: bytes | None
    reason: str


def truncated(valid: Message) -> bytes:
    """`valid` serialized and cut where it no longer parses (a producer killed mid-write)."""
    whole = valid.SerializeToString()
    for cut in range(len(whole) - 1, 0, -1):
        try:
            type(valid).FromString(whole[:cut])
        except DecodeError:
            return whole[:cut]
    raise AssertionError("every prefix parses")


def as_large_as_allowed(key: bytes) -> bytes:
    """Garbage exactly as large as a producer with default settings lets through: a dead
    letter of it, with its reason headers added, no longer fits in a request."""
    size = MAX_REQUEST_BYTES
    while DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"\xff" * size, []) > (
        MAX_REQUEST_BYTES
    ):
        size -= 1
    return b"\xff" * size


def common_garbage(key: bytes, valid: Message, type_name: str) -> list[Garbage]:
    """The kinds of garbage every consumer meets, whatever its message type."""
    return [
        Garbage("not protobuf", key, NOT_PROTOBUF, f"value: not an {type_name}"),
        Garbage("truncated protobuf", key, truncated(valid), f"value: not an {type_name}"),
        Garbage("huge", key, as_large_as_allowed(key), f"value: not an {type_name}"),
        Garbage("null value", key, None, "value: missing"),
        Garbage("null key", None, valid.SerializeToString(), "key: missing"),
        Garbage("key not UTF-8", b"\xff\xfe", valid.SerializeToString(), "key: not UTF-8"),
    ]


async def dead_letters_of(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The records on `topic`'s dead-letter topic, once there are `count` of them."""

    async def arrived() -> bool:
        return len(await read_topic(bootstrap, topics.dlq(topic))) >= count

    await eventually(arrived, timeout=60)
    return list(await read_topic(bootstrap, topics.dlq(topic)))


def check_dead_letters(letters: Sequence[Any], garbage: Sequence[Garbage], topic: str) -> None:
    """One dead letter per garbage record, in order: its key, its value, its reason."""
    assert len(letters) == len(garbage), [dict(r.headers) for r in letters]
    by_offset = sorted(
        letters, key=lambda r: int(dict(r.headers)[dead_letters.SOURCE_OFFSET_HEADER])
    )
    for letter, sent in zip(by_offset, garbage, strict=True):
        headers = {name: value.decode() for name, value in letter.headers}
        assert headers[dead_letters.REASON_HEADER].startswith(sent.reason), (sent.label, headers)
        assert headers[dead_letters.SOURCE_TOPIC_HEADER] == topic
        assert headers[dead_letters.SOURCE_PARTITION_HEADER] == "0"
        assert letter.key == sent.key, sent.label
        if sent.label == "huge":
            # Too large to go whole with its headers: the first bytes and the original size.
            assert sent.value is not None
            assert headers[dead_letters.TRUNCATED_HEADER] == str(len(sent.value))
            assert letter.value and sent.value.startswith(letter.value)
        else:
            assert letter.value == sent.value, sent.label
            assert dead_letters.TRUNCATED_HEADER not in headers


async def produce_in_order(
    bootstrap: str, topic: str, garbage: Sequence[Garbage], valid: tuple[bytes, bytes]
) -> None:
    """The garbage, then the valid record, all on partition 0 so they are consumed in order
    (their keys differ, so the partitioner would scatter them)."""
    producer = kafka.producer(CommonSettings(kafka_bootstrap=bootstrap))
    await producer.start()
    try:
        for key, value in [*((g.key, g.value) for g in garbage), valid]:
            await producer.send_and_wait(topic, value=value, key=key, partition=0)
    finally:
        await producer.stop()


# -- touchpoints: the stream processor -----------------------------------------------------


def stream_garbage(customer: str) -> list[Garbage]:
    key = customer.encode()
    valid = event(customer)
    no_event_id = event(customer)
    no_event_id.event_id = ""
    no_name = event(customer)
    no_name.name = ""
    no_time = event(customer)
    no_time.ClearField("occurred_at")
    no_time.ClearField("received_at")
    no_detail = event(customer, "customer.identified", kind=touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY)
    # Valid protobuf whose enum values this build does not know (proto3 keeps them).
    unknown_status = event(customer, "message.sent", kind=touchpoint_pb2.TOUCHPOINT_KIND_MESSAGE)
    unknown_status.receipt.dispatch_id = "d-1"
    unknown_status.receipt.status = 77  # type: ignore[assignment]
    unknown_channel = event(
        customer, "consent.changed", kind=touchpoint_pb2.TOUCHPOINT_KIND_CONSENT
    )
    unknown_channel.consent.consents.add(channel=99, status=1)
    far_future = event(customer, "order.completed")
    far_future.occurred_at.seconds = 2**62
    return [
        *common_garbage(key, valid, "enishi.v1.Touchpoint"),
        Garbage("empty value", key, b"", "event_id: missing"),
        Garbage("no event id", key, no_event_id.SerializeToString(), "event_id: missing"),
        Garbage("no name", key, no_name.SerializeToString(), "name: missing"),
        Garbage("no time", key, no_time.SerializeToString(), "occurred_at: missing"),
        Garbage("kind without its detail", key, no_detail.SerializeToString(), "identify: missing"),
        Garbage(
            "another customer's key",
            b"someone-else",
            valid.SerializeToString(),
            "customer_id: differs from the record key",
        ),
        Garbage(
            "unknown delivery status",
            key,
            unknown_status.SerializeToString(),
            "value: cannot be applied",
        ),
        Garbage(
            "unknown consent channel",
            key,
            unknown_channel.SerializeToString(),
            "value: cannot be applied",
        ),
        Garbage("time out of range", key, far_future.SerializeToString(), "occurred_at: out of"),
    ]


async def test_garbage_on_touchpoints_is_dead_lettered_and_the_stream_processor_goes_on(
    servers: LocalServers, redis: Redis
) -> None:
    bootstrap = servers.kafka_bootstrap
    topic = await stream_support.new_topic(bootstrap)
    customer = unique("cust")
    garbage = stream_garbage(customer)
    valid = event(customer, "page.viewed")
    await produce_in_order(
        bootstrap, topic, garbage, (customer.encode(), valid.SerializeToString())
    )

    # The service's loop; leaving the block fails the test if it ended on its own (crashed).
    async with running_processor(bootstrap, redis, topic):

        async def applied() -> bool:
            view = await MemoryReader(redis).customer(customer, timeline_limit=50)
            return view is not None and any(e.event_id == valid.event_id for e in view.timeline)

        await eventually(applied, timeout=60)
        letters = await dead_letters_of(bootstrap, topic, len(garbage))
    check_dead_letters(letters, garbage, topic)
    view = await MemoryReader(redis).customer(customer, timeline_limit=50)
    assert view is not None
    assert [e.event_id for e in view.timeline] == [valid.event_id]
    assert view.counters.events_count == 1


# -- dispatch.<channel>: the channel services ----------------------------------------------


def dispatch_garbage(channel: str, valid: dispatch_pb2.DispatchEvent) -> list[Garbage]:
    key = valid.customer_id.encode()

    def changed(change: Callable[[dispatch_pb2.DispatchEvent], None]) -> bytes:
        copy = dispatch_pb2.DispatchEvent()
        copy.CopyFrom(valid)
        copy.dispatch_id = f"d-{unique(channel)}"
        change(copy)
        return copy.SerializeToString()

    other = "sms" if channel != "sms" else "email"
    wrong_channel = dispatch(other, customer_id=valid.customer_id)
    return [
        *common_garbage(key, valid, "enishi.v1.DispatchEvent"),
        Garbage("empty value", key, b"", "dispatch_id: missing"),
        Garbage(
            "no dispatch id",
            key,
            changed(lambda d: d.ClearField("dispatch_id")),
            "dispatch_id: missing",
        ),
        Garbage(
            "another channel's dispatch",
            key,
            wrong_channel.SerializeToString(),
            "channel: CHANNEL_",
        ),
        Garbage(
            "unknown channel",
            key,
            changed(lambda d: setattr(d, "channel", 42)),
            "channel: unknown value 42",
        ),
        Garbage(
            "no content", key, changed(lambda d: d.ClearField("content")), f"{channel}: missing"
        ),
        Garbage("no address", key, changed(lambda d: d.ClearField("address")), "address: missing"),
        Garbage(
            "another customer's key",
            b"someone-else",
            changed(lambda d: None),
            "customer_id: differs from the record key",
        ),
        Garbage(
            "expiry out of range",
            key,
            changed(lambda d: setattr(d.expires_at, "seconds", 2**62)),
            "expires_at: out of range",
        ),
    ]


def channel_service(
    channel: str, servers: LocalServers, sandbox: Sandbox, topic: str
) -> tuple[ChannelSettings, ChannelSender]:
    """The settings and provider adapter the channel's service wires, on the sandbox."""
    common: dict[str, Any] = {"channel_topic": topic, "channel_group_id": unique("group")}
    if channel == "email":
        email = channels_support.channel_settings(
            EmailSettings,
            servers,
            email_smtp_host="127.0.0.1",
            email_smtp_port=sandbox.smtp_port,
            **common,
        )
        return email, SmtpSender(email)
    if channel == "line":
        line = channels_support.channel_settings(
            LineSettings, servers, line_api_url=f"{sandbox.http_url}/line", **common
        )
        return line, LinePushSender(line)
    if channel == "sms":
        sms = channels_support.channel_settings(
            SmsSettings, servers, sms_api_url=f"{sandbox.http_url}/sms", **common
        )
        return sms, HttpSmsSender(sms)
    push = channels_support.channel_settings(
        PushSettings, servers, push_api_url=f"{sandbox.http_url}/fcm", **common
    )
    return push, FcmSender(push)


@pytest_asyncio.fixture(scope="module")
async def sandbox(servers: LocalServers) -> AsyncIterator[Sandbox]:
    async with running_sandbox(servers) as running:
        yield running


@pytest.mark.parametrize("channel", ["email", "line", "sms", "push"])
async def test_garbage_on_a_dispatch_topic_is_dead_lettered_and_the_channel_service_goes_on(
    servers: LocalServers, sandbox: Sandbox, channel: str
) -> None:
    bootstrap = servers.kafka_bootstrap
    topic = await channels_support.new_dispatch_topic(bootstrap, channel)
    valid = dispatch(channel)
    garbage = dispatch_garbage(channel, valid)
    await produce_in_order(
        bootstrap, topic, garbage, (valid.customer_id.encode(), valid.SerializeToString())
    )
    settings, sender = channel_service(channel, servers, sandbox, topic)
    # The service's loop; leaving the block fails the test if it ended on its own (crashed).
    async with running_channel(channel, settings, sender):

        async def delivered() -> bool:
            return len(await sandbox.ledger.entries(to=valid.address)) == 1

        await eventually(delivered, timeout=60)
        letters = await dead_letters_of(bootstrap, topic, len(garbage))
    check_dead_letters(letters, garbage, topic)
    [receipt] = await channels_support.receipts(bootstrap, {valid.customer_id})
    assert receipt.name == "message.sent"
    assert receipt.receipt.dispatch_id == valid.dispatch_id
