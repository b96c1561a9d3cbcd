"""`Supervisor.restart`: one part of the local stack stopped (SIGTERM or SIGKILL) and started
again on its own, with its data, while the rest of the stack runs on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from enishi.devstack.parts import redis_url
from enishi.devstack.supervisor import StackError, Supervisor, pid_alive
from tests.conftest import free_stack_settings

pytestmark = pytest.mark.timeout(60)


async def test_restart_starts_a_stopped_part_and_replaces_a_killed_one_keeping_its_data(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(free_stack_settings(tmp_path / "state"), services=False)
    url = redis_url(supervisor.settings)
    try:
        first = await supervisor.restart("redis")  # not running yet: just started
        client = Redis.from_url(url)
        try:
            await client.set("survives", "restarts")
        finally:
            await client.aclose()

        graceful = await supervisor.restart("redis", signal.SIGTERM)
        killed = await supervisor.restart("redis", signal.SIGKILL)

        assert len({first.pid, graceful.pid, killed.pid}) == 3
        assert not pid_alive(first.pid, first.argv0)
        assert not pid_alive(graceful.pid, graceful.argv0)
        assert supervisor.alive() == {"redis": killed}
        client = Redis.from_url(url)
        try:
            assert await client.get("survives") == b"restarts"  # the append-only file
        finally:
            await client.aclose()
    finally:
        stopped = await supervisor.down()
    assert stopped == ["redis"]
    assert supervisor.alive() == {}


async def test_restart_of_an_unknown_part_names_the_parts() -> None:
    supervisor = Supervisor(free_stack_settings(Path("/nonexistent-state")), services=False)
    with pytest.raises(StackError, match="no part named 'nope'.*kafka, temporal, redis"):
        await supervisor.restart("nope")
