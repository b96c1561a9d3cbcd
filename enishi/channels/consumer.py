"""The channel consumer framework: `dispatch.<channel>` in, one delivery per dispatch id out.

Per batch (docs/channels.md, "Exactly once"):

1. decode and check every record; what cannot be a dispatch goes to `<topic>.dlq`;
2. claim each dispatch id in Redis (`SET NX` delivery record, state `inflight`): a record
   whose dispatch is already `done` is not sent again, its stored receipt is re-published;
   one found `inflight` (a crash mid-send) is sent again with the same idempotency key, so
   the provider drops the copy;
3. deliver, one customer's dispatches in order, customers concurrently: take a token from
   the provider's shared bucket, call the adapter, retry transient failures with exponential
   backoff and jitter (at least the provider's Retry-After), and mark the record `done` with
   its receipt as soon as the outcome is known;
4. publish the receipts to `touchpoints` (`message.sent`, `message.failed`) and the dead
   letters of permanent failures, wait for Kafka's acks;
5. only then commit `offset + 1` per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import DecodeError
from redis.asyncio import Redis

from enishi import dead_letters, kafka, keys, tracing
from enishi.channels import feedback
from enishi.channels.protocol import ChannelSender, DeliveryOutcome
from enishi.channels.ratelimit import TokenBucket
from enishi.channels.receipts import channel_name, receipt_touchpoint
from enishi.config import ChannelSettings
from enishi.dead_letters import DeadLetter, SourceRecord
from enishi.kafka import consume_batches
from enishi.metrics import CHANNEL_ATTEMPTS, CHANNEL_DISPATCHES, CHANNEL_SEND_SECONDS
from enishi.service_clients import service_clients
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2

log = structlog.get_logger(__name__)

INFLIGHT: Final = b"inflight"
DONE: Final = b"done"
MAX_DISPATCH_ID_CHARS: Final = 128
# A Retry-After beyond this is cut to it: a partition must not stall for an hour, and the
# retries that follow still fail the dispatch as `message.failed` if the provider stays shut.
RETRY_AFTER_CAP_SECONDS: Final = 120.0
# Long enough for a batch whose deliveries back off several times (aiokafka's default is 5 min).
MAX_POLL_INTERVAL_MS: Final = 15 * 60 * 1000

SentHook = Callable[[dispatch_pb2.DispatchEvent], Awaitable[None]]
"""Called after a dispatch is marked sent (LINE remembers it to link replies)."""

Companion = Callable[[Redis, AIOKafkaProducer], AbstractAsyncContextManager[None]]
"""Something a channel service runs beside its consumer (the LINE webhook), sharing clients."""


class InvalidDispatch(ValueError):
    """A record that is not a deliverable dispatch; the message names the field."""


def decode(record: SourceRecord, channel: str) -> dispatch_pb2.DispatchEvent:
    """The DispatchEvent in `record` for `channel`, or `InvalidDispatch` naming why not."""
    if record.value is None:
        raise InvalidDispatch("value: missing")
    try:
        dispatch = dispatch_pb2.DispatchEvent.FromString(record.value)
    except DecodeError:
        raise InvalidDispatch("value: not an enishi.v1.DispatchEvent") from None
    if not dispatch.dispatch_id:
        raise InvalidDispatch("dispatch_id: missing")
    if len(dispatch.dispatch_id) > MAX_DISPATCH_ID_CHARS:
        raise InvalidDispatch(f"dispatch_id: longer than {MAX_DISPATCH_ID_CHARS} characters")
    if dispatch.channel not in channel_pb2.Channel.values():
        raise InvalidDispatch(f"channel: unknown value {dispatch.channel}")
    if (
        dispatch.channel == channel_pb2.CHANNEL_UNSPECIFIED
        or channel_name(dispatch.channel) != channel
    ):
        raise InvalidDispatch(
            f"channel: {channel_pb2.Channel.Name(dispatch.channel)} on the {channel} topic"
        )
    if dispatch.WhichOneof("content") != channel:
        raise InvalidDispatch(f"{channel}: missing, required for channel {channel}")
    if not dispatch.customer_id:
        raise InvalidDispatch("customer_id: missing")
    if record.key is None:
        raise InvalidDispatch("key: missing (the customer id)")
    try:
        key = record.key.decode()
    except UnicodeDecodeError:
        raise InvalidDispatch("key: not UTF-8") from None
    if key != dispatch.customer_id:
        raise InvalidDispatch("customer_id: differs from the record key")
    if not dispatch.address:
        raise InvalidDispatch("address: missing")
    if dispatch.HasField("expires_at"):
        try:
            dispatch.expires_at.ToDatetime()
        except (ValueError, OverflowError):
            raise InvalidDispatch("expires_at: out of range (years 1 to 9999)") from None
    return dispatch


def backoff(attempt: int, retry_after: float | None, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (`base * 2^(attempt-1)`, at most `cap`) with "equal jitter" (half fixed, half
    random), so instances retrying together spread out; never less than the provider's
    Retry-After (itself capped at RETRY_AFTER_CAP_SECONDS).
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay: float = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


@dataclass(frozen=True)
class Finished:
    """A dispatch's final word: its receipt, and the dead-letter reason when it failed."""

    receipt: touchpoint_pb2.Touchpoint
    dead_letter_reason: str = ""

    def encode(self) -> bytes:
        reason = self.dead_letter_reason.replace("\n", " ").encode()
        return DONE + b"\n" + reason + b"\n" + self.receipt.SerializeToString()

    @classmethod
    def decode(cls, value: bytes) -> Finished:
        _, reason, receipt = value.split(b"\n", 2)
        return cls(touchpoint_pb2.Touchpoint.FromString(receipt), reason.decode())


