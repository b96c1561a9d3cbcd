"""Tell enishi about the synthetic customers, the way producers would: over gRPC.

`IngestService.Identify` (identities and traits), `CustomerService.UpdatePreferences`
(consents with source `demo`, preferences), then `IngestService.BatchTrack` for the history
and, last, the live events. Each phase finishes before the next starts, so a customer's
consents are in Kafka (same partition, earlier offset) before the event that starts a journey.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from enishi import grpc_client
from enishi.demo.population import DemoCustomer, Event
from enishi.memory.model import channel_value
from enishi.v1 import consent_pb2, identity_pb2, touchpoint_pb2
from enishi.v1 import customer_service_pb2 as customers_pb
from enishi.v1 import customer_service_pb2_grpc as customers_grpc
from enishi.v1 import ingest_service_pb2 as ingest_pb
from enishi.v1 import ingest_service_pb2_grpc as ingest_grpc

SOURCE: Final = "demo"
BATCH: Final = 250
CONCURRENCY: Final = 16
CALL_TIMEOUT: Final = 30.0
_PLATFORMS: Final = {
    "ios": identity_pb2.PUSH_PLATFORM_IOS,
    "android": identity_pb2.PUSH_PLATFORM_ANDROID,
}
_CONSENTS: Final = {
    "opted_in": consent_pb2.CONSENT_STATUS_OPTED_IN,
    "opted_out": consent_pb2.CONSENT_STATUS_OPTED_OUT,
}


_IDENTITY_FIELDS: Final = ("email", "phone", "line_user_id", "push_tokens")


def _shared_identity(exc: grpc.aio.AioRpcError) -> str | None:
    """The identity field ingest refused because another customer has it, else None."""
    details = exc.details() or ""
    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or "another" not in details:
        return None
    field = details.removeprefix("identity.").split(":", 1)[0].split("[", 1)[0]
    return field if field in _IDENTITY_FIELDS else None


class FeedError(RuntimeError):
    """Ingest or the customer service refused what the demo sent."""


@dataclass
class FeedCounts:
    """What has gone in so far, for the progress display."""

    phase: str = "starting"
    identified: int = 0
    preferences: int = 0
    history: int = 0
    live: int = 0
    rejected: int = 0
    shared_identities: int = 0  # an address another customer already has: left out

    @property
    def calls_and_events(self) -> int:
        return self.identified + self.preferences + self.history + self.live


class Pacer:
    """Holds the pace at `rate` items per second (0: as fast as the services answer)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._started = time.monotonic()
        self._done = 0

    async def take(self, items: int) -> None:
        self._done += items
        if self._rate > 0:
            ahead = self._done / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _timestamp(event: Event) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(event.occurred_at)
    return stamp


def identify_request(customer: DemoCustomer) -> ingest_pb.IdentifyRequest:
    identity = identity_pb2.Identity(
        customer_id=customer.customer_id,
        email=customer.email,
        phone=customer.phone,
        line_user_id=customer.line_user_id,
    )
    if customer.push_token:
        identity.push_tokens.append(
            identity_pb2.PushToken(
                token=customer.push_token, platform=_PLATFORMS[customer.push_platform]
            )
        )
    request = ingest_pb.IdentifyRequest(
        identity=identity, source=SOURCE, event_id=f"{customer.customer_id}-identify"
    )
    request.traits.update(customer.traits())
    return request


def preferences_request(customer: DemoCustomer) -> customers_pb.UpdatePreferencesRequest:
    prefs = consent_pb2.Preferences(locale=customer.locale, time_zone=customer.time_zone)
    if customer.preferred:
        prefs.preferred_channel = channel_value(customer.preferred)  # type: ignore[assignment]
    prefs.fallback_channels.extend(channel_value(c) for c in customer.fallback)  # type: ignore[misc]
    if customer.quiet_hours:
        prefs.quiet_hours.start, prefs.quiet_hours.end = customer.quiet_hours
    return customers_pb.UpdatePreferencesRequest(
        customer=identity_pb2.CustomerRef(customer_id=customer.customer_id),
        consents=[
            consent_pb2.ChannelConsent(
                channel=channel_value(channel),  # type: ignore[arg-type]
                status=_CONSENTS[status],
                source=SOURCE,
            )
            for channel, status in sorted(customer.consents.items())
        ],
        preferences=prefs,
        source=SOURCE,
        request_id=f"{customer.customer_id}-preferences",
    )


