"""`enishi journey register|activate|pause|resume|archive|list|show|migrate` against an
in-process registry on the real servers. The CLI is synchronous, so each run goes to a thread
while the server keeps the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from enishi.cli.main import app
from tests import auth_support
from tests.conftest import LocalServers
from tests.integration.test_registry import Registry, new_id, running_registry, source

pytestmark = pytest.mark.asyncio(loop_scope="session")
runner = CliRunner()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registry(servers: LocalServers) -> AsyncIterator[Registry]:
    async with running_registry(servers) as running:
        yield running


async def enishi(registry: Registry, *args: str) -> Result:
    env = {
        "ENISHI_REGISTRY_TARGET": registry.target,
        "ENISHI_API_KEY": auth_support.ADMIN.api_key.get_secret_value(),
        "COLUMNS": "200",
    }
    return await asyncio.to_thread(lambda: runner.invoke(app, ["journey", *args], env=env))


async def test_register_activate_list_show(registry: Registry, tmp_path: Path) -> None:
    journey_id = new_id()
    file = tmp_path / "j.yaml"
    file.write_text(source(journey_id), encoding="utf-8")
    result = await enishi(registry, "register", str(file), "--designer", "bob", "--activate")
    assert result.exit_code == 0, result.output
    assert f"{journey_id} v1 registered" in result.output
    assert "warning: a holdout measures goal lift" in result.output
    assert f"{journey_id} activated: active, v1" in result.output

    again = await enishi(registry, "register", str(file))
    assert again.exit_code == 0 and "already registered" in again.output

    listed = await enishi(registry, "list", "--status", "active")
    assert listed.exit_code == 0, listed.output
    assert journey_id in listed.output

    shown = await enishi(registry, "show", journey_id, "--source")
    assert shown.exit_code == 0, shown.output
    assert "bob" in shown.output and "first_wait" in shown.output


async def test_register_prints_the_diagnostics_compiler_style(
    registry: Registry, tmp_path: Path
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(source(new_id()).replace("timeout: 3d", "timeout: 0d"), encoding="utf-8")
    result = await enishi(registry, "register", str(file))
    assert result.exit_code == 1
    assert f"{file}:11:" in result.output and "error:" in result.output
    assert "(steps[1].wait_for.timeout)" in result.output
    assert "not registered" in result.output


async def test_pause_resume_archive_with_policies(registry: Registry, tmp_path: Path) -> None:
    journey_id = new_id()
    file = tmp_path / "j.yaml"
    file.write_text(source(journey_id), encoding="utf-8")
    assert (await enishi(registry, "register", str(file), "--activate")).exit_code == 0
    bad = await enishi(registry, "pause", journey_id, "--policy", "later")
    assert bad.exit_code == 2 and "keep-running or cancel" in bad.output
    paused = await enishi(registry, "pause", journey_id, "--policy", "keep-running")
    assert paused.exit_code == 0 and "paused: paused" in paused.output
    resumed = await enishi(registry, "resume", journey_id)
    assert resumed.exit_code == 0 and "active" in resumed.output
    archived = await enishi(registry, "archive", journey_id, "--policy", "cancel")
    assert archived.exit_code == 0, archived.output
    assert "cancelled 0 running enrollment(s)" in archived.output
    refused = await enishi(registry, "activate", journey_id, "--version", "1")
    assert refused.exit_code == 1 and "FAILED_PRECONDITION" in refused.output


async def test_migrate_dry_run_reports_the_plan(registry: Registry, tmp_path: Path) -> None:
    journey_id = new_id()
    for wait in ("1d", "2d"):
        file = tmp_path / f"{wait}.yaml"
        file.write_text(source(journey_id, wait=wait), encoding="utf-8")
        assert (await enishi(registry, "register", str(file))).exit_code == 0
    handles = await registry.enroll(journey_id, 1, "first_wait", 2)
    result = await enishi(
        registry,
        "migrate",
        journey_id,
        "--from",
        "1",
        "--to",
        "2",
        "--map",
        "reply=reply",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "first_wait" in result.output
    assert "2 running on v1: 2 migratable, 0 blocked" in result.output
    for handle in handles:  # a dry run changes nothing: they are still waiting
        assert (await handle.describe()).status is not None
    done = await enishi(registry, "migrate", journey_id, "--from", "1", "--to", "2", "--yes")
    assert done.exit_code == 0, done.output
    assert "signalled 2 enrollment(s)" in done.output
    assert [await h.result() for h in handles] == [
        ["migrate:2:done>done,first_wait>first_wait,note>note,reply>reply"]
    ] * 2


async def test_an_unreachable_registry_is_reported_with_a_hint() -> None:
    args = ["journey", "list", "--target", "127.0.0.1:1"]
    result = await asyncio.to_thread(lambda: runner.invoke(app, args))
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.output and "enishi dev up" in result.output
