"""`enishi customer show|timeline|find` against an in-process CustomerService on real Valkey."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from enishi import keys
from enishi.cli import customer
from enishi.cli.main import app
from enishi.devstack.ports import free_port
from enishi.memory import apply, model
from enishi.memory.writer import MemoryWriter
from enishi.v1 import channel_pb2, consent_pb2, dispatch_pb2, identity_pb2, touchpoint_pb2
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.stream_support import event
from tests.integration.test_customers import running_customers

pytestmark = pytest.mark.asyncio(loop_scope="session")

Kind = touchpoint_pb2.TouchpointKind


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def target(servers: LocalServers) -> AsyncIterator[str]:
    async with running_customers(servers) as (_, address):
        yield address


async def _remember(servers: LocalServers, customer_id: str, email: str) -> None:
    """Writes the identity index as ingest would, and memory as the stream processor would."""
    now = datetime.now(UTC)
    identified = event(customer_id, "customer.identified", kind=Kind.TOUCHPOINT_KIND_IDENTIFY)
    identified.identify.identity.CopyFrom(identity_pb2.Identity(email=email, phone="+819012345678"))
    identified.identify.traits.update({"first_name": "Hanako"})
    order = event(
        customer_id, "order.completed", at=now - timedelta(days=2), props={"amount": 3200}
    )
    sent = event(customer_id, "message.sent", kind=Kind.TOUCHPOINT_KIND_MESSAGE)
    sent.receipt.CopyFrom(
        dispatch_pb2.DeliveryReceipt(
            dispatch_id="d_1",
            channel=channel_pb2.CHANNEL_EMAIL,
            status=dispatch_pb2.DELIVERY_STATUS_SENT,
            reason=dispatch_pb2.DispatchReason(
                journey_id="f2-second-purchase",
                journey_version=3,
                step_id="thanks",
                designer="aiko@shop.example",
            ),
        )
    )
    consent = event(customer_id, "consent.changed", kind=Kind.TOUCHPOINT_KIND_CONSENT)
    consent.consent.consents.add(
        channel=channel_pb2.CHANNEL_EMAIL,
        status=consent_pb2.CONSENT_STATUS_OPTED_IN,
        source="signup_form",
    )
    redis = aioredis.Redis.from_url(servers.redis_url)
    try:
        now_ms = model.datetime_ms(now)
        plans = [apply.plan(tp, now_ms=now_ms) for tp in (identified, order, sent, consent)]
        await MemoryWriter(redis).apply(plans)
        await redis.set(keys.identity("email", email), customer_id)
        await redis.sadd(keys.identities(customer_id), f"email:{email}")
        await redis.hset(
            keys.customer(customer_id, keys.ENROLLMENTS),
            "f2-second-purchase",
            json.dumps({"count": 1, "last_at": now_ms, "active": True}),
        )
    finally:
        await redis.aclose()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tables wrap at the terminal width; CliRunner's default 80 columns would split phrases.
    monkeypatch.setattr(customer.out, "width", 240)
    monkeypatch.setattr(customer.err, "width", 240)


async def _run(*args: str) -> Result:
    # The CLI blocks on sync gRPC; the server lives on this event loop, so run it aside.
    env = {"ENISHI_API_KEY": auth_support.ADMIN.api_key.get_secret_value()}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_show_renders_the_360_view_with_the_why_of_messages(
    servers: LocalServers, target: str
) -> None:
    customer_id = f"cust-{uuid4().hex[:10]}"
    email = f"{uuid4().hex[:8]}@example.com"
    await _remember(servers, customer_id, email)

    result = await _run("customer", "show", f"email:{email}", "--target", target)
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (
        customer_id,
        email,
        "+819012345678",  # an operator tool shows personal data
        "Hanako",
        "orders",
        "opted_in",
        "signup_form",
        "f2-second-purchase v3 / thanks, by aiko@shop.example",
        "Active journeys",
        f"journey:f2-second-purchase:{customer_id}",
    ):
        assert expected in text, expected

    by_id = await _run("customer", "find", customer_id, "--target", target)
    assert by_id.exit_code == 0, by_id.output
    assert email in by_id.output

    timeline = await _run(
        "customer", "timeline", f"id:{customer_id}", "--kind", "message", "--target", target
    )
    assert timeline.exit_code == 0, timeline.output
    assert "message.sent" in timeline.output
    assert "order.completed" not in timeline.output


async def test_an_unknown_customer_is_a_clear_message_not_a_traceback(target: str) -> None:
    result = await _run("customer", "show", "email:nobody-here@example.com", "--target", target)
    assert result.exit_code == 1
    assert "not found: customer.email: no customer" in result.output
    assert "Traceback" not in result.output


async def test_an_unreachable_service_says_where_it_looked() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = await _run("customer", "show", "some-id", "--target", target)
    assert result.exit_code == 1
    assert f"CustomerService at {target} is unavailable" in result.output
    assert "Traceback" not in result.output


async def test_a_bad_identity_names_the_field(target: str) -> None:
    result = await _run("customer", "show", "phone:12", "--target", target)
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: customer.phone:" in result.output
