"""Wires the provider sandbox: settings → Redis, Kafka → SMTP and HTTP servers, until stopped."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from enishi import kafka
from enishi.config import SandboxSettings
from enishi.http_endpoint import MetricsEndpoint
from enishi.process import run
from services.sandbox.app import Sandbox


async def main() -> None:
    settings = SandboxSettings()
    redis = Redis.from_url(settings.redis_url)
    producer = kafka.producer(settings)
    sandbox = Sandbox(settings, redis, producer)
    running = False
    endpoint = MetricsEndpoint(port=settings.metrics_port, ready=lambda: running)
    try:
        if settings.metrics_port:
            await endpoint.start()
        await redis.ping()
        await producer.start()
        await sandbox.start()
        running = True
        await asyncio.Event().wait()
    finally:
        running = False
        await sandbox.stop()
        await producer.stop()
        await redis.aclose()
        await endpoint.stop()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=SandboxSettings(), service="sandbox"))
