"""Publishes touchpoints to Kafka `touchpoints`, keyed by canonical customer id.

Shared by every producer of touchpoints: ingest, the customer service (preferences), the
journey worker (skips, trait updates) and channel services (receipts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from enishi import topics
from enishi.v1 import touchpoint_pb2


class TouchpointPublisher:
    """Sends a batch of touchpoints and returns once Kafka acknowledged all of them."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, events: Sequence[touchpoint_pb2.Touchpoint]) -> None:
        # Enqueue the whole batch before awaiting any ack, so the producer's linger can
        # pack the records into few requests.
        pending = [
            await self._producer.send(
                topics.TOUCHPOINTS,
                value=event.SerializeToString(),
                key=event.customer_id.encode(),
            )
            for event in events
        ]
        await asyncio.gather(*pending)
