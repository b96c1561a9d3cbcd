"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from temporalio.testing import WorkflowEnvironment

from enishi import kafka
from enishi.config import CommonSettings
from enishi.temporal import register_search_attributes
from tests.conftest import LocalServers


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env(time_skipping: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping server with the journey search attributes registered."""
    await register_search_attributes(time_skipping.client)
    yield time_skipping


@pytest.fixture
def task_queue() -> str:
    """A task queue of the test's own, so workflows of different tests never meet."""
    return str(uuid.uuid4())


@pytest_asyncio.fixture
async def redis(servers: LocalServers) -> AsyncIterator[Redis]:
    """A client of the suite's Valkey."""
    client = Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def producer(servers: LocalServers) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer on the suite's Kafka, configured as the services configure theirs."""
    started = kafka.producer(CommonSettings(kafka_bootstrap=servers.kafka_bootstrap))
    await started.start()
    yield started
    await started.stop()