class DeliveryRecords:
    """The dedupe: one Redis STRING per dispatch id, `inflight` then `done` with its receipt."""

    def __init__(self, redis: Redis, channel: str, *, ttl_seconds: int) -> None:
        self._redis = redis
        self._channel = channel
        self._ttl = ttl_seconds

    async def claim(self, dispatch_ids: Sequence[str]) -> list[Finished | None]:
        """Per dispatch id: None when it must be sent (new, or left `inflight` by a crash),
        else how it finished before."""
        if not dispatch_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for dispatch_id in dispatch_ids:
                key = keys.delivery(self._channel, dispatch_id)
                pipe.set(key, INFLIGHT, nx=True, ex=self._ttl)
                pipe.get(key)
            replies = await pipe.execute()
        result: list[Finished | None] = []
        for dispatch_id, created, value in zip(
            dispatch_ids, replies[0::2], replies[1::2], strict=True
        ):
            if created or value is None or not bytes(value).startswith(DONE):
                if not created:
                    log.info("channel.resuming_inflight", dispatch_id=dispatch_id)
                result.append(None)
            else:
                result.append(Finished.decode(bytes(value)))
        return result

    async def get(self, dispatch_id: str) -> Finished | None:
        """How a dispatch finished, or None when it is unknown or still in flight."""
        value = await self._redis.get(keys.delivery(self._channel, dispatch_id))
        if isinstance(value, str):
            value = value.encode()
        if value is None or not value.startswith(DONE):
            return None
        return Finished.decode(value)

    async def finish(self, dispatch_id: str, finished: Finished) -> None:
        """Mark the dispatch done, keeping its receipt for redelivered copies."""
        await self._redis.set(
            keys.delivery(self._channel, dispatch_id), finished.encode(), ex=self._ttl
        )


@dataclass(frozen=True)
class BatchOutcome:
    """How many records of a batch were sent, failed, duplicates or dead-lettered as invalid."""

    sent: int = 0
    failed: int = 0
    duplicates: int = 0
    invalid: int = 0


def _traceparent(record: Any) -> str:
    for name, value in getattr(record, "headers", None) or ():
        if name == "traceparent" and value:
            return bytes(value).decode(errors="replace")
    return ""


