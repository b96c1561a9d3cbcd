"""Suite-wide fixtures: the real local servers, started once per session on free ports.

Tests under tests/unit/ get the `unit` marker, tests/integration/ `integration`, tests/e2e/
`e2e`, tests/faults/ `faults`, from their folder; `pytest -m unit` runs without starting any
server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from temporalio.testing import WorkflowEnvironment

from enishi.config import DevStackSettings
from enishi.devstack import binaries
from enishi.devstack.parts import kafka_bootstrap, redis_url, temporal_address
from enishi.devstack.ports import free_port
from enishi.devstack.supervisor import Supervisor

# CI runs every property test on the same examples (a red build is then reproducible) and
# without deadlines (a shared 2-core box has slow moments); locally examples stay random.
hypothesis_settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

_FOLDER_MARKERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration}
_FOLDER_MARKERS["e2e"] = pytest.mark.e2e
_FOLDER_MARKERS["faults"] = pytest.mark.faults


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        marker = _FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)


@dataclass(frozen=True)
class LocalServers:
    """Addresses of the servers the suite started."""

    kafka_bootstrap: str
    redis_url: str
    temporal_address: str
    settings: DevStackSettings


def free_stack_settings(state_dir: Path, **overrides: object) -> DevStackSettings:
    """Local-stack settings with every port free right now."""
    values: dict[str, object] = {
        "state_dir": state_dir,
        "kafka_port": free_port(),
        "temporal_port": free_port(),
        "temporal_ui_port": free_port(),
        "redis_port": free_port(),
        "partitions": 2,
    }
    values.update(overrides)
    return DevStackSettings.model_validate(values)


@pytest.fixture(scope="session")
def servers_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("local-servers")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def servers(servers_state_dir: Path) -> AsyncIterator[LocalServers]:
    """Tansu, the Temporal dev server and Valkey, real, on free ports, for the session."""
    settings = free_stack_settings(servers_state_dir)
    supervisor = Supervisor(settings, services=False)
    await supervisor.up()
    try:
        yield LocalServers(
            kafka_bootstrap=kafka_bootstrap(settings),
            redis_url=redis_url(settings),
            temporal_address=temporal_address(settings),
            settings=settings,
        )
    finally:
        await supervisor.down()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal time-skipping test server (a month of waits in a second), for the session.

    Tests use a fresh `task_queue=str(uuid4())` each, so workflows never meet.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binaries.temporal_test_server())
    )
    try:
        yield env
    finally:
        await env.shutdown()
