"""Wires the stream processor: settings → Redis, Kafka consumer and producer → the loop."""

from __future__ import annotations

from redis.asyncio import Redis

from enishi import kafka
from enishi.config import StreamSettings
from enishi.http_endpoint import MetricsEndpoint
from enishi.memory.model import Retention
from enishi.memory.writer import MemoryWriter
from enishi.process import run
from services.stream.app import StreamProcessor, consume, consumer_for


async def main() -> None:
    settings = StreamSettings()
    redis = Redis.from_url(settings.redis_url)
    producer = kafka.producer(settings)
    consumer = consumer_for(
        settings.kafka_bootstrap,
        settings.stream_topic,
        settings.stream_group_id,
        batch_max=settings.stream_batch_max,
    )
    running = False
    endpoint = MetricsEndpoint(port=settings.metrics_port, ready=lambda: running)
    try:
        if settings.metrics_port:
            await endpoint.start()
        await redis.ping()
        await producer.start()
        await consumer.start()
        running = True
        processor = StreamProcessor(
            MemoryWriter(
                redis,
                Retention(
                    timeline_max=settings.memory_timeline_max,
                    dedupe_window=settings.memory_dedupe_window,
                ),
            ),
            producer,
        )
        await consume(
            consumer,
            processor,
            batch_max=settings.stream_batch_max,
            batch_wait_ms=settings.stream_batch_wait_ms,
        )
    finally:
        running = False
        await consumer.stop()
        await producer.stop()
        await redis.aclose()
        await endpoint.stop()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=StreamSettings(), service="stream"))
