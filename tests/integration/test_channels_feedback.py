"""Provider feedback closes the loop on real Kafka, Valkey and the stream processor: a bounce
or a dead push token makes the channel unreachable in memory and the next send falls back; a
one-click unsubscribe revokes consent and the next email is skipped."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from temporalio.testing import ActivityEnvironment

from enishi import topics
from enishi.channels.consumer import ChannelProcessor
from enishi.channels.email import SmtpSender
from enishi.channels.protocol import ChannelSender
from enishi.channels.push import FcmSender
from enishi.channels.sms import HttpSmsSender
from enishi.channels.unsubscribe import Unsubscribe, UnsubscribeTokens
from enishi.config import (
    EmailSettings,
    PushSettings,
    SendingPolicySettings,
    SmsSettings,
)
from enishi.devstack.ports import free_port
from enishi.journeys import Journey
from enishi.memory import model
from enishi.memory.apply import plan
from enishi.memory.reader import MemoryReader
from enishi.memory.writer import MemoryWriter
from enishi.v1 import channel_pb2, consent_pb2, customer_pb2, dispatch_pb2, touchpoint_pb2
from services.email.unsubscribe import unsubscribe_companion
from services.sandbox.app import Sandbox
from services.sandbox.faults import Fault
from tests.conftest import LocalServers
from tests.integration.channels_support import (
    UNSUBSCRIBE_SECRET,
    channel_settings,
    dispatch,
    eventually,
    new_dispatch_topic,
    read_topic,
    receipts,
    record,
    running_sandbox,
    unique,
)
from tests.integration.stream_support import event, running_processor
from tests.sending_support import journey, request
from workflows.activities.sending import SendActivities
from workflows.contract import SendOutcome

Kind = touchpoint_pb2.TouchpointKind
SEEDED_AT = datetime(2025, 3, 1, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module")
async def sandbox(servers: LocalServers) -> AsyncIterator[Sandbox]:
    async with running_sandbox(servers) as running:
        yield running


@pytest_asyncio.fixture
async def stream(servers: LocalServers, redis: Redis) -> AsyncIterator[None]:
    """The stream processor on the real `touchpoints` topic, where channel services publish."""
    async with running_processor(servers.kafka_bootstrap, redis, topics.TOUCHPOINTS):
        yield


async def _remember(
    redis: Redis,
    customer_id: str,
    *,
    email: str = "",
    phone: str = "",
    push_token: str = "",
    opted_in: tuple[channel_pb2.Channel.ValueType, ...] = (),
    preferred: channel_pb2.Channel.ValueType = channel_pb2.CHANNEL_EMAIL,
    fallback: tuple[channel_pb2.Channel.ValueType, ...] = (),
) -> None:
    """Seed the customer's memory the way the stream processor writes it."""
    identify = event(
        customer_id, "customer.identified", at=SEEDED_AT, kind=Kind.TOUCHPOINT_KIND_IDENTIFY
    )
    identify.identify.identity.email = email
    identify.identify.identity.phone = phone
    if push_token:
        identify.identify.identity.push_tokens.add(token=push_token)
    consent = event(customer_id, "consent.changed", at=SEEDED_AT, kind=Kind.TOUCHPOINT_KIND_CONSENT)
    for channel in opted_in:
        consent.consent.consents.add(channel=channel, status=consent_pb2.CONSENT_STATUS_OPTED_IN)
    prefs = event(
        customer_id, "preferences.changed", at=SEEDED_AT, kind=Kind.TOUCHPOINT_KIND_PREFERENCES
    )
    prefs.preferences.preferences.preferred_channel = preferred
    prefs.preferences.preferences.fallback_channels.extend(fallback)
    prefs.preferences.preferences.time_zone = "Asia/Tokyo"
    history = [identify, prefs, *([consent] if opted_in else [])]
    now_ms = model.datetime_ms(datetime.now(UTC))
    await MemoryWriter(redis).apply([plan(t, now_ms=now_ms) for t in history])


async def _memory(redis: Redis, customer_id: str) -> customer_pb2.Customer:
    view = await MemoryReader(redis).customer(customer_id)
    assert view is not None
    return view


def _reachability(view: customer_pb2.Customer, channel: int) -> tuple[bool, str] | None:
    found = [r for r in view.reachability if r.channel == channel]
    return (found[0].reachable, found[0].reason) if found else None


