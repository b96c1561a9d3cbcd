"""Wires the registry: settings → Redis, Temporal client → gRPC server. Nothing else."""

from __future__ import annotations

from datetime import timedelta

import grpc
import redis.asyncio as aioredis

from enishi.config import RegistrySettings
from enishi.grpc_server import GrpcServer
from enishi.process import run
from enishi.temporal import connect
from services.registry.enrollments import Enrollments
from services.registry.schedules import JourneySchedules
from services.registry.servicer import JourneyRegistryServicer, add_to_server
from services.registry.store import JourneyStore


async def main() -> None:
    settings = RegistrySettings()
    redis = aioredis.Redis.from_url(settings.redis_url)
    # Lazy: the registry serves definitions while Temporal is still starting; calls that
    # need Temporal answer UNAVAILABLE until it is reachable.
    temporal = await connect(settings, lazy=True)
    store = JourneyStore(redis)
    sweep = timedelta(minutes=settings.journey_condition_sweep_minutes)
    servicer = JourneyRegistryServicer(
        store, Enrollments(temporal), schedules=JourneySchedules(temporal, sweep_every=sweep)
    )

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        return add_to_server(servicer, server)

    server = GrpcServer(
        settings, "registry", add_servicers, on_shutdown=redis.aclose, ready=store.ping
    )
    await server.serve()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=RegistrySettings(), service="registry"))
