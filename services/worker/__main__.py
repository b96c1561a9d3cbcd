"""Wires the journey worker: settings → Redis, Kafka producer, Temporal client → the Worker."""

from __future__ import annotations

from redis.asyncio import Redis

from enishi import kafka
from enishi.config import WorkerSettings
from enishi.http_endpoint import MetricsEndpoint
from enishi.process import run
from enishi.temporal import connect
from services.worker.app import activities, build_worker


async def main() -> None:
    settings = WorkerSettings()
    redis = Redis.from_url(settings.redis_url)
    producer = kafka.producer(settings)
    running = False
    endpoint = MetricsEndpoint(port=settings.metrics_port, ready=lambda: running)
    try:
        if settings.metrics_port:
            await endpoint.start()
        await redis.ping()
        await producer.start()
        # Not lazy: a worker without Temporal has nothing to do; failing here lets the
        # orchestrator restart it until Temporal answers. With tracing on, the client's
        # interceptor covers the worker built on it: workflows and activities continue the
        # trace of the call that started or signalled them.
        temporal = await connect(settings)
        worker = build_worker(temporal, activities(redis, producer, settings), settings)
        running = True
        # Cancelling run() (SIGTERM) stops polling and gives running activities
        # worker_shutdown_grace_seconds to finish.
        await worker.run()
    finally:
        running = False
        await producer.stop()
        await redis.aclose()
        await endpoint.stop()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=WorkerSettings(), service="worker"))
