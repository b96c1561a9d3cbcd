"""Kafka clients configured the one way enishi uses them, and topic creation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, TopicAlreadyExistsError

from enishi.config import CommonSettings
from enishi.errors import dependency_error
from enishi.metrics import CONSUMER_RETRIES

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno

log = structlog.get_logger(__name__)

RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 10.0


def producer(settings: CommonSettings, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; idempotent when the broker allows it.

    Tansu (the dev broker) has no InitProducerId, so idempotence is a setting that is on for
    Apache Kafka in docker-compose and Kubernetes.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
    )


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], *, partitions: int, replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication) for name in missing]
        )
        created = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"topic {name}: creation failed ({code}: {message})")
        return created
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(str(e[0]), int(e[1]), e[2] if len(e) > 2 else None) for e in errors]


async def consume_batches(
    consumer: AIOKafkaConsumer,
    process: Callable[[list[Any]], Awaitable[object]],
    *,
    batch_max: int,
    batch_wait_ms: int,
    name: str,
) -> None:
    """Poll a batch, `process` it, commit `offset + 1` per partition; forever, until cancelled.

    The one consume loop of every enishi consumer (design §6: effects first, then offsets).
    A stop signal that arrives mid-batch lets the batch in hand finish and commit before the
    cancellation goes on, so a graceful stop redelivers nothing; a SIGKILL redelivers the batch
    and the consumer's dedupe absorbs it. The consumer must be started.

    A batch that fails because Redis, Kafka or Temporal cannot be reached (`dependency_error`)
    is processed again after a backoff (0.2 s doubling to 10 s), as often as it takes: the
    process stays up through a dependency's restart instead of exiting, and the retry is a
    redelivery the consumer's dedupe already absorbs. Any other error ends the loop.
    """
    while True:
        batches: dict[TopicPartition, list[Any]] = await consumer.getmany(
            timeout_ms=batch_wait_ms, max_records=batch_max
        )
        if not batches:
            continue
        records = [record for partition in batches.values() for record in partition]
        offsets = {tp: partition[-1].offset + 1 for tp, partition in batches.items()}
        batch = asyncio.ensure_future(
            _process_and_commit(consumer, process, records, offsets, name)
        )
        try:
            await asyncio.shield(batch)
        except asyncio.CancelledError:
            await batch
            raise


async def _process_and_commit(
    consumer: AIOKafkaConsumer,
    process: Callable[[list[Any]], Awaitable[object]],
    records: list[Any],
    offsets: dict[TopicPartition, int],
    name: str,
) -> None:
    outcome = await _process_until_reachable(process, records, name)
    try:
        await consumer.commit(offsets)
    except CommitFailedError:
        # The group rebalanced under us: the partitions' new owner gets these records again
        # and the consumer's dedupe absorbs them.
        log.warning(f"{name}.commit_failed", partitions=len(offsets))
        return
    log.debug(f"{name}.batch_committed", **dict(getattr(outcome, "__dict__", {})))


async def _process_until_reachable(
    process: Callable[[list[Any]], Awaitable[object]], records: list[Any], name: str
) -> object:
    delay = RETRY_FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            return await process(records)
        except Exception as exc:
            if dependency_error(exc) is None:
                raise
            CONSUMER_RETRIES.labels(name).inc()
            log.warning(
                f"{name}.batch_retry",
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=type(exc).__name__,
                records=len(records),
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY_S)
        attempt += 1
