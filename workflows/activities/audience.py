"""One page of a scheduled run over a journey's audience: scan customers, filter, enroll.

A run is a schedule trigger's firing or a condition trigger's sweep (docs/journey-runtime.md).

`JourneyAudienceWorkflow` (workflows/audience.py) calls `enroll_audience_page` until the scan
is done. A page is one bounded stretch of a Redis `SCAN` over the customers' `counters` keys
(every remembered customer has them; a merged-away one has none), so a run over millions of
customers is many short activities, each resumable from its cursor. Per page: the journey's
live trigger entry from the trigger index (none: the journey was paused, archived or changed
its trigger, and the run enrolls nobody), the customers due now (`at_local` in their own time
zone), the audience filter `where` over their memory, then `Enroller.enroll`, the path every
trigger takes (re-entry, holdout, cap, record, signal-with-start). A sweep instead evaluates
the condition over every customer and enrolls where it turned from false to true
(`Enroller.conditions`, the stream processor's rule), for conditions that become true with the
passing of time alone.

Idempotent per run: every enrollment of a run carries the same trigger id, derived from the
journey and the run's scheduled time, so a retried page finds its own trigger on the
customer's record and resumes (or skips) instead of enrolling again (docs/journey-runtime.md,
"Scheduled triggers").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as local_time
from typing import Final, cast

import structlog
from redis.asyncio import Redis
from temporalio import activity

from enishi import keys
from enishi.enrollment.calls import JourneyCalls, TemporalJourneyCalls
from enishi.enrollment.enroller import (
    CUSTOMER_CONCURRENCY,
    CustomerContexts,
    Enroller,
    MemoryContexts,
)
from enishi.enrollment.index import TriggerEntry, TriggerIndexCache, holds
from enishi.enrollment.records import Outcome
from enishi.journeys import clock, conditions, schedules
from enishi.memory.reader import MemoryReader
from enishi.v1 import consent_pb2
from workflows import contract
from workflows.contract import AudienceTotals

log = structlog.get_logger(__name__)

DEFAULT_PAGE_SIZE: Final = 500
SCAN_PART: Final = keys.COUNTERS
"""Every remembered customer has counters (`created_at`); MemoryReader reads no one without."""


@dataclass(frozen=True)
class AudiencePage:
    """Enroll the due customers of one stretch of the scan, from `cursor` (0: the start)."""

    journey_id: str
    scheduled_at: str  # ISO 8601 UTC: the run's time
    cursor: int = 0


@dataclass(frozen=True)
class AudiencePageResult:
    """Where the scan goes on (`done`: it is over) and what the page did."""

    cursor: int
    done: bool
    totals: AudienceTotals = field(default_factory=AudienceTotals)
    live: bool = True  # False: no live schedule or condition trigger; nobody enrolled


def run_trigger(journey_id: str, scheduled_at: datetime, customer_id: str) -> contract.EventSignal:
    """The trigger of a run's enrollment: one id per (journey, run), whoever is enrolled."""
    at = scheduled_at.astimezone(UTC)
    return contract.EventSignal(
        event_id=f"schedule:{journey_id}:{at:%Y%m%dT%H%M%SZ}",
        name=contract.SCHEDULED_EVENT,
        occurred_at=at.isoformat(),
        customer_id=customer_id,
        props={"journey_id": journey_id, "scheduled_at": at.isoformat()},
        kind="schedule",
    )


def sweep_trigger(
    journey_id: str, scheduled_at: datetime, customer_id: str
) -> contract.EventSignal:
    """The trigger of a condition sweep's enrollment: one id per (journey, sweep)."""
    at = scheduled_at.astimezone(UTC)
    return contract.EventSignal(
        event_id=f"condition:{journey_id}:{at:%Y%m%dT%H%M%SZ}",
        name=contract.CONDITION_EVENT,
        occurred_at=at.isoformat(),
        customer_id=customer_id,
        props={"journey_id": journey_id, "swept_at": at.isoformat()},
        kind="sweep",
    )


