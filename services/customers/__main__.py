"""Wires the customer service: settings → Redis, Kafka producer, Temporal → gRPC server."""

from __future__ import annotations

from datetime import timedelta

import grpc
import redis.asyncio as aioredis

from enishi import kafka
from enishi.config import CustomersSettings
from enishi.grpc_server import GrpcServer
from enishi.memory.lifecycle import LifecycleRules
from enishi.process import run
from enishi.temporal import connect
from enishi.touchpoints import TouchpointPublisher
from services.customers.journeys import ActiveJourneys, TemporalStepQuery
from services.customers.servicer import CustomerServicer, add_to_server


async def main() -> None:
    settings = CustomersSettings()
    producer = kafka.producer(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    await producer.start()
    steps = None
    if settings.customers_journey_query_seconds > 0:
        # Lazy: the 360 view is served while Temporal is away, only without the steps.
        steps = TemporalStepQuery(
            await connect(settings, lazy=True), settings.customers_journey_query_seconds
        )
    servicer = CustomerServicer(
        redis,
        TouchpointPublisher(producer),
        rules=LifecycleRules(
            lapsing_after=timedelta(days=settings.memory_lapsing_days),
            lapsed_after=timedelta(days=settings.memory_lapsed_days),
        ),
        journeys=ActiveJourneys(redis, steps),
    )

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    async def ready() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:  # readiness answers "not ready", whatever the client raised
            return False

    async def shutdown() -> None:
        try:
            await producer.stop()
        finally:
            await redis.aclose()

    server = GrpcServer(settings, "customers", add_servicers, on_shutdown=shutdown, ready=ready)
    await server.serve()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=CustomersSettings(), service="customers"))
