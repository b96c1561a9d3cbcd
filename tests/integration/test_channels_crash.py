"""Killing a channel service (SIGKILL) mid-batch and restarting it loses and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from enishi.v1 import dispatch_pb2, touchpoint_pb2
from services.sandbox.app import Sandbox
from services.sandbox.faults import Fault
from tests.conftest import LocalServers
from tests.integration.channels_support import (
    dispatch,
    eventually,
    new_dispatch_topic,
    produce,
    receipts,
    running_sandbox,
    unique,
)

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = 8
DISPATCHES_PER_CUSTOMER = 5


@pytest_asyncio.fixture(scope="module")
async def sandbox(servers: LocalServers) -> AsyncIterator[Sandbox]:
    async with running_sandbox(servers) as running:
        yield running


async def _start(
    servers: LocalServers, sandbox: Sandbox, topic: str, group: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "ENISHI_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
        "ENISHI_REDIS_URL": servers.redis_url,
        "ENISHI_CHANNEL_TOPIC": topic,
        "ENISHI_CHANNEL_GROUP_ID": group,
        "ENISHI_CHANNEL_BATCH_MAX": "10",
        "ENISHI_CHANNEL_CONCURRENCY": "4",
        "ENISHI_CHANNEL_RETRY_BASE_SECONDS": "0.05",
        "ENISHI_LINE_API_URL": f"{sandbox.http_url}/line",
        "ENISHI_LINE_WEBHOOK_PORT": "0",
        "ENISHI_METRICS_PORT": "0",
        "ENISHI_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.line", cwd=REPO, env=env
    )


async def test_killing_the_line_service_mid_batch_loses_no_message_and_sends_none_twice(
    servers: LocalServers, sandbox: Sandbox
) -> None:
    topic, group = await new_dispatch_topic(servers.kafka_bootstrap, "line"), unique("group")
    events = [
        dispatch("line", customer_id=customer)
        for customer in [unique("crash") for _ in range(CUSTOMERS)]
        for _ in range(DISPATCHES_PER_CUSTOMER)
    ]
    addresses = {e.address for e in events}
    # Slow provider calls, so the kill finds some of them in flight.
    sandbox.faults.add(Fault(provider="line", kind="delay", seconds=0.1, times=0))
    await produce(
        servers.kafka_bootstrap,
        topic,
        [(e.customer_id.encode(), e.SerializeToString()) for e in events],
    )

    async def delivered() -> Counter[str]:
        entries = await sandbox.ledger.entries(provider="line", duplicates=False)
        return Counter(e["to"] for e in entries if e["to"] in addresses)

    process = await _start(servers, sandbox, topic, group)
    try:

        async def some_delivered() -> bool:
            return sum((await delivered()).values()) >= 8

        await eventually(some_delivered, timeout=30)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        assert sum((await delivered()).values()) < len(events), "killed too late to prove it"

        process = await _start(servers, sandbox, topic, group)

        async def all_delivered() -> bool:
            return len(await delivered()) == len(events)

        await eventually(all_delivered, timeout=45)

        # The ledger fills before the receipts go out: wait for those too before stopping.
        async def all_receipted() -> bool:
            return {r.receipt.dispatch_id for r in await _sent(servers, events)} == {
                e.dispatch_id for e in events
            }

        await eventually(all_receipted, timeout=45)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        sandbox.faults.clear()

    counts = await delivered()
    assert set(counts) == addresses
    assert set(counts.values()) == {1}, "a message went out twice"
    sent = await _sent(servers, events)
    assert {r.receipt.dispatch_id for r in sent} == {e.dispatch_id for e in events}
    # Copies re-published after the restart share their event id: one event each.
    assert len({r.event_id for r in sent}) == len(events)


async def _sent(
    servers: LocalServers, events: list[dispatch_pb2.DispatchEvent]
) -> list[touchpoint_pb2.Touchpoint]:
    found = await receipts(servers.kafka_bootstrap, {e.customer_id for e in events})
    return [r for r in found if r.name == "message.sent"]
