"""Dead-letter records: the original key and value to `<topic>.dlq`, the reason in headers.

Header names follow docs/contracts.md. Every consumer (stream processor, channel services)
dead-letters through this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiokafka.errors import MessageSizeTooLargeError

from enishi import topics

REASON_HEADER: Final = "enishi-dlq-reason"
SOURCE_TOPIC_HEADER: Final = "enishi-dlq-source-topic"
SOURCE_PARTITION_HEADER: Final = "enishi-dlq-source-partition"
SOURCE_OFFSET_HEADER: Final = "enishi-dlq-source-offset"
TRUNCATED_HEADER: Final = "enishi-dlq-value-truncated"
"""On a letter whose value was too large to go whole: the original value's size in bytes."""
TRUNCATED_VALUE_BYTES: Final = 64 * 1024


class SourceRecord(Protocol):
    """What a dead letter needs of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class DeadLetter:
    """A record that cannot be processed, and why (naming the field, no personal data)."""

    record: SourceRecord
    reason: str


def headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The dead-letter headers of `letter`."""
    record = letter.record
    return [
        (REASON_HEADER, letter.reason.encode()),
        (SOURCE_TOPIC_HEADER, record.topic.encode()),
        (SOURCE_PARTITION_HEADER, str(record.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(record.offset).encode()),
    ]


async def send(producer: Any, letters: Sequence[DeadLetter]) -> None:
    """Produce `letters` to their dead-letter topics and wait until the broker has them all.

    A record as large as the producer allows no longer fits once the reason headers are added;
    it goes with the first TRUNCATED_VALUE_BYTES of its value and TRUNCATED_HEADER, since a
    letter that cannot be sent would fail its batch again and again and stop the partition.
    """
    deliveries = [await _send_one(producer, letter) for letter in letters]
    await asyncio.gather(*deliveries)


async def _send_one(producer: Any, letter: DeadLetter) -> Any:
    record = letter.record
    topic = topics.dlq(record.topic)
    try:
        return await producer.send(
            topic, value=record.value, key=record.key, headers=headers(letter)
        )
    except MessageSizeTooLargeError:
        value = record.value or b""
        return await producer.send(
            topic,
            value=value[:TRUNCATED_VALUE_BYTES],
            key=record.key,
            headers=[*headers(letter), (TRUNCATED_HEADER, str(len(value)).encode())],
        )
