"""The stream processor's consumer in a benchmark: its partitions assigned, no group join.

`services.stream.app.consumer_for` subscribes and joins a consumer group; Tansu answers the
first join after about 5 s, which is neither the processor's work nor part of any figure.
The benchmark's consumer is configured the same way (manual commits to the same kind of
group, from the earliest offset, `max_poll_records` = the batch) but is assigned every
partition of its topic, so it polls at once. Everything after the poll is the service's.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def assigned(
    bootstrap: str, topic: str, partitions: int, *, batch_max: int
) -> AIOKafkaConsumer:
    """A started consumer of every partition of `topic`, committing to its own group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_max,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    return consumer
