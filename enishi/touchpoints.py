"""Publishes touchpoints to Kafka `touchpoints`, keyed by canonical customer id.

Shared by every producer of touchpoints: ingest, the customer service (preferences), the
journey worker (skips, trait updates) and channel services (receipts). Also mints the ids
of touchpoints that arrive without one.
"""

from __future__ import annotations

import asyncio
import os
import time
from base64 import b32encode
from collections.abc import Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from enishi import topics, tracing
from enishi.v1 import touchpoint_pb2

# Names of the touchpoints enishi writes itself (besides receipts, see enishi.channels.receipts).
CONSENT_CHANGED: Final = "consent.changed"
PREFERENCES_CHANGED: Final = "preferences.changed"

# RFC 4648 base32 digits -> Crockford's, the ULID alphabet (same bit order).
_CROCKFORD: Final = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)
_DIGITS: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT_PAIRS: Final = tuple(a + b for a in _DIGITS for b in _DIGITS)
_COUNTER_BITS: Final = 15  # the last 3 ULID digits count within one draw
_RANDOM_BITS: Final = 80
# Keys whose partition is remembered; past this the memo starts over (it only saves murmur2).
_MEMO_KEYS: Final = 100_000

Record = tuple[bytes, bytes, list[tuple[str, bytes]] | None]
"""A record to produce: key, value, headers."""


def new_event_ids(count: int) -> list[str]:
    """`count` fresh ULIDs; up to 32,768 of them sort in creation order (ULID's monotonic form).

    One draw per 32,768 ids: this millisecond and 64 random bits, followed by a 15-bit
    counter, so an id costs a string concatenation instead of python-ulid's per-id
    encoding (which cost as much as validating the event).
    """
    ids: list[str] = []
    while len(ids) < count:
        random = int.from_bytes(os.urandom(10), "big") >> (_COUNTER_BITS + 1) << _COUNTER_BITS
        first = (time.time_ns() // 1_000_000) << _RANDOM_BITS | random
        # 20 bytes are 32 base32 digits: the first 6 hold only zero bits above the 128, the
        # next 23 the time and the random bits, the last 3 the (zero) counter.
        head = b32encode(first.to_bytes(20, "big"))[6:29].translate(_CROCKFORD).decode()
        ids += [
            head + _DIGITS[i >> 10] + _DIGIT_PAIRS[i & 1023]
            for i in range(min(count - len(ids), 1 << _COUNTER_BITS))
        ]
    return ids


def new_event_id() -> str:
    """One fresh ULID (see `new_event_ids`)."""
    return new_event_ids(1)[0]


class TouchpointPublisher:
    """Sends a batch of touchpoints and returns once Kafka acknowledged all of them."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}

    async def publish(self, events: Sequence[touchpoint_pb2.Touchpoint]) -> None:
        """Produce `events` in order per customer; return when Kafka acknowledged them all.

        The events go as one record batch per partition (`create_batch`/`send_batch`), with
        the partition the producer's default partitioner gives the key (murmur2, as Java
        clients do), instead of one `send()` per event: per-event futures and partitioning
        cost the ingest service as much as everything else it does per event.
        """
        if not events:
            return
        records: dict[int, list[Record]] = {}
        partition_of = await self._partition_memo()
        # Each record's headers mirror its touchpoint's `trace`; with tracing on, an event
        # without one gets the current span's (the ingest call's, the activity's).
        current = tracing.current_trace()
        current_headers = tracing.trace_headers(current) if current is not None else None
        for event in events:
            key = event.customer_id.encode()
            partition = partition_of.get(key)
            if partition is None:
                partition = self._partitioner(key, self._partitions, self._partitions)
                partition_of[key] = partition
            headers = None
            if event.HasField("trace"):
                headers = tracing.own_trace_headers(event.trace, current)
            elif current is not None:
                event.trace.CopyFrom(current)
                headers = current_headers
            records.setdefault(partition, []).append((key, event.SerializeToString(), headers))
        pending = []
        for partition, batch_records in records.items():
            pending += await self._send(partition, batch_records)
        await asyncio.gather(*pending)

    async def _partition_memo(self) -> dict[bytes, int]:
        partitions = sorted(await self._producer.partitions_for(topics.TOUCHPOINTS))
        if partitions != self._partitions or len(self._partition_of) > _MEMO_KEYS:
            self._partitions = partitions
            self._partition_of = {}
        return self._partition_of

    async def _send(self, partition: int, records: list[Record]) -> list[Any]:
        """Queue `records` for `partition` as few batches as fit; their delivery futures."""
        producer = self._producer
        futures = []
        batch = producer.create_batch()
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await self._submit(batch, partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise MessageSizeTooLargeError(f"a touchpoint of {len(value)} bytes")
        futures.append(await self._submit(batch, partition))
        return futures

    async def _submit(self, batch: Any, partition: int) -> Any:
        # Closed: the batch is complete, so it goes with the sender's next request rather
        # than lingering for records that will not come.
        batch.close()
        return await self._producer.send_batch(batch, topics.TOUCHPOINTS, partition=partition)