class AudienceActivities:
    """Scans customer memory in pages and enrolls the due ones (Redis, Temporal)."""

    def __init__(
        self,
        redis: Redis,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        contexts: CustomerContexts | None = None,
        calls: JourneyCalls | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._page_size = page_size
        self._index = TriggerIndexCache(redis)
        self._contexts = contexts or MemoryContexts(MemoryReader(redis))
        self._calls = calls
        self._now = now

    @activity.defn(name="enroll_audience_page")
    async def enroll_page(self, page: AudiencePage) -> AudiencePageResult:
        index = await self._index.read()
        run_at = datetime.fromisoformat(page.scheduled_at)
        scheduled = index.schedule(page.journey_id)
        condition = index.condition(page.journey_id)
        if scheduled is not None and scheduled.schedule is not None:
            result = await self._scheduled(scheduled, page.cursor, run_at)
        elif condition is not None:
            result = await self._sweep(condition, page.cursor, run_at)
        else:
            log.info("audience.not_live", journey_id=page.journey_id)
            return AudiencePageResult(cursor=0, done=True, live=False)
        totals = result.totals
        log.info(
            "audience.page",
            journey_id=page.journey_id,
            scheduled_at=page.scheduled_at,
            scanned=totals.scanned,
            due=totals.due,
            enrolled=totals.enrolled,
        )
        return result

    async def _scheduled(
        self, entry: TriggerEntry, cursor: int, run_at: datetime
    ) -> AudiencePageResult:
        """A schedule trigger's page: the customers due now (local time) whose `where` holds."""
        assert entry.schedule is not None
        local = _at_local(entry)
        weekdays = _weekdays(entry)
        if local is not None and not schedules.due_anywhere(local, weekdays, run_at):
            return AudiencePageResult(cursor=0, done=True)  # no zone has at_local in this run
        cursor, customer_ids = await self._scan(cursor)
        due_ids = customer_ids
        if local is not None:
            fallback = str(entry.schedule.get("timezone_fallback") or clock.DEFAULT_TIMEZONE)
            zones = await self._time_zones(customer_ids)
            due_ids = [
                cid
                for cid, zone in zip(customer_ids, zones, strict=True)
                if schedules.due(local, weekdays, run_at, zone, fallback)
            ]
        enrolled = await self._enroll(entry, due_ids, run_at)
        totals = AudienceTotals(len(customer_ids), len(due_ids), enrolled)
        return AudiencePageResult(cursor=cursor, done=cursor == 0, totals=totals)

    async def _sweep(
        self, entry: TriggerEntry, cursor: int, run_at: datetime
    ) -> AudiencePageResult:
        """A condition trigger's sweep page: enroll where the condition turned true.

        The same transition rule as the stream processor's (`Enroller.conditions`, over the
        customer's stored value), so a customer is enrolled once per false → true, whichever
        of the two sees it first.
        """
        cursor, customer_ids = await self._scan(cursor)
        if not customer_ids:
            return AudiencePageResult(cursor=cursor, done=cursor == 0)
        enroller = self._enroller()
        contexts = await self._contexts.load(customer_ids)
        previous = await enroller.condition_values(customer_ids)
        now_ms = int(self._now() * 1000)
        slots = asyncio.Semaphore(CUSTOMER_CONCURRENCY)

        async def one(customer_id: str, stored: dict[str, bool]) -> int:
            async with slots:
                signal = sweep_trigger(entry.journey_id, run_at, customer_id)
                return await enroller.conditions(
                    customer_id, [entry], contexts[customer_id], stored, signal, now_ms
                )

        started = await _settled(
            one(cid, stored) for cid, stored in zip(customer_ids, previous, strict=True)
        )
        totals = AudienceTotals(len(customer_ids), len(customer_ids), sum(started))
        return AudiencePageResult(cursor=cursor, done=cursor == 0, totals=totals)

    async def _scan(self, cursor: int) -> tuple[int, list[str]]:
        """At least a page of customers (fewer at the end), from `cursor`; the next cursor.

        SCAN's COUNT is a hint, so it is asked again until the page is full or the scan ends.
        A key present for the whole scan is returned at least once; one returned twice (a
        rehash) is enrolled once all the same (the run's trigger id).
        """
        found: list[str] = []
        pattern = keys.customer_scan_pattern(SCAN_PART)
        while True:
            cursor, batch = await self._redis.scan(cursor, match=pattern, count=self._page_size)
            for raw in batch:
                key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                customer_id = keys.customer_of(key, SCAN_PART)
                if customer_id is not None:
                    found.append(customer_id)
            if cursor == 0 or len(found) >= self._page_size:
                return int(cursor), list(dict.fromkeys(found))

    async def _time_zones(self, customer_ids: Sequence[str]) -> list[str]:
        """Each customer's IANA time zone ('' when none), one pipelined read."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                pipe.hget(keys.customer(customer_id, keys.PREFERENCES), "time_zone")
            results = await pipe.execute()
        zones = []
        for raw in results:
            preferences = consent_pb2.Preferences()
            if raw:
                preferences.MergeFromString(cast(bytes, raw))
            zones.append(preferences.time_zone)
        return zones

    async def _enroll(self, entry: TriggerEntry, customer_ids: list[str], run_at: datetime) -> int:
        if not customer_ids:
            return 0
        contexts = await self._contexts.load(customer_ids) if entry.uses_customer else {}
        enroller = self._enroller()
        now_ms = int(self._now() * 1000)
        slots = asyncio.Semaphore(CUSTOMER_CONCURRENCY)

        async def one(customer_id: str) -> int:
            context = contexts.get(customer_id)
            variables = {conditions.CUSTOMER: context} if context is not None else {}
            if not holds(entry, variables):
                return 0
            async with slots:
                signal = run_trigger(entry.journey_id, run_at, customer_id)
                outcome = await enroller.enroll(customer_id, entry, signal, now_ms)
            return int(outcome is Outcome.ENROLLED)

        return sum(await _settled(one(cid) for cid in customer_ids))

    def _enroller(self) -> Enroller:
        """Enrolling through the worker's own client, on the queue this activity runs on."""
        calls = self._calls or TemporalJourneyCalls(
            activity.client(), task_queue=activity.info().task_queue
        )
        return Enroller(self._redis, calls)


async def _settled(work: Iterable[Awaitable[int]]) -> list[int]:
    """Every customer's result once all have settled; the first failure, raised.

    The retried page resumes the starts that did not happen (the run's trigger id is on the
    customers' records) and skips the others.
    """
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def _at_local(entry: TriggerEntry) -> local_time | None:
    value = (entry.schedule or {}).get("at_local")
    return clock.parse_local_time(value) if isinstance(value, str) else None


def _weekdays(entry: TriggerEntry) -> tuple[str, ...] | None:
    value = (entry.schedule or {}).get("weekdays")
    return tuple(str(d) for d in value) if isinstance(value, list | tuple) and value else None
