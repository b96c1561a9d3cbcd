"""An enrollment's bookkeeping: what it awaits and that it ended (Redis), and its hand-over.

The stream processor routes an event to Temporal only when some enrollment awaits it
(`keys.AWAITS`) and checks re-entry on `keys.ENROLLMENTS` (docs/journey-runtime.md). The
workflow keeps both true: awaits on start and on entering/leaving a `wait_for`, and on end the
awaits entry removed and the enrollment marked inactive with its end time. When its customer
is merged into another, `hand_over` starts the survivor's workflow with its state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from temporalio import activity
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from enishi import keys
from enishi.enrollment.calls import WORKFLOW_TYPE
from enishi.memory import model
from workflows import contract


@dataclass(frozen=True)
class AwaitsUpdate:
    """Replace what the enrollment awaits; no events removes the entry."""

    customer_id: str
    journey_id: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class EnrollmentEnd:
    """The enrollment `enrollment` of (journey, customer) ended at `ended_at` as `status`."""

    customer_id: str
    journey_id: str
    enrollment: int
    ended_at: str  # workflow time, ISO 8601 UTC
    status: str


class EnrollmentActivities:
    """Writes `awaits` and `enrollments` of one customer (one hash slot: atomic together)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @activity.defn(name="set_awaits")
    async def set_awaits(self, update: AwaitsUpdate) -> None:
        key = keys.customer(update.customer_id, keys.AWAITS)
        if update.events:
            await self._redis.hset(key, update.journey_id, json.dumps(sorted(update.events)))
        else:
            await self._redis.hdel(key, update.journey_id)

    @activity.defn(name="end_enrollment")
    async def end_enrollment(self, end: EnrollmentEnd) -> None:
        """HDEL awaits; set `active: false`, `last_at` (ms; cooldowns count from it), `ended`.

        Idempotent (a retry rewrites the same values), and it leaves alone a record whose
        `count` says a later enrollment already started.
        """
        awaits = keys.customer(end.customer_id, keys.AWAITS)
        enrollments = keys.customer(end.customer_id, keys.ENROLLMENTS)
        ended_ms = model.datetime_ms(datetime.fromisoformat(end.ended_at))

        async def update(pipe: Pipeline) -> None:
            raw = await pipe.hget(enrollments, end.journey_id)
            record: dict[str, Any] = json.loads(raw) if raw else {"count": end.enrollment}
            later = int(record.get("count", end.enrollment)) > end.enrollment
            pipe.multi()  # type: ignore[no-untyped-call]
            if not later:
                pipe.hdel(awaits, end.journey_id)
                record["active"] = False
                record["last_at"] = ended_ms
                record["ended"] = end.status
                pipe.hset(enrollments, end.journey_id, json.dumps(record, separators=(",", ":")))

        await self._redis.transaction(update, enrollments)


@dataclass(frozen=True)
class HandOver:
    """Start `start` (the survivor's enrollment, carrying the merged one's state)."""

    start: contract.JourneyInput


class HandOverActivities:
    """Starts journey workflows through the worker's own Temporal client."""

    @activity.defn(name="hand_over")
    async def hand_over(self, request: HandOver) -> bool:
        """Start `journey:{journey}:{survivor}`; False when it runs already (it is kept).

        A plain start, not a child workflow: the new run outlives the old one and owes it
        nothing. A retry after a start that did happen finds the run and answers False; the
        merged run ends as `merged` either way.
        """
        start = request.start
        try:
            await activity.client().start_workflow(
                WORKFLOW_TYPE,
                start,
                id=contract.workflow_id(start.journey_id, start.customer_id),
                task_queue=activity.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True
