"""Enrolling one customer in one journey: re-entry, cap, record, then signal-with-start.

The one enrolling step behind every trigger (docs/journey-runtime.md): an event trigger and a
condition turning true in the stream processor, a schedule run and the condition sweep in the
worker. The checks are `records.decide` and `EnrollmentStore.enroll`; the start is
`JourneyCalls.start`. Nothing here knows where the trigger came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Final, Protocol

import structlog
from redis.asyncio import Redis

from enishi import keys
from enishi.enrollment.calls import JourneyCalls
from enishi.enrollment.index import TriggerEntry, holds
from enishi.enrollment.records import STARTS, EnrollmentStore, Outcome, decide
from enishi.journeys import conditions
from enishi.journeys.context import customer_variables
from enishi.journeys.model import in_holdout
from enishi.memory.reader import MemoryReader
from enishi.metrics import TRIGGER_DECISIONS
from enishi.v1 import customer_pb2
from workflows import contract

log = structlog.get_logger(__name__)

# Customers whose trigger work runs at once. Each holds a Redis connection while it works (a
# memory read, a WATCH/MULTI enrollment), and redis-py's asyncio pool (100 connections by
# default) raises MaxConnectionsError instead of waiting: a batch with more customers than
# that would fail, be redelivered and fail again, forever. Temporal calls are bounded apart.
CUSTOMER_CONCURRENCY: Final = 32

Snapshot = MutableMapping[str, dict[str, Any] | None]
"""Journey id -> one customer's enrollment record as last read (a batch's view)."""


class CustomerContexts(Protocol):
    """Loads `customer` CEL variables for customers whose triggers need them."""

    async def load(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...


class MemoryContexts:
    """`customer` variables from the memory reader, the customers read concurrently."""

    def __init__(self, reader: MemoryReader, *, concurrency: int = CUSTOMER_CONCURRENCY) -> None:
        self._reader = reader
        self._slots = asyncio.Semaphore(concurrency)

    async def load(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(customer_ids)
        views = await asyncio.gather(*(self._read(cid) for cid in ids))
        return {cid: customer_variables(cid, view) for cid, view in zip(ids, views, strict=True)}

    async def _read(self, customer_id: str) -> customer_pb2.Customer | None:
        async with self._slots:
            return await self._reader.customer(customer_id, timeline_limit=0)


class Enroller:
    """Decides, records and starts enrollments; remembers condition values."""

    def __init__(
        self, redis: Redis, calls: JourneyCalls, *, store: EnrollmentStore | None = None
    ) -> None:
        self._redis = redis
        self._calls = calls
        self._store = store or EnrollmentStore(redis)

    async def enroll(
        self,
        customer_id: str,
        entry: TriggerEntry,
        signal: contract.EventSignal,
        now_ms: int,
        *,
        known: Snapshot | None = None,
    ) -> Outcome:
        """Record and start an enrollment if re-entry and the cap allow; what became of it.

        A workflow was started (or signalled again) when the outcome is in `STARTS`: ENROLLED
        is a new enrollment, RESUMED the same trigger's enrollment once more.

        `signal` is the trigger: its `event_id` is what makes a redelivered (or retried)
        trigger resume the same enrollment instead of starting another. `known`, when given,
        is the caller's snapshot of the customer's records: it rules most triggers out without
        a Redis transaction and is brought up to date.
        """
        if known is not None:
            outcome = decide(known.get(entry.journey_id), entry, signal.event_id, now_ms)
            if outcome not in STARTS:
                TRIGGER_DECISIONS.labels(outcome.value).inc()
                return outcome
        holdout = in_holdout(entry.journey_id, entry.holdout, customer_id)
        result = await self._store.enroll(
            customer_id, entry, signal.event_id, now_ms, holdout=holdout
        )
        if known is not None:
            known[entry.journey_id] = result.record
        if result.outcome not in STARTS:
            TRIGGER_DECISIONS.labels(result.outcome.value).inc()
            return result.outcome
        request = contract.JourneyInput(
            journey_id=entry.journey_id,
            version=result.version,
            customer_id=customer_id,
            enrollment=result.count,
            holdout=result.holdout,
        )
        await self._calls.start(request, signal)
        label = "holdout" if result.outcome is Outcome.ENROLLED and result.holdout else None
        TRIGGER_DECISIONS.labels(label or result.outcome.value).inc()
        log.info(
            "triggers.enrolled",
            journey_id=entry.journey_id,
            version=result.version,
            enrollment=result.count,
            holdout=result.holdout,
            outcome=result.outcome.value,
            event_id=signal.event_id,
        )
        return result.outcome

    async def condition_values(self, customer_ids: Sequence[str]) -> list[dict[str, bool]]:
        """Per customer, journey -> the last value of its condition trigger (one pipeline)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                pipe.hgetall(keys.customer(customer_id, keys.CONDITIONS))
            results = await pipe.execute()
        return [
            {j.decode(errors="replace"): v == b"1" for j, v in values.items()} for values in results
        ]

    async def conditions(
        self,
        customer_id: str,
        entries: Sequence[TriggerEntry],
        context: Mapping[str, Any],
        previous: Mapping[str, bool],
        signal: contract.EventSignal,
        now_ms: int,
        *,
        known: Snapshot | None = None,
    ) -> int:
        """Enroll where a condition turned from false (or unknown) to true; remember values.

        `previous` is the customer's stored values; `signal` the trigger of any enrollment.
        The new values are written after the enrollments: a crash in between re-evaluates the
        change on the retry, and the enrollment record (keyed on the same trigger) makes that
        a resume, not a second enrollment. Returns how many new enrollments there were.
        """
        variables = {conditions.CUSTOMER: context}
        changed: dict[str, str] = {}
        started = 0
        for entry in entries:
            now_true = holds(entry, variables, count_filtered=False)
            if now_true == previous.get(entry.journey_id, False):
                continue
            if now_true:
                outcome = await self.enroll(customer_id, entry, signal, now_ms, known=known)
                started += outcome is Outcome.ENROLLED
            changed[entry.journey_id] = "1" if now_true else "0"
        if changed:
            await self._redis.hset(
                keys.customer(customer_id, keys.CONDITIONS),
                mapping=changed,  # type: ignore[arg-type]
            )
        return started
