"""Journey triggers and event routing: the stream processor's `BatchHook`.

Per batch (docs/stream.md "Triggers and routing"): one pipelined Redis read (the trigger
index revision, and per customer its alias, `awaits` and, when an event of theirs names a
trigger, `enrollments`); then, only for events a journey triggers on or an enrollment
awaits, CEL filters, enrollment records and Temporal calls. Customers run concurrently, each
customer's events in order. An event nobody cares about costs no Temporal call and no Redis
round trip beyond the batch's one read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from google.protobuf import json_format
from redis.asyncio import Redis

from enishi import keys
from enishi.enrollment.calls import JourneyCalls
from enishi.enrollment.enroller import (
    CUSTOMER_CONCURRENCY,
    CustomerContexts,
    Enroller,
    MemoryContexts,
)
from enishi.enrollment.index import TriggerEntry, TriggerIndex, TriggerIndexCache, holds
from enishi.enrollment.records import STARTS, EnrollmentStore, load
from enishi.journeys import conditions
from enishi.journeys.context import event_variables
from enishi.memory.reader import MemoryReader
from enishi.memory.writer import MemoryWriter
from enishi.v1 import touchpoint_pb2
from services.stream.hooks import AppliedBatch
from services.stream.merges import EnrollmentMerges, is_merge
from workflows import contract

log = structlog.get_logger(__name__)

Resolve = Callable[[Iterable[str]], Awaitable[dict[str, str]]]

# Compare-and-delete: drop a stale `awaits` field only if it still holds what we read, so a
# new enrollment's fresh entry (written by the worker meanwhile) survives.
_DROP_AWAIT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass
class _Customer:
    """One customer's share of a batch, and what the batch's read found about them."""

    customer_id: str
    events: list[touchpoint_pb2.Touchpoint]
    awaits: dict[str, frozenset[str]] = field(default_factory=dict)
    awaits_raw: dict[str, bytes] = field(default_factory=dict)
    enrollments: dict[str, dict[str, Any] | None] | None = None
    """Journey -> record as read with the batch; None when not read (decide in Redis)."""
    conditions: dict[str, bool] = field(default_factory=dict)
    """Journey -> the last value of its condition trigger for this customer."""


class JourneyTriggers:
    """Finds the journeys each touchpoint triggers or is awaited by, and tells Temporal."""

    def __init__(
        self,
        redis: Redis,
        calls: JourneyCalls,
        *,
        index: TriggerIndexCache | None = None,
        store: EnrollmentStore | None = None,
        contexts: CustomerContexts | None = None,
        resolve: Resolve | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = CUSTOMER_CONCURRENCY,
    ) -> None:
        self._redis = redis
        self._slots = asyncio.Semaphore(concurrency)
        self._calls = calls
        self._index = index or TriggerIndexCache(redis)
        self._enroller = Enroller(redis, calls, store=store)
        self._contexts = contexts or MemoryContexts(MemoryReader(redis))
        self._resolve = resolve or MemoryWriter(redis).resolve
        self._merges = EnrollmentMerges(redis, calls, self._resolve)
        self._clock = clock
        self._drop_await = redis.register_script(_DROP_AWAIT)

    async def on_applied(self, batch: AppliedBatch) -> None:
        # Duplicates first: they are redeliveries of events older than the batch's new ones.
        touchpoints = _unique([*batch.duplicates, *batch.applied])
        if not touchpoints:
            return
        # Merges first: the survivor's events in this batch then see the enrollments that
        # followed them (a journey the merged visitor is in is not entered twice).
        for tp in touchpoints:
            if is_merge(tp):
                await self._merges.follow(tp)
        customers, index = await self._read(touchpoints)
        # Condition triggers watch every customer whose memory changed; event triggers and
        # awaits only the customers with an event someone cares about.
        work = customers if index.conditions else [c for c in customers if _has_work(c, index)]
        if not work:
            return
        needing = {
            c.customer_id
            for c in work
            if index.conditions
            or any(e.uses_customer for tp in c.events for e in index.entries(tp.name))
        }
        contexts = await self._contexts.load(needing) if needing else {}
        if index.conditions:
            await self._read_condition_values(work)
        now_ms = int(self._clock() * 1000)
        results = await asyncio.gather(
            *(self._bounded(c, index, contexts.get(c.customer_id), now_ms) for c in work),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.error("triggers.batch_failed", failures=len(failures), error=repr(failures[0]))
            # Not committed → redelivered as duplicates → enrollment records make the retry
            # resume the starts that did not happen and skip those that did.
            raise failures[0]

    async def _read(
        self, touchpoints: Sequence[touchpoint_pb2.Touchpoint]
    ) -> tuple[list[_Customer], TriggerIndex]:
        """The batch's one pipelined read (a second one only for merged ids, rare)."""
        by_id: dict[str, list[touchpoint_pb2.Touchpoint]] = {}
        for tp in touchpoints:
            by_id.setdefault(tp.customer_id, []).append(tp)
        cached = self._index.current
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.TRIGGER_INDEX_REVISION)
            for cid, events in by_id.items():
                pipe.get(keys.alias(cid))
                _queue_customer_reads(pipe, cid, _names_triggers(events, cached))
            results = await pipe.execute()
        index = await self._index.refresh(results[0])
        customers: dict[str, _Customer] = {}
        aliased: list[str] = []
        position = 1
        for cid, events in by_id.items():
            alias = results[position]
            position += 1
            reads = 2 if _names_triggers(events, cached) else 1
            if alias is not None:
                aliased.append(cid)
            else:
                customers[cid] = _customer(cid, events, results[position : position + reads])
            position += reads
        if aliased:
            await self._read_aliased(aliased, by_id, customers)
        order = {tp.event_id: n for n, tp in enumerate(touchpoints)}
        for customer in customers.values():
            customer.events.sort(key=lambda tp: order[tp.event_id])
        return list(customers.values()), index

    async def _read_aliased(
        self,
        aliased: list[str],
        by_id: Mapping[str, list[touchpoint_pb2.Touchpoint]],
        customers: dict[str, _Customer],
    ) -> None:
        # Events of an id merged away while they were in flight: the memory applied them to
        # the survivor, so journeys must see them as the survivor's too.
        targets = await self._resolve(aliased)
        fresh = sorted({targets[cid] for cid in aliased} - customers.keys())
        async with self._redis.pipeline(transaction=False) as pipe:
            for target in fresh:
                _queue_customer_reads(pipe, target, True)
            results = await pipe.execute()
        for n, target in enumerate(fresh):
            customers[target] = _customer(target, [], results[2 * n : 2 * n + 2])
        for cid in aliased:
            customers[targets[cid]].events.extend(by_id[cid])

    async def _bounded(
        self,
        customer: _Customer,
        index: TriggerIndex,
        context: dict[str, Any] | None,
        now_ms: int,
    ) -> None:
        async with self._slots:
            await self._customer(customer, index, context, now_ms)

    async def _customer(
        self,
        customer: _Customer,
        index: TriggerIndex,
        context: dict[str, Any] | None,
        now_ms: int,
    ) -> None:
        for tp in customer.events:
            signal = event_signal(tp, customer.customer_id)
            started: set[str] = set()
            entries = index.entries(tp.name)
            if entries:
                variables = {conditions.EVENT: event_variables(tp)}
                if context is not None:
                    variables[conditions.CUSTOMER] = context
                for entry in entries:
                    if await self._trigger(customer, entry, signal, variables, now_ms):
                        started.add(entry.journey_id)
            for journey_id in [j for j, names in customer.awaits.items() if tp.name in names]:
                if journey_id in started:
                    continue  # the start signal carried this event already
                cid = customer.customer_id
                if not await self._calls.signal(
                    journey_id, cid, signal
                ) and not await self._redirect(cid, journey_id, signal):
                    await self._drop_stale_await(customer, journey_id)
        if index.conditions and context is not None and customer.events:
            await self._conditions(customer, index.conditions, context, now_ms)

    async def _read_condition_values(self, customers: Sequence[_Customer]) -> None:
        values = await self._enroller.condition_values([c.customer_id for c in customers])
        for customer, stored in zip(customers, values, strict=True):
            customer.conditions = stored

    async def _conditions(
        self,
        customer: _Customer,
        entries: Sequence[TriggerEntry],
        context: dict[str, Any],
        now_ms: int,
    ) -> None:
        """Enroll where a condition turned from false to true (`Enroller.conditions`).

        The trigger is the customer's last event of the batch: the change that made it true.
        """
        signal = event_signal(customer.events[-1], customer.customer_id)
        await self._enroller.conditions(
            customer.customer_id,
            entries,
            context,
            customer.conditions,
            signal,
            now_ms,
            known=customer.enrollments,
        )

    async def _trigger(
        self,
        customer: _Customer,
        entry: TriggerEntry,
        signal: contract.EventSignal,
        variables: Mapping[str, Any],
        now_ms: int,
    ) -> bool:
        """Enroll `customer` in `entry`'s journey if `where` holds and the rules allow."""
        if entry.program is not None and not holds(entry, variables):
            return False
        outcome = await self._enroller.enroll(
            customer.customer_id, entry, signal, now_ms, known=customer.enrollments
        )
        return outcome in STARTS

    async def _redirect(
        self, customer_id: str, journey_id: str, signal: contract.EventSignal
    ) -> bool:
        """Route to an enrollment being handed over from a merged customer; True if routed.

        Between the merge (the survivor's record and awaits written) and the merged
        customer's run starting the survivor's, the survivor's workflow does not exist yet:
        the merged run takes the event along; if it has just handed over, the survivor's run
        exists now. At most two more calls, and only after a NOT_FOUND.
        """
        raw = await self._redis.hget(keys.customer(customer_id, keys.ENROLLMENTS), journey_id)
        record = load(raw) or {}
        source = record.get("handed_from")
        if record.get("active") is not True or not isinstance(source, str):
            return False
        if await self._calls.signal(journey_id, source, signal):
            return True
        return await self._calls.signal(journey_id, customer_id, signal)

    async def _drop_stale_await(self, customer: _Customer, journey_id: str) -> None:
        raw = customer.awaits_raw.pop(journey_id, None)
        customer.awaits.pop(journey_id, None)
        if raw is not None:
            await self._drop_await(
                keys=[keys.customer(customer.customer_id, keys.AWAITS)], args=[journey_id, raw]
            )
        log.info("triggers.stale_await_dropped", journey_id=journey_id)