async def _send(
    redis: Redis, producer: AIOKafkaProducer, servers: LocalServers, **req: Any
) -> SendOutcome:
    """The journey engine's send activity for step `thanks` of the test journey, now."""

    async def load(_journey_id: str, _version: int) -> Journey:
        return journey()

    policy = SendingPolicySettings(
        kafka_bootstrap=servers.kafka_bootstrap, redis_url=servers.redis_url
    )
    activities = SendActivities(redis, producer, load, policy)
    outcome: SendOutcome = await ActivityEnvironment().run(
        activities.send, request(req.pop("customer_id"), now=datetime.now(UTC).isoformat(), **req)
    )
    return outcome


async def _process(
    channel: str,
    sender: ChannelSender,
    settings: Any,
    redis: Redis,
    producer: AIOKafkaProducer,
    servers: LocalServers,
    event_: dispatch_pb2.DispatchEvent,
) -> str:
    """One batch through the channel framework (deliver, publish receipts); its topic."""
    topic = await new_dispatch_topic(servers.kafka_bootstrap, channel)
    processor = ChannelProcessor(channel, sender, redis, producer, settings)
    try:
        await processor.process([record(topic, event_)])
    finally:
        await sender.aclose()
    return topic


async def test_a_bounced_email_makes_email_unreachable_and_the_next_send_falls_back_to_sms(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer, stream: None
) -> None:
    customer = unique("bounce")
    address, phone = f"{customer}@example.com", "+819055501234"
    await _remember(
        redis,
        customer,
        email=address,
        phone=phone,
        opted_in=(channel_pb2.CHANNEL_EMAIL, channel_pb2.CHANNEL_SMS),
        preferred=channel_pb2.CHANNEL_EMAIL,
        fallback=(channel_pb2.CHANNEL_SMS,),
    )
    sandbox.faults.add(
        Fault.parse({"provider": "smtp", "kind": "unreachable", "to": address, "times": 0})
    )
    settings = channel_settings(
        EmailSettings, servers, email_smtp_host="127.0.0.1", email_smtp_port=sandbox.smtp_port
    )
    bounced = dispatch("email", customer_id=customer, address=address)
    topic = await _process(
        "email", SmtpSender(settings), settings, redis, producer, servers, bounced
    )

    [failed] = await receipts(servers.kafka_bootstrap, {customer})
    assert failed.name == "message.failed"
    assert (failed.receipt.error_code, failed.receipt.permanent) == ("bounced", True)
    assert failed.receipt.reason == bounced.reason
    assert await sandbox.ledger.entries(to=address) == []
    assert await read_topic(servers.kafka_bootstrap, topics.dlq(topic)) == []

    async def unreachable() -> bool:
        view = await _memory(redis, customer)
        return _reachability(view, channel_pb2.CHANNEL_EMAIL) == (False, "email.hard_bounce")

    await eventually(unreachable)
    outcome = await _send(redis, producer, servers, customer_id=customer, fallback=())
    assert outcome == SendOutcome(status="sent", channel="sms")


@pytest.mark.parametrize(
    ("channel", "provider", "error_code", "reason"),
    [
        ("push", "fcm", "unregistered", "push.unregistered"),
        ("sms", "sms", "invalid_number", "sms.invalid_number"),
    ],
)
async def test_a_dead_push_token_or_number_becomes_unreachable_in_memory(
    servers: LocalServers,
    sandbox: Sandbox,
    redis: Redis,
    producer: AIOKafkaProducer,
    stream: None,
    channel: str,
    provider: str,
    error_code: str,
    reason: str,
) -> None:
    customer = unique(channel)
    dead = dispatch(channel, customer_id=customer)
    await _remember(
        redis,
        customer,
        phone=dead.address if channel == "sms" else "",
        push_token=dead.address if channel == "push" else "",
    )
    sandbox.faults.add(
        Fault.parse({"provider": provider, "kind": "unreachable", "to": dead.address})
    )
    sender: ChannelSender
    if channel == "push":
        settings: Any = channel_settings(
            PushSettings, servers, push_api_url=f"{sandbox.http_url}/fcm"
        )
        sender = FcmSender(settings)
    else:
        settings = channel_settings(SmsSettings, servers, sms_api_url=f"{sandbox.http_url}/sms")
        sender = HttpSmsSender(settings)
    await _process(channel, sender, settings, redis, producer, servers, dead)

    [failed] = await receipts(servers.kafka_bootstrap, {customer})
    assert (failed.name, failed.receipt.error_code) == ("message.failed", error_code)

    async def unreachable() -> bool:
        view = await _memory(redis, customer)
        value = channel_pb2.Channel.Value(f"CHANNEL_{channel.upper()}")
        return _reachability(view, value) == (False, reason)

    await eventually(unreachable)