def touchpoint(customer_id: str, event: Event) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(
        customer=identity_pb2.CustomerRef(customer_id=customer_id),
        name=event.name,
        source=event.source,
        channel=event.channel,
        occurred_at=_timestamp(event),
    )
    tp.props.update(event.props)
    return tp


async def _bounded(calls: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run the calls, CONCURRENCY at a time; the first failure cancels the rest."""
    queue = list(calls)
    queue.reverse()

    async def worker() -> None:
        while queue:
            await queue.pop()()

    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())


class Feed:
    """Sends the population through ingest and the customer service, counting as it goes."""

    def __init__(self, ingest_target: str, customers_target: str, rate: float) -> None:
        self.counts = FeedCounts()
        self._ingest_target = ingest_target
        self._customers_target = customers_target
        self._pacer = Pacer(rate)

    async def run(self, customers: Sequence[DemoCustomer]) -> None:
        async with (
            grpc_client.aio_channel(self._ingest_target) as ingest_channel,
            grpc_client.aio_channel(self._customers_target) as customers_channel,
        ):
            ingest: ingest_grpc.IngestServiceAsyncStub = ingest_grpc.IngestServiceStub(
                ingest_channel
            )
            people: customers_grpc.CustomerServiceAsyncStub = customers_grpc.CustomerServiceStub(
                customers_channel
            )
            self.counts.phase = "identities and preferences"
            await _bounded(self._profile(ingest, people, c) for c in customers)
            self.counts.phase = "history"
            history = [touchpoint(c.customer_id, e) for c in customers for e in c.history]
            await self._track(ingest, history, live=False)
            self.counts.phase = "live events"
            live = [touchpoint(c.customer_id, c.trigger) for c in customers if c.trigger]
            await self._track(ingest, live, live=True)
            self.counts.phase = "sent"

    def _profile(
        self,
        ingest: ingest_grpc.IngestServiceAsyncStub,
        people: customers_grpc.CustomerServiceAsyncStub,
        customer: DemoCustomer,
    ) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            request = identify_request(customer)
            while True:
                try:
                    await ingest.Identify(request, timeout=CALL_TIMEOUT)
                    break
                except grpc.aio.AioRpcError as exc:
                    field = _shared_identity(exc)
                    if field is None or not getattr(request.identity, field):
                        raise  # not a shared address, or already left out: a real error
                    # Another customer (an earlier run's) has this address, like a family
                    # sharing one phone: ingest never moves it, so this customer goes without.
                    request.identity.ClearField(field)  # type: ignore[arg-type]
                    self.counts.shared_identities += 1
            self.counts.identified += 1
            await people.UpdatePreferences(preferences_request(customer), timeout=CALL_TIMEOUT)
            self.counts.preferences += 1
            await self._pacer.take(2)

        return call

    async def _track(
        self,
        ingest: ingest_grpc.IngestServiceAsyncStub,
        events: Sequence[touchpoint_pb2.Touchpoint],
        *,
        live: bool,
    ) -> None:
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            reply = await ingest.BatchTrack(
                ingest_pb.BatchTrackRequest(events=chunk), timeout=CALL_TIMEOUT
            )
            if reply.rejected_count:
                self.counts.rejected += reply.rejected_count
                bad = next(r for r in reply.results if not r.accepted)
                errors = "; ".join(f"{e.field}: {e.message}" for e in bad.errors)
                raise FeedError(f"ingest rejected {reply.rejected_count} event(s), e.g. {errors}")
            if live:
                self.counts.live += reply.accepted_count
            else:
                self.counts.history += reply.accepted_count
            await self._pacer.take(len(chunk))
