"""The stream processor: a batch of touchpoint records in, customer memory written, offsets out.

A plain aiokafka consumer loop (docs/stream.md says why not Faust): poll a batch, decode and
plan every record (the undecodable or invalid go to the dead-letter topic), apply the batch
to Redis in one pipeline, run the hook, and only then commit `offset + 1` per partition.
A crash anywhere before the commit redelivers the batch; the memory dedupes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from enishi import dead_letters, tracing
from enishi.config import CommonSettings
from enishi.dead_letters import DeadLetter, SourceRecord
from enishi.kafka import client_options, consume_batches
from enishi.memory import model
from enishi.memory.apply import InvalidTouchpoint, Plan, plan, validate
from enishi.memory.writer import MemoryWriter
from enishi.metrics import STREAM_BATCH_SECONDS, STREAM_RECORDS
from enishi.v1 import touchpoint_pb2
from services.stream.hooks import AppliedBatch, BatchHook

log = structlog.get_logger(__name__)

PROCESS_SPAN = "process touchpoints"


@dataclass(frozen=True)
class BatchOutcome:
    """How many records of a batch were applied, duplicates, or dead-lettered."""

    applied: int
    duplicates: int
    dead_lettered: int


def decode(record: SourceRecord, now_ms: int) -> tuple[touchpoint_pb2.Touchpoint, Plan]:
    """The touchpoint in `record` and its memory plan, or `InvalidTouchpoint` naming why not."""
    if record.value is None:
        raise InvalidTouchpoint("value: missing")
    try:
        touchpoint = touchpoint_pb2.Touchpoint.FromString(record.value)
    except DecodeError:
        raise InvalidTouchpoint("value: not an enishi.v1.Touchpoint") from None
    if record.key is None:
        raise InvalidTouchpoint("key: missing (the customer id)")
    try:
        key = record.key.decode()
    except UnicodeDecodeError:
        raise InvalidTouchpoint("key: not UTF-8") from None
    validate(touchpoint, key)
    for name in ("occurred_at", "received_at"):
        if touchpoint.HasField(name) and not _in_range(getattr(touchpoint, name)):
            raise InvalidTouchpoint(f"{name}: out of range (years 1 to 9999)")
    try:
        return touchpoint, plan(touchpoint, now_ms=now_ms, validated=True)
    except InvalidTouchpoint:
        raise
    except Exception as exc:
        # Planning is pure, so what it cannot handle is in the record (an enum value of a
        # newer schema, a NaN trait); raised, it would fail the batch forever.
        raise InvalidTouchpoint(f"value: cannot be applied ({type(exc).__name__})") from None


def _in_range(stamp: Timestamp) -> bool:
    try:
        stamp.ToDatetime()
    except (ValueError, OverflowError):
        return False
    return True


class StreamProcessor:
    """Applies batches of consumed records; knows nothing of polling or committing."""

    def __init__(
        self, writer: MemoryWriter, producer: Any, *, hook: BatchHook | None = None
    ) -> None:
        self._writer = writer
        self._producer = producer
        self._hook = hook

    async def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Make the effects of `records` durable (memory, dead letters, hook)."""
        spans = tracing.record_spans(PROCESS_SPAN)
        if spans is None:
            return await self._process(records, None)
        with spans:
            return await self._process(records, spans)

    async def _process(
        self, records: Sequence[SourceRecord], spans: tracing.RecordSpans | None
    ) -> BatchOutcome:
        now = datetime.now(UTC)
        now_ms = model.datetime_ms(now)
        touchpoints: list[touchpoint_pb2.Touchpoint] = []
        plans: list[Plan] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                touchpoint, event_plan = decode(record, now_ms)
            except InvalidTouchpoint as exc:
                letters.append(DeadLetter(record, str(exc)))
                log.warning(
                    "stream.dead_lettered",
                    reason=str(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                continue
            touchpoints.append(touchpoint)
            plans.append(event_plan)
            if spans is not None:
                # A span per traced record, from decoding to the end of the batch; the hook's
                # Temporal calls for this touchpoint become its children (via `trace`).
                spans.add(record, touchpoint.trace, {"enishi.event_name": touchpoint.name})
        flags = await self._writer.apply(plans, now=now)
        if letters:
            await dead_letters.send(self._producer, letters)
        applied = [tp for tp, new in zip(touchpoints, flags, strict=True) if new]
        duplicates = [tp for tp, new in zip(touchpoints, flags, strict=True) if not new]
        if self._hook is not None and touchpoints:
            await self._hook.on_applied(AppliedBatch(applied=applied, duplicates=duplicates))
        STREAM_RECORDS.labels("applied").inc(len(applied))
        STREAM_RECORDS.labels("duplicate").inc(len(duplicates))
        STREAM_RECORDS.labels("dead_lettered").inc(len(letters))
        return BatchOutcome(len(applied), len(duplicates), len(letters))


async def consume(
    consumer: AIOKafkaConsumer,
    processor: StreamProcessor,
    *,
    batch_max: int,
    batch_wait_ms: int,
) -> None:
    """Poll, process, commit, forever (until cancelled). The consumer must be started."""

    async def timed(records: list[Any]) -> BatchOutcome:
        started = time.perf_counter()
        outcome = await processor.process(records)
        STREAM_BATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome

    await consume_batches(
        consumer, timed, batch_max=batch_max, batch_wait_ms=batch_wait_ms, name="stream"
    )


def consumer_for(
    settings: CommonSettings, topic: str, group_id: str, *, batch_max: int
) -> AIOKafkaConsumer:
    """The stream processor's consumer: manual commits, from the earliest offset when new."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_max,
        **client_options(settings),
    )