class ChannelProcessor:
    """Delivers batches of consumed dispatch records; knows nothing of polling or committing."""

    def __init__(
        self,
        channel: str,
        sender: ChannelSender,
        redis: Redis,
        producer: AIOKafkaProducer,
        settings: ChannelSettings,
        *,
        limiter: TokenBucket | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_sent: SentHook | None = None,
    ) -> None:
        self._channel = channel
        self._on_sent = on_sent
        self._sender = sender
        self._producer = producer
        self._publisher = TouchpointPublisher(producer)
        self._settings = settings
        self._records = DeliveryRecords(
            redis, channel, ttl_seconds=int(settings.channel_dedupe_hours * 3600)
        )
        self._limiter = limiter or TokenBucket(
            redis,
            sender.provider,
            rate=settings.channel_rate_per_second,
            burst=settings.channel_rate_burst,
        )
        self._slots = asyncio.Semaphore(settings.channel_concurrency)
        self._now = now

    async def process(self, records: Sequence[Any]) -> BatchOutcome:
        """Make the effects of `records` durable: deliveries, receipts, dead letters."""
        letters: list[DeadLetter] = []
        receipts: list[touchpoint_pb2.Touchpoint] = []
        work: list[tuple[Any, dispatch_pb2.DispatchEvent]] = []
        seen: set[str] = set()
        duplicates = 0
        for record in records:
            try:
                dispatch = decode(record, self._channel)
            except InvalidDispatch as exc:
                letters.append(DeadLetter(record, str(exc)))
                log.warning(
                    "channel.dead_lettered",
                    reason=str(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                continue
            if dispatch.dispatch_id in seen:
                duplicates += 1
                continue
            seen.add(dispatch.dispatch_id)
            work.append((record, dispatch))
        invalid = len(letters)

        to_send: dict[str, list[tuple[Any, dispatch_pb2.DispatchEvent]]] = {}
        claims = await self._records.claim([d.dispatch_id for _, d in work])
        for (record, dispatch), finished in zip(work, claims, strict=True):
            if finished is None:
                to_send.setdefault(dispatch.customer_id, []).append((record, dispatch))
                continue
            # Done before (a redelivered record): the receipt again, never the message.
            duplicates += 1
            receipts.append(finished.receipt)
            if finished.dead_letter_reason:
                letters.append(DeadLetter(record, finished.dead_letter_reason))

        chains = [self._deliver_in_order(chain) for chain in to_send.values()]
        sent = failed = 0
        for results in await asyncio.gather(*chains):
            for record, finished in results:
                receipts.append(finished.receipt)
                if finished.receipt.name == "message.sent":
                    sent += 1
                else:
                    failed += 1
                if finished.dead_letter_reason:
                    letters.append(DeadLetter(record, finished.dead_letter_reason))

        # Receipts, each followed by what it tells memory (a dead address: unreachable).
        await self._publisher.publish(feedback.with_feedback(receipts))
        if letters:
            await dead_letters.send(self._producer, letters)
        channel = self._channel
        CHANNEL_DISPATCHES.labels(channel, "sent").inc(sent)
        CHANNEL_DISPATCHES.labels(channel, "failed").inc(failed)
        CHANNEL_DISPATCHES.labels(channel, "duplicate").inc(duplicates)
        CHANNEL_DISPATCHES.labels(channel, "dead_lettered").inc(invalid)
        return BatchOutcome(sent=sent, failed=failed, duplicates=duplicates, invalid=invalid)

    async def _deliver_in_order(
        self, chain: list[tuple[Any, dispatch_pb2.DispatchEvent]]
    ) -> list[tuple[Any, Finished]]:
        results = []
        for record, dispatch in chain:
            async with self._slots:
                with self._processing(record, dispatch):
                    # Traced, the receipt continues from this dispatch's span; off, it carries
                    # the record's `traceparent` on as it came.
                    traceparent = tracing.current_traceparent() or _traceparent(record)
                    finished = await self.deliver(dispatch, traceparent=traceparent)
            results.append((record, finished))
        return results

    def _processing(
        self, record: Any, dispatch: dispatch_pb2.DispatchEvent
    ) -> contextlib.AbstractContextManager[object]:
        """The span of one dispatch's delivery, child of the context its record carries."""
        if not tracing.enabled():
            return contextlib.nullcontext()
        return tracing.span(
            f"process {record.topic}",
            kind=tracing.SpanKind.CONSUMER,
            parent=tracing.extract_context(getattr(record, "headers", None)),
            attributes={
                "messaging.system": "kafka",
                "enishi.channel": self._channel,
                "enishi.dispatch_id": dispatch.dispatch_id,
            },
        )

    async def deliver(
        self, dispatch: dispatch_pb2.DispatchEvent, *, traceparent: str = ""
    ) -> Finished:
        """Deliver one claimed dispatch with retries; record and return how it finished."""
        settings = self._settings
        provider = self._sender.provider
        attempts = 0
        while True:
            if (
                dispatch.HasField("expires_at")
                and dispatch.expires_at.ToDatetime(UTC) <= self._now()
            ):
                CHANNEL_DISPATCHES.labels(self._channel, "expired").inc()
                outcome = DeliveryOutcome.permanent("expired", "expires_at passed before delivery")
                # Not a dead letter: the dispatch was fine, it was only too late.
                finished = self._finished(dispatch, outcome, attempts, traceparent, letter=False)
                break
            await self._limiter.acquire()
            attempts += 1
            outcome = await self._attempt(dispatch)
            CHANNEL_ATTEMPTS.labels(self._channel, provider, outcome.kind).inc()
            if outcome.kind == "sent":
                finished = self._finished(dispatch, outcome, attempts, traceparent)
                break
            if outcome.kind == "permanent" or attempts >= settings.channel_max_attempts:
                finished = self._finished(dispatch, outcome, attempts, traceparent)
                break
            delay = backoff(
                attempts,
                outcome.retry_after,
                base=settings.channel_retry_base_seconds,
                cap=settings.channel_retry_max_seconds,
            )
            log.info(
                "channel.retrying",
                dispatch_id=dispatch.dispatch_id,
                attempt=attempts,
                error_code=outcome.error_code,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)
        await self._records.finish(dispatch.dispatch_id, finished)
        if self._on_sent is not None and finished.receipt.name == "message.sent":
            await self._on_sent(dispatch)
        log.info(
            "channel.delivered" if finished.receipt.name == "message.sent" else "channel.failed",
            dispatch_id=dispatch.dispatch_id,
            attempts=attempts,
            error_code=finished.receipt.receipt.error_code or None,
        )
        return finished

    async def _attempt(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        with tracing.span(
            f"send {self._sender.provider}",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "enishi.channel": self._channel,
                "enishi.dispatch_id": dispatch.dispatch_id,
            },
        ) as span:
            outcome = await self._call_provider(dispatch)
            if span.is_recording():
                span.set_attribute("enishi.outcome", outcome.kind)
                if outcome.kind != "sent":
                    span.set_status(tracing.Status(tracing.StatusCode.ERROR, outcome.error_code))
            return outcome

    async def _call_provider(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(
                self._sender.deliver(dispatch), self._settings.channel_send_timeout_seconds
            )
        except TimeoutError:
            return DeliveryOutcome.transient("timeout", "provider call timed out")
        except Exception as exc:  # a network error, or an adapter bug: retried, then failed
            return DeliveryOutcome.transient("error", type(exc).__name__)
        finally:
            CHANNEL_SEND_SECONDS.labels(self._channel).observe(time.perf_counter() - started)

    def _finished(
        self,
        dispatch: dispatch_pb2.DispatchEvent,
        outcome: DeliveryOutcome,
        attempts: int,
        traceparent: str,
        *,
        letter: bool = True,
    ) -> Finished:
        sent = outcome.kind == "sent"
        permanent = outcome.kind == "permanent"
        receipt = receipt_touchpoint(
            dispatch_id=dispatch.dispatch_id,
            customer_id=dispatch.customer_id,
            channel=dispatch.channel,
            status=dispatch_pb2.DELIVERY_STATUS_SENT
            if sent
            else dispatch_pb2.DELIVERY_STATUS_FAILED,
            provider=self._sender.provider,
            at=self._now(),
            reason=dispatch.reason,
            provider_message_id=outcome.provider_message_id,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            permanent=permanent,
            attempts=attempts,
            traceparent=traceparent,
        )
        # A dead address is news about the customer, not a broken dispatch: no dead letter.
        if sent or not letter or (permanent and feedback.is_dead_address(outcome.error_code)):
            return Finished(receipt)
        why = outcome.error_code + (f": {outcome.error_message}" if outcome.error_message else "")
        if permanent:
            reason = f"{self._sender.provider}: permanent failure: {why}"
        else:
            reason = f"{self._sender.provider}: gave up after {attempts} attempts: {why}"
        return Finished(receipt, reason)


async def consume(
    consumer: AIOKafkaConsumer,
    processor: ChannelProcessor,
    *,
    batch_max: int,
    batch_wait_ms: int,
) -> None:
    """Poll, deliver, commit, forever (until cancelled). The consumer must be started."""
    await consume_batches(
        consumer,
        processor.process,
        batch_max=batch_max,
        batch_wait_ms=batch_wait_ms,
        name="channel",
    )


def consumer_for(settings: ChannelSettings, channel: str) -> AIOKafkaConsumer:
    """The channel service's consumer: manual commits, from the earliest offset when new."""
    return AIOKafkaConsumer(
        settings.topic_for(channel),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.group_for(channel),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.channel_batch_max,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        **kafka.client_options(settings),
    )


async def run_channel(
    channel: str,
    settings: ChannelSettings,
    sender: ChannelSender,
    *,
    companions: Sequence[Companion] = (),
    on_sent: Callable[[Redis], SentHook] | None = None,
) -> None:
    """A channel service's whole life: clients, /metrics and /readyz, companions, the loop.

    Ready once Kafka and Redis are connected; reaching the provider is not part of it (a
    provider outage is retried per dispatch, it must not take the service out of rotation).
    """
    consumer = consumer_for(settings, channel)
    try:
        async with service_clients(settings) as clients:
            redis, producer = clients.redis, clients.producer
            try:
                async with contextlib.AsyncExitStack() as stack:
                    for companion in companions:
                        await stack.enter_async_context(companion(redis, producer))
                    await consumer.start()
                    clients.ready = True
                    log.info(
                        "channel.consuming", channel=channel, topic=settings.topic_for(channel)
                    )
                    processor = ChannelProcessor(
                        channel,
                        sender,
                        redis,
                        producer,
                        settings,
                        on_sent=on_sent(redis) if on_sent is not None else None,
                    )
                    await consume(
                        consumer,
                        processor,
                        batch_max=settings.channel_batch_max,
                        batch_wait_ms=settings.channel_batch_wait_ms,
                    )
            finally:
                await consumer.stop()
    finally:
        await sender.aclose()
