"""The provider sandbox's admin side: the CLI reads its ledger and sets faults, and its inbound
events (LINE webhook, email opens) come back into enishi as touchpoints."""

from __future__ import annotations

import asyncio

import aiohttp
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from typer.testing import CliRunner

from enishi import identity, keys, topics
from enishi.channels.consumer import ChannelProcessor
from enishi.channels.email import SmtpSender
from enishi.channels.line import LinePushSender
from enishi.cli.main import app
from enishi.config import EmailSettings, LineSettings, SandboxSettings
from enishi.devstack.ports import free_port
from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2
from services.email.unsubscribe import unsubscribe_companion
from services.line.webhook import remember_last_dispatch, signature, webhook_companion
from services.sandbox.app import Sandbox
from tests.conftest import LocalServers
from tests.integration.channels_support import (
    channel_settings,
    dispatch,
    eventually,
    read_topic,
    receipts,
    running_sandbox,
)


async def _cli(*args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def test_the_cli_sets_a_fault_and_shows_the_delivery_it_delayed(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("email")
    async with running_sandbox(servers) as sandbox:
        url = sandbox.http_url
        await _cli(
            "sandbox", "fail", "smtp", "--status", "451", "--to", event.address, "--url", url
        )
        assert "451" in await _cli("sandbox", "faults", "--url", url)
        settings = channel_settings(
            EmailSettings, servers, email_smtp_host="127.0.0.1", email_smtp_port=sandbox.smtp_port
        )
        processor = ChannelProcessor("email", SmtpSender(settings), redis, producer, settings)
        finished = await processor.deliver(event)
        assert finished.receipt.receipt.attempts == 2
        shown = await _cli("sandbox", "ledger", "--to", event.address, "--json", "--url", url)
        assert event.dispatch_id in shown
        await _cli("sandbox", "clear", "--url", url)
        assert sandbox.faults.rules() == []


async def test_the_cli_makes_an_address_bounce_and_clicks_an_emails_unsubscribe_link(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    dead, alive = dispatch("email"), dispatch("email")
    alive.email.ClearField("list_unsubscribe")
    port = free_port()
    async with running_sandbox(servers) as sandbox:
        url = sandbox.http_url
        await _cli("sandbox", "fail", "smtp", "--unreachable", "--to", dead.address, "--url", url)
        settings = channel_settings(
            EmailSettings,
            servers,
            email_smtp_host="127.0.0.1",
            email_smtp_port=sandbox.smtp_port,
            email_unsubscribe_host="127.0.0.1",
            email_unsubscribe_port=port,
            email_unsubscribe_url=f"http://127.0.0.1:{port}",
        )
        processor = ChannelProcessor("email", SmtpSender(settings), redis, producer, settings)
        bounced = await processor.deliver(dead)
        assert (bounced.receipt.name, bounced.receipt.receipt.error_code) == (
            "message.failed",
            "bounced",
        )
        await processor.deliver(alive)
        async with unsubscribe_companion(settings)(redis, producer):
            shown = await _cli("sandbox", "unsubscribe", alive.dispatch_id, "--url", url)
        assert "answered 200" in shown


async def test_line_follow_unfollow_and_a_reply_come_back_as_touchpoints(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("line")
    user_id, customer_id = event.address, event.customer_id
    await redis.set(keys.identity(identity.LINE_USER_ID, user_id), customer_id)
    ports: list[int] = []
    line = channel_settings(LineSettings, servers, line_webhook_port=0)
    async with webhook_companion(line, on_port=ports.append)(redis, producer):
        webhook = f"http://127.0.0.1:{ports[0]}/line/webhook"
        async with running_sandbox(servers, sandbox_line_webhook_url=webhook) as sandbox:
            await _push(sandbox, line, redis, producer, event)
            for kind in ("unfollow", "follow"):
                await _cli("sandbox", "reply", user_id, "--event", kind, "--url", sandbox.http_url)
            await _cli("sandbox", "reply", user_id, "とても良かったです", "--url", sandbox.http_url)

            async def arrived() -> bool:
                names = [t.name for t in await _touchpoints(servers, customer_id)]
                return names.count("channel.reachability_changed") == 2 and (
                    "message.replied" in names
                )

            await eventually(arrived)
            bad = await _post_unsigned(webhook)
    found = await _touchpoints(servers, customer_id)
    reach = [t for t in found if t.kind == touchpoint_pb2.TOUCHPOINT_KIND_REACHABILITY]
    assert [(t.reachability.reachable, t.reachability.reason) for t in reach] == [
        (False, "line.unfollow"),
        (True, "line.follow"),
    ]
    assert all(t.reachability.channel == channel_pb2.CHANNEL_LINE for t in reach)
    [replied] = [t for t in found if t.name == "message.replied"]
    assert replied.receipt.dispatch_id == event.dispatch_id
    assert replied.receipt.reason == event.reason
    assert replied.props["text"] == "とても良かったです"
    assert bad == 401


async def test_an_email_open_and_click_become_receipts_of_the_sent_dispatch(
    servers: LocalServers, redis: Redis, producer: AIOKafkaProducer
) -> None:
    event = dispatch("email")
    async with running_sandbox(servers) as sandbox:
        settings = channel_settings(
            EmailSettings, servers, email_smtp_host="127.0.0.1", email_smtp_port=sandbox.smtp_port
        )
        await ChannelProcessor("email", SmtpSender(settings), redis, producer, settings).deliver(
            event
        )
        http = sandbox.http_url + "/sandbox/inbound/email"
        async with aiohttp.ClientSession() as session:
            for body in (
                {"type": "open", "dispatch_id": event.dispatch_id},
                {
                    "type": "click",
                    "dispatch_id": event.dispatch_id,
                    "url": "https://shop.example/a",
                },
            ):
                async with session.post(http, json=body) as response:
                    assert response.status == 200, await response.text()
    found = {t.name: t for t in await receipts(servers.kafka_bootstrap, {event.customer_id})}
    assert found["message.opened"].receipt.reason == event.reason
    assert found["message.clicked"].props["url"] == "https://shop.example/a"


async def _push(
    sandbox: Sandbox,
    line: LineSettings,
    redis: Redis,
    producer: AIOKafkaProducer,
    event: dispatch_pb2.DispatchEvent,
) -> None:
    settings = line.model_copy(update={"line_api_url": f"{sandbox.http_url}/line"})
    sender = LinePushSender(settings)
    try:
        processor = ChannelProcessor(
            "line", sender, redis, producer, settings, on_sent=remember_last_dispatch(redis)
        )
        await processor.deliver(event)
    finally:
        await sender.aclose()


async def _touchpoints(servers: LocalServers, customer_id: str) -> list[touchpoint_pb2.Touchpoint]:
    found = []
    for record in await read_topic(servers.kafka_bootstrap, topics.TOUCHPOINTS):
        if record.key == customer_id.encode():
            found.append(touchpoint_pb2.Touchpoint.FromString(record.value))
    return found


async def _post_unsigned(url: str) -> int:
    body = b'{"events": []}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"X-Line-Signature": signature("wrong", body)}) as r,
    ):
        return r.status


async def test_the_sandbox_smtp_says_try_again_later_while_its_ledger_is_away(
    servers: LocalServers, producer: AIOKafkaProducer
) -> None:
    # A Valkey restart under the sandbox: a 5xx would fail the email for good (the fault suite
    # lost three that way); a relay with a local problem answers 4xx, which is retried.
    away = f"redis://127.0.0.1:{free_port()}/0"
    settings = SandboxSettings(
        redis_url=away,
        kafka_bootstrap=servers.kafka_bootstrap,
        sandbox_smtp_port=0,
        sandbox_http_port=0,
    )
    redis = Redis.from_url(away)
    try:
        async with Sandbox(settings, redis, producer) as sandbox:
            email = channel_settings(
                EmailSettings,
                servers,
                email_smtp_host="127.0.0.1",
                email_smtp_port=sandbox.smtp_port,
            )
            sender = SmtpSender(email)
            try:
                outcome = await sender.deliver(dispatch("email"))
            finally:
                await sender.aclose()
    finally:
        await redis.aclose()
    assert (outcome.kind, outcome.error_code) == ("transient", "smtp_451")