@contextlib.asynccontextmanager
async def _endpoint(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> AsyncIterator[EmailSettings]:
    """The email service's unsubscribe endpoint on a free port; settings whose links point at it."""
    port = free_port()
    settings = channel_settings(
        EmailSettings,
        servers,
        email_unsubscribe_port=port,
        email_unsubscribe_host="127.0.0.1",
        email_unsubscribe_url=f"http://127.0.0.1:{port}",
    )
    async with unsubscribe_companion(settings)(redis, producer):
        yield settings


async def test_a_one_click_unsubscribe_opts_the_customer_out_and_the_next_email_is_skipped(
    servers: LocalServers, sandbox: Sandbox, redis: Redis, producer: AIOKafkaProducer, stream: None
) -> None:
    customer = unique("unsub")
    address = f"{customer}@example.com"
    await _remember(redis, customer, email=address, opted_in=(channel_pb2.CHANNEL_EMAIL,))
    async with _endpoint(servers, redis, producer) as endpoint:
        settings = endpoint.model_copy(
            update={"email_smtp_host": "127.0.0.1", "email_smtp_port": sandbox.smtp_port}
        )
        sent = dispatch("email", customer_id=customer, address=address)
        sent.email.ClearField("list_unsubscribe")  # ours, not the dispatch's own
        sent.email.list_unsubscribe_one_click = False
        await _process("email", SmtpSender(settings), settings, redis, producer, servers, sent)
        [entry] = await sandbox.ledger.entries(to=address)
        assert entry["request"]["list_unsubscribe"].startswith(
            f"<{settings.email_unsubscribe_url}/u/"
        )
        assert entry["request"]["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{sandbox.http_url}/sandbox/inbound/email",
                json={"type": "unsubscribe", "dispatch_id": sent.dispatch_id},
            ) as response,
        ):
            assert response.status == 200, await response.text()
            assert (await response.json())["unsubscribe_status"] == 200

    async def opted_out() -> bool:
        view = await _memory(redis, customer)
        return any(
            c.channel == channel_pb2.CHANNEL_EMAIL
            and c.status == consent_pb2.CONSENT_STATUS_OPTED_OUT
            and c.source == "email.list_unsubscribe"
            for c in view.consents
        )

    await eventually(opted_out)
    view = await _memory(redis, customer)
    [change] = [
        e
        for e in view.timeline
        if e.name == "consent.changed" and e.source == "enishi.channel.email"
    ]
    assert change.props["dispatch_id"] == sent.dispatch_id
    outcome = await _send(
        redis, producer, servers, customer_id=customer, channel="email", fallback=()
    )
    assert outcome == SendOutcome(status="skipped", channel="email", reason="no_consent")


async def test_the_endpoint_shows_a_form_on_get_and_answers_every_bad_token_alike(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    customer = unique("page")
    async with _endpoint(servers, redis, producer) as settings:
        token = UnsubscribeTokens(UNSUBSCRIBE_SECRET).sign(Unsubscribe(customer, "email", "d_1"))
        forged = UnsubscribeTokens("someone-else-s-secret-0123456789abcdef").sign(
            Unsubscribe(customer, "email", "d_1")
        )
        base = settings.email_unsubscribe_url
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/u/{token}") as page:
                assert page.status == 200
                text = await page.text()
                assert f'action="/u/{token}"' in text and 'method="post"' in text
                assert page.headers["Cache-Control"] == "no-store"
                assert page.headers["Referrer-Policy"] == "no-referrer"
            answers = set()
            for bad in (forged, token[:-2] + "AA", "not-a-token", token + ".x"):
                for method in ("GET", "POST"):
                    async with http.request(method, f"{base}/u/{bad}") as response:
                        answers.add((response.status, await response.text()))
            assert len(answers) == 1
            [(status, body)] = answers
            assert status == 404 and customer not in body
    # Showing the page and refusing bad tokens published nothing.
    published = [
        r
        for r in await read_topic(servers.kafka_bootstrap, topics.TOUCHPOINTS)
        if r.key == customer.encode()
    ]
    assert published == []
