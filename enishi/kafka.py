"""Kafka clients configured the one way enishi uses them, and topic creation.

Every producer, consumer and admin client enishi creates passes `**client_options(settings)`:
the security protocol, TLS context and SASL credentials of `ENISHI_KAFKA_*`
(docs/security.md). The local stack's probes and the demo's reader, which only ever talk to
the local Tansu, stay plaintext.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from enishi import tls
from enishi.config import CommonSettings, env_var
from enishi.errors import ConfigurationError, dependency_error
from enishi.metrics import CONSUMER_RETRIES

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno

log = structlog.get_logger(__name__)

RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 10.0

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")
_TLS_FIELDS = ("kafka_ssl_ca_file", "kafka_ssl_client_cert_file", "kafka_ssl_client_key_file")


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for `settings`, for every kind of client.

    Checked before any connection: a TLS file that cannot be used, SASL without a user or
    password, or TLS/SASL settings the chosen protocol would silently ignore raise
    `ConfigurationError` naming the variable (the process exits 2 with that line). The
    `ssl.SSLContext` is built once per set of files and shared by every client.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in _TLS_PROTOCOLS:
        tls.read_ca(settings, "kafka_ssl_ca_file")
        tls.read_pair(settings, "kafka_ssl_client_cert_file", "kafka_ssl_client_key_file")
        options["ssl_context"] = _ssl_context(
            settings.kafka_ssl_ca_file,
            settings.kafka_ssl_client_cert_file,
            settings.kafka_ssl_client_key_file,
        )
    else:
        _refuse_unused(settings, _TLS_FIELDS, "SSL or SASL_SSL")
    if protocol in _SASL_PROTOCOLS:
        for field in ("kafka_sasl_username", "kafka_sasl_password"):
            if not _is_set(settings, field):
                raise ConfigurationError(
                    env_var(settings, field),
                    f"{env_var(settings, field)}: required with "
                    f"{env_var(settings, 'kafka_security_protocol')}={protocol}",
                )
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    else:
        _refuse_unused(
            settings, ("kafka_sasl_username", "kafka_sasl_password"), "SASL_SSL or SASL_PLAINTEXT"
        )
    return options


def _is_set(settings: CommonSettings, field: str) -> bool:
    value = getattr(settings, field)
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def _refuse_unused(settings: CommonSettings, fields: Iterable[str], protocols: str) -> None:
    for field in fields:
        if _is_set(settings, field):
            protocol = env_var(settings, "kafka_security_protocol")
            raise ConfigurationError(
                protocol,
                f"{env_var(settings, field)} is set but {protocol} is "
                f"{settings.kafka_security_protocol}, which would not use it: "
                f"set {protocol} to {protocols}",
            )


@functools.lru_cache(maxsize=4)
def _ssl_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    # Without a CA file the context trusts the system's CAs; it checks the brokers' host names.
    context: ssl.SSLContext = create_ssl_context(cafile=ca, certfile=cert, keyfile=key)
    return context


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
        **client_options(settings),
    )


async def ensure_topics(
    settings: CommonSettings, topics: Iterable[str], *, partitions: int, replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet on `settings`' Kafka; returns those it created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **client_options(settings)
    )
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
