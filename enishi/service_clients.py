"""The clients a Kafka/Redis service process holds for its life, and its health endpoint.

Every non-gRPC service (stream processor, journey worker, channel services, sandbox) starts
the same way: `/metrics`, `/healthz` and `/readyz` on `ENISHI_METRICS_PORT` first (so an
orchestrator sees the process while it connects), then Redis (`PING`) and a Kafka producer;
ready only once the service says so; on the way out everything is closed in reverse order.
gRPC services get the same from `enishi.grpc_server.GrpcServer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi import kafka
from enishi.config import CommonSettings
from enishi.http_endpoint import MetricsEndpoint


@dataclass
class ServiceClients:
    """Connected Redis and Kafka producer; `ready` is what `/readyz` answers."""

    redis: Redis
    producer: AIOKafkaProducer
    ready: bool = field(default=False)


@contextlib.asynccontextmanager
async def service_clients(settings: CommonSettings) -> AsyncIterator[ServiceClients]:
    """Health endpoint up, Redis and the producer connected; all stopped on exit."""
    clients = ServiceClients(Redis.from_url(settings.redis_url), kafka.producer(settings))
    endpoint = MetricsEndpoint(port=settings.metrics_port, ready=lambda: clients.ready)
    try:
        if settings.metrics_port:
            await endpoint.start()
        await clients.redis.ping()
        await clients.producer.start()
        yield clients
    finally:
        clients.ready = False
        await clients.producer.stop()
        await clients.redis.aclose()
        await endpoint.stop()
