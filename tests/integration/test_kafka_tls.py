"""Kafka over mutual TLS, for real: enishi's producer, topic creation and consumer, configured
by `ENISHI_KAFKA_*` settings alone, against a real broker behind a TLS proxy.

The broker is a Tansu of this test's own that advertises the proxy's address, so every
connection aiokafka makes (bootstrap, then the advertised broker) goes through TLS. Tansu
itself cannot serve TLS (tests/tls_support.py says why), nor can SASL be tried on it: with
`--authentication` on, the first SCRAM user can only be created by an authenticated client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiokafka.errors import KafkaConnectionError

from enishi import kafka
from enishi.config import CommonSettings
from enishi.devstack import binaries
from enishi.devstack.ports import free_port
from services.stream.app import consumer_for
from tests.tls_support import Pki, TlsProxy, issue_pki


@dataclass(frozen=True)
class TlsBroker:
    """Where the TLS-fronted broker is, and the PKI it trusts."""

    bootstrap: str
    pki: Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield issue_pki(tmp_path_factory.mktemp("kafka-tls"))


@pytest_asyncio.fixture
async def broker(pki: Pki) -> AsyncIterator[TlsBroker]:
    plain = free_port()
    async with TlsProxy(pki, f"127.0.0.1:{plain}", client_ca=pki.ca) as proxy:
        # `localhost`, a name the server certificate carries: aiokafka checks host names.
        advertised = f"localhost:{proxy.port}"
        process = await asyncio.create_subprocess_exec(
            str(binaries.tansu()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{plain}",
            "--advertised-listener-url",
            f"tcp://{advertised}",
            "--storage-engine",
            "memory://tansu/",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _listening(plain)
            yield TlsBroker(advertised, pki)
        finally:
            process.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(process.wait(), 10)


async def _listening(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError(f"tansu did not listen on {port}")


def mtls(broker: TlsBroker, **values: object) -> CommonSettings:
    return CommonSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_file": broker.pki.ca,
            "kafka_ssl_client_cert_file": broker.pki.client_cert,
            "kafka_ssl_client_key_file": broker.pki.client_key,
            **values,
        }
    )


async def test_topics_producer_and_consumer_work_over_mutual_tls(broker: TlsBroker) -> None:
    settings = mtls(broker)
    topic = f"tls-{uuid.uuid4().hex[:8]}"

    assert await kafka.ensure_topics(settings, [topic], partitions=1) == [topic]
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls", key=b"k")
    finally:
        await producer.stop()
    consumer = consumer_for(settings, topic, f"group-{uuid.uuid4().hex[:8]}", batch_max=10)
    await consumer.start()
    try:
        batches = {}
        for _ in range(10):  # the group's first join can take a few polls
            batches = await consumer.getmany(timeout_ms=2_000)
            if batches:
                break
    finally:
        await consumer.stop()

    [records] = batches.values()
    assert [r.value for r in records] == [b"over tls"]


async def test_a_broker_certificate_from_another_ca_is_refused(broker: TlsBroker) -> None:
    untrusting = mtls(broker, kafka_ssl_ca_file=broker.pki.other_ca)

    with pytest.raises(KafkaConnectionError):
        await kafka.ensure_topics(untrusting, ["never-created"], partitions=1)
