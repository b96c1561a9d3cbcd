"""The customer's running enrollments: the enrollments hash, what each awaits, its step.

The stream processor and the journey worker keep `enishi:c:{<customer>}:enrollments`
(journey id -> JSON `{"count", "last_at", "active", "version", "holdout", ...}`) and the
awaits hash (docs/journey-runtime.md). The current step comes from a Temporal query, which
is best effort: a slow or failing query leaves the step empty and never fails the 360 view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
import structlog
from temporalio.client import Client

from enishi import keys
from enishi.memory import model
from enishi.v1 import journey_pb2
from workflows import contract

log = structlog.get_logger(__name__)

# `last_at` written in seconds rather than ms would read as 1970; anything below this many
# ms (2001-09-09) is taken to be seconds.
_SECONDS_BELOW = 1_000_000_000_000


class StepQuery(Protocol):
    """Asks a running journey workflow which step it is at."""

    async def current_step(self, workflow_id: str) -> str: ...


class TemporalStepQuery:
    """`current_step` through a Temporal client (lazy: it connects on the first query)."""

    def __init__(self, client: Client, timeout_seconds: float) -> None:
        self._client = client
        self._timeout = timeout_seconds

    async def current_step(self, workflow_id: str) -> str:
        handle = self._client.get_workflow_handle(workflow_id)
        result = await asyncio.wait_for(
            handle.query(contract.QUERY_CURRENT_STEP, rpc_timeout=timedelta(seconds=self._timeout)),
            self._timeout,
        )
        return str(result)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        ms = int(value * 1000) if value < _SECONDS_BELOW else int(value)
        return model.ms_datetime(ms)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else None
    return None


def active_from_hash(
    customer_id: str,
    stored: Mapping[bytes, bytes],
    awaits: Mapping[bytes, bytes] | None = None,
) -> list[journey_pb2.ActiveJourney]:
    """Active enrollments from the enrollments hash (and what each awaits, from the awaits
    hash), by journey id; unreadable entries are skipped."""
    active = []
    for journey_bytes, raw in sorted(stored.items()):
        journey_id = journey_bytes.decode(errors="replace")
        try:
            record = json.loads(raw)
        except ValueError:
            log.warning("customers.enrollment_unreadable", journey_id=journey_id)
            continue
        if not isinstance(record, dict) or record.get("active") is not True:
            continue
        journey = journey_pb2.ActiveJourney(
            journey_id=journey_id, workflow_id=contract.workflow_id(journey_id, customer_id)
        )
        version = record.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and 0 < version < 2**31:
            journey.version = version
        entered = _timestamp(record.get("last_at"))
        if entered is not None:
            journey.entered_at.CopyFrom(model.from_ms(model.datetime_ms(entered)))
        holdout = record.get("holdout")
        if isinstance(holdout, bool):
            journey.group = (
                journey_pb2.ENROLLMENT_GROUP_HOLDOUT
                if holdout
                else journey_pb2.ENROLLMENT_GROUP_TREATMENT
            )
        awaited = _awaited(awaits.get(journey_bytes) if awaits else None)
        journey.awaited_events.extend(awaited)
        active.append(journey)
    return active


def _awaited(raw: bytes | None) -> list[str]:
    """Event names from an awaits hash value (a JSON list); anything else is nothing."""
    if raw is None:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


class ActiveJourneys:
    """Reads a customer's active enrollments, asking Temporal for their steps when it can."""

    def __init__(self, redis: aioredis.Redis, steps: StepQuery | None = None) -> None:
        self._redis = redis
        self._steps = steps

    async def of(self, customer_id: str) -> list[journey_pb2.ActiveJourney]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.customer(customer_id, keys.ENROLLMENTS))
            pipe.hgetall(keys.customer(customer_id, keys.AWAITS))
            stored, awaits = cast(list[dict[bytes, bytes]], await pipe.execute())
        journeys = active_from_hash(customer_id, stored, awaits)
        if self._steps is not None and journeys:
            steps = await asyncio.gather(
                *(self._steps.current_step(j.workflow_id) for j in journeys),
                return_exceptions=True,
            )
            for journey, step in zip(journeys, steps, strict=True):
                if isinstance(step, BaseException):
                    log.info(
                        "customers.step_query_failed",
                        workflow_id=journey.workflow_id,
                        error=type(step).__name__,
                    )
                else:
                    journey.current_step_id = step
        return journeys
