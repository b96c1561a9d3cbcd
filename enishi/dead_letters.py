"""Dead-letter records: the original key and value to `<topic>.dlq`, the reason in headers.

Header names follow docs/contracts.md. Every consumer (stream processor, channel services)
dead-letters through this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from enishi import topics

REASON_HEADER: Final = "enishi-dlq-reason"
SOURCE_TOPIC_HEADER: Final = "enishi-dlq-source-topic"
SOURCE_PARTITION_HEADER: Final = "enishi-dlq-source-partition"
SOURCE_OFFSET_HEADER: Final = "enishi-dlq-source-offset"


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
    """Produce `letters` to their dead-letter topics and wait until the broker has them all."""
    deliveries = [
        await producer.send(
            topics.dlq(letter.record.topic),
            value=letter.record.value,
            key=letter.record.key,
            headers=headers(letter),
        )
        for letter in letters
    ]
    await asyncio.gather(*deliveries)
