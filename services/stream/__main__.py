"""Wires the stream processor: settings → Redis, Temporal, Kafka → the loop with its hook."""

from __future__ import annotations

from redis.asyncio import Redis

from enishi import kafka
from enishi.config import StreamSettings
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.http_endpoint import MetricsEndpoint
from enishi.memory.model import Retention
from enishi.memory.writer import MemoryWriter
from enishi.process import run
from enishi.temporal import connect
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import Hooks
from services.stream.journey_stats import JourneyStatsHook
from services.stream.triggers import JourneyTriggers


async def main() -> None:
    settings = StreamSettings()
    redis = Redis.from_url(settings.redis_url)
    producer = kafka.producer(settings)
    consumer = consumer_for(
        settings,
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
        # Lazy: memory keeps flowing while Temporal is away; only a batch with an event a
        # journey cares about needs it (and is retried until it is back). With tracing on,
        # the trace goes on into journeys through the client's interceptor.
        temporal = await connect(settings, lazy=True)
        await producer.start()
        await consumer.start()
        running = True
        writer = MemoryWriter(
            redis,
            Retention(
                timeline_max=settings.memory_timeline_max,
                dedupe_window=settings.memory_dedupe_window,
            ),
        )
        calls = TemporalJourneyCalls(temporal, concurrency=settings.stream_temporal_concurrency)
        # Triggers first: they are on the trigger -> dispatch latency path; the stats hook
        # dedupes on its own, so a retried batch never counts twice.
        hook = Hooks(JourneyTriggers(redis, calls, resolve=writer.resolve), JourneyStatsHook(redis))
        processor = StreamProcessor(writer, producer, hook=hook)
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
