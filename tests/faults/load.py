"""The fault suite's load: synthetic customers told to enishi over gRPC, as a careful client does.

The demo's population (`enishi.demo.population`) and request builders (`enishi.demo.feed`),
one customer at a time: `IngestService.Identify`, `CustomerService.UpdatePreferences`, then one
`IngestService.BatchTrack` with the customer's history and live event. Every touchpoint carries
an id the client chose, so a call retried after UNAVAILABLE (the service was killed, or Redis or
Kafka was away) is the same events again, which the memory dedupes. Only what a reply
acknowledged is counted as accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc

from enishi.demo.feed import (
    Pacer,
    identify_request,
    preferences_request,
    touchpoint,
)
from enishi.demo.population import DemoCustomer
from enishi.memory import model
from enishi.v1 import customer_service_pb2_grpc as customers_grpc
from enishi.v1 import ingest_service_pb2 as ingest_pb
from enishi.v1 import ingest_service_pb2_grpc as ingest_grpc

# What a real client retries: the service is away (killed, restarting, its Redis or Kafka
# away) or did not answer in time. Anything else is an answer, and a wrong one fails the test.
RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CALL_TIMEOUT: Final = 10.0
GIVE_UP_SECONDS: Final = 120.0
CONCURRENCY: Final = 16

Reply = TypeVar("Reply")


@dataclass
class Acknowledged:
    """Everything a reply acknowledged, by customer."""

    events: dict[str, set[str]] = field(default_factory=dict)
    """Every acknowledged touchpoint id (identify, consents, preferences, tracked events)."""
    tracked: dict[str, int] = field(default_factory=dict)
    """Acknowledged EVENT touchpoints per customer: the memory's `events_count`."""
    orders: dict[str, int] = field(default_factory=dict)
    """Acknowledged `order.completed` per customer: the memory's `orders_count`."""
    first_orders: set[str] = field(default_factory=set)
    """Customers whose live first order was acknowledged: each must be enrolled."""
    customers: int = 0
    retries: int = 0
    retried_codes: dict[str, int] = field(default_factory=dict)

    @property
    def event_count(self) -> int:
        return sum(len(ids) for ids in self.events.values())

    def add(self, customer_id: str, event_ids: Sequence[str]) -> None:
        self.events.setdefault(customer_id, set()).update(event_ids)


class Load:
    """Feeds customers at a steady pace, retrying what a real client retries."""

    def __init__(
        self,
        ingest: ingest_grpc.IngestServiceAsyncStub,
        customers: customers_grpc.CustomerServiceAsyncStub,
    ) -> None:
        self._ingest = ingest
        self._customers = customers
        self.acknowledged = Acknowledged()

    async def run(
        self,
        population: Sequence[DemoCustomer],
        *,
        per_second: float,
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        """Tell enishi about customers, `per_second` a second, until `until()` or the last."""
        pacer = Pacer(per_second)
        queue = list(reversed(population))

        async def worker() -> None:
            while queue and not until():
                customer = queue.pop()
                await self.customer(customer)
                self.acknowledged.customers += 1
                await pacer.take(1)

        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(worker())

    async def customer(self, customer: DemoCustomer) -> None:
        """One customer's whole story: identity, consents and preferences, history, live event."""
        acknowledged = self.acknowledged
        cid = customer.customer_id
        identified = await self._call(self._ingest.Identify, identify_request(customer))
        acknowledged.add(cid, [identified.event_id])
        preferences = await self._call(
            self._customers.UpdatePreferences, preferences_request(customer)
        )
        acknowledged.add(cid, list(preferences.event_ids))
        events = []
        for number, event in enumerate(customer.history):
            tp = touchpoint(cid, event)
            tp.event_id = f"{cid}-h{number:02d}"
            events.append(tp)
        if customer.trigger is not None:
            live = touchpoint(cid, customer.trigger)
            live.event_id = f"{cid}-live"
            events.append(live)
        reply = await self._call(
            self._ingest.BatchTrack, ingest_pb.BatchTrackRequest(events=events)
        )
        rejected = [r for r in reply.results if not r.accepted]
        assert not rejected, f"ingest rejected {cid}'s events: {rejected[0].errors}"
        acknowledged.add(cid, [r.event_id for r in reply.results])
        acknowledged.tracked[cid] = len(events)
        acknowledged.orders[cid] = sum(e.name == model.ORDER_COMPLETED for e in events)
        if customer.segment == "first_order":
            acknowledged.first_orders.add(cid)

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        give_up = time.monotonic() + GIVE_UP_SECONDS
        pause = 0.2
        while True:
            try:
                return await method(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() > give_up:
                    raise
                self.acknowledged.retries += 1
                name = exc.code().name
                self.acknowledged.retried_codes[name] = (
                    self.acknowledged.retried_codes.get(name, 0) + 1
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
