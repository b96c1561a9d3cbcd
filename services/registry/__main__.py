"""Wires the registry: settings → Redis, Temporal → gRPC server; Schedules synced at start."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

import grpc
import redis.asyncio as aioredis
import structlog

from enishi.config import RegistrySettings
from enishi.errors import Unavailable, dependency_error
from enishi.grpc_server import GrpcServer
from enishi.process import run
from enishi.temporal import connect
from services.registry.enrollments import Enrollments
from services.registry.schedules import JourneySchedules
from services.registry.servicer import JourneyRegistryServicer, add_to_server
from services.registry.store import JourneyStore

SYNC_FIRST_DELAY_S: Final = 1.0
SYNC_MAX_DELAY_S: Final = 60.0

log = structlog.get_logger(__name__)


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
    syncing = asyncio.create_task(sync_schedules(servicer), name="sync-schedules")
    try:
        await server.serve()
    finally:
        syncing.cancel()


async def sync_schedules(servicer: JourneyRegistryServicer) -> None:
    """`servicer.sync_schedules()` until it gets through (Temporal may still be starting)."""
    delay = SYNC_FIRST_DELAY_S
    while True:
        try:
            synced = await servicer.sync_schedules()
        except Exception as exc:
            if not isinstance(exc, Unavailable) and dependency_error(exc) is None:
                log.exception("registry.schedules_sync_failed")
                return
            log.warning("registry.schedules_sync_retry", retry_in_s=delay, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, SYNC_MAX_DELAY_S)
            continue
        log.info("registry.schedules_synced", journeys=synced)
        return


if __name__ == "__main__":
    raise SystemExit(run(main, settings=RegistrySettings(), service="registry"))
