"""Wires the stream processor: settings → Redis, Temporal, Kafka → the loop with its hook."""

from __future__ import annotations

from enishi.config import StreamSettings
from enishi.enrollment.calls import TemporalJourneyCalls
from enishi.memory.model import Retention
from enishi.memory.writer import MemoryWriter
from enishi.process import run
from enishi.service_clients import service_clients
from enishi.temporal import connect
from services.stream.app import StreamProcessor, consume, consumer_for
from services.stream.hooks import Hooks
from services.stream.journey_stats import JourneyStatsHook
from services.stream.triggers import JourneyTriggers


async def main() -> None:
    settings = StreamSettings()
    consumer = consumer_for(
        settings,
        settings.stream_topic,
        settings.stream_group_id,
        batch_max=settings.stream_batch_max,
    )
    async with service_clients(settings) as clients:
        try:
            # Lazy: memory keeps flowing while Temporal is away; only a batch with an event a
            # journey cares about needs it (and is retried until it is back). With tracing on,
            # the trace goes on into journeys through the client's interceptor.
            temporal = await connect(settings, lazy=True)
            await consumer.start()
            clients.ready = True
            writer = MemoryWriter(
                clients.redis,
                Retention(
                    timeline_max=settings.memory_timeline_max,
                    dedupe_window=settings.memory_dedupe_window,
                ),
            )
            calls = TemporalJourneyCalls(temporal, concurrency=settings.stream_temporal_concurrency)
            # Triggers first: they are on the trigger -> dispatch latency path; the stats hook
            # dedupes on its own, so a retried batch never counts twice.
            hook = Hooks(
                JourneyTriggers(clients.redis, calls, resolve=writer.resolve),
                JourneyStatsHook(clients.redis),
            )
            processor = StreamProcessor(writer, clients.producer, hook=hook)
            await consume(
                consumer,
                processor,
                batch_max=settings.stream_batch_max,
                batch_wait_ms=settings.stream_batch_wait_ms,
            )
        finally:
            await consumer.stop()


if __name__ == "__main__":
    raise SystemExit(run(main, settings=StreamSettings(), service="stream"))
