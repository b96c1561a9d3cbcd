"""Wires the journey worker: settings → Redis, Kafka producer, Temporal client → the Worker."""

from __future__ import annotations

from enishi.config import WorkerSettings
from enishi.process import run
from enishi.service_clients import service_clients
from enishi.temporal import connect
from services.worker.app import activities, build_worker


async def main() -> None:
    settings = WorkerSettings()
    async with service_clients(settings) as clients:
        # Not lazy: a worker without Temporal has nothing to do; failing here lets the
        # orchestrator restart it until Temporal answers. With tracing on, the client's
        # interceptor covers the worker built on it: workflows and activities continue the
        # trace of the call that started or signalled them.
        temporal = await connect(settings)
        worker = build_worker(
            temporal, activities(clients.redis, clients.producer, settings), settings
        )
        clients.ready = True
        # Cancelling run() (SIGTERM) stops polling and gives running activities
        # worker_shutdown_grace_seconds to finish.
        await worker.run()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=WorkerSettings(), service="worker"))
