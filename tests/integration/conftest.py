"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from enishi.temporal import register_search_attributes


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env(time_skipping: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping server with the journey search attributes registered."""
    await register_search_attributes(time_skipping.client)
    yield time_skipping


@pytest.fixture
def task_queue() -> str:
    """A task queue of the test's own, so workflows of different tests never meet."""
    return str(uuid.uuid4())
