"""Wires the ingest service: settings → Kafka producer, Redis → gRPC server. Nothing else."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from enishi import kafka
from enishi.config import IngestSettings
from enishi.grpc_server import GrpcServer
from enishi.identity import IdentityResolver
from enishi.process import run
from enishi.touchpoints import TouchpointPublisher
from services.ingest.servicer import IngestServicer, add_to_server
from services.ingest.validation import Limits


async def main() -> None:
    settings = IngestSettings()
    producer = kafka.producer(settings, linger_ms=settings.kafka_linger_ms)
    redis = aioredis.Redis.from_url(settings.redis_url)
    await producer.start()
    servicer = IngestServicer(
        TouchpointPublisher(producer), IdentityResolver(redis), Limits.from_settings(settings)
    )

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    async def shutdown() -> None:
        try:
            await producer.stop()
        finally:
            await redis.aclose()

    server = GrpcServer(settings, "ingest", add_servicers, on_shutdown=shutdown)
    await server.serve()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=IngestSettings(), service="ingest"))