def event_signal(tp: touchpoint_pb2.Touchpoint, customer_id: str) -> contract.EventSignal:
    """The touchpoint as a journey workflow receives it, for the (resolved) customer."""
    moment = tp.occurred_at if tp.HasField("occurred_at") else tp.received_at
    kind = touchpoint_pb2.TouchpointKind.Name(tp.kind).removeprefix("TOUCHPOINT_KIND_").lower()
    return contract.EventSignal(
        event_id=tp.event_id,
        name=tp.name,
        occurred_at=moment.ToJsonString(),
        customer_id=customer_id,
        props=json_format.MessageToDict(tp.props),
        kind=kind,
        traceparent=tp.trace.traceparent,
    )


def _unique(touchpoints: Iterable[touchpoint_pb2.Touchpoint]) -> list[touchpoint_pb2.Touchpoint]:
    seen: set[str] = set()
    result = []
    for tp in touchpoints:
        if tp.event_id not in seen:
            seen.add(tp.event_id)
            result.append(tp)
    return result


def _names_triggers(events: Iterable[touchpoint_pb2.Touchpoint], index: TriggerIndex) -> bool:
    return any(index.entries(tp.name) for tp in events)


def _queue_customer_reads(pipe: Any, customer_id: str, with_enrollments: bool) -> None:
    pipe.hgetall(keys.customer(customer_id, keys.AWAITS))
    if with_enrollments:
        pipe.hgetall(keys.customer(customer_id, keys.ENROLLMENTS))


def _customer(
    customer_id: str, events: list[touchpoint_pb2.Touchpoint], reads: Sequence[Any]
) -> _Customer:
    customer = _Customer(customer_id, list(events))
    for raw_journey, raw in reads[0].items():
        journey_id = raw_journey.decode(errors="replace")
        try:
            names = json.loads(raw)
        except ValueError:
            names = None
        if not isinstance(names, list):
            log.warning("triggers.await_unreadable", journey_id=journey_id)
            continue
        customer.awaits[journey_id] = frozenset(n for n in names if isinstance(n, str))
        customer.awaits_raw[journey_id] = raw
    if len(reads) > 1:
        customer.enrollments = {j.decode(errors="replace"): load(r) for j, r in reads[1].items()}
    return customer


def _has_work(customer: _Customer, index: TriggerIndex) -> bool:
    awaited = frozenset().union(*customer.awaits.values()) if customer.awaits else frozenset()
    return any(index.entries(tp.name) or tp.name in awaited for tp in customer.events)
