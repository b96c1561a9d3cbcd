"""Enrollment records: who may enter a journey (re-entry, caps), recorded before the start.

`enishi:c:{<customer>}:enrollments` holds journey id -> JSON record (docs/journey-runtime.md):
`count`, `last_at` (ms: when the last enrollment started; once the worker ends it, when it
ended), `active`, `version`, `holdout`, `event_id` (the trigger of the last enrollment) and
`ended` (the worker's end status). Fields this module does not know are kept when it
rewrites a record.

The record is written (WATCH/MULTI on the customer's key) *before* signal-with-start, so two
deliveries of one trigger, even in two processes during a rebalance, enroll once. If the
start then fails, the record stays and the batch is not committed; the redelivered trigger
finds its own `event_id` on an active record and starts again (`RESUMED`), which is safe
because signal-with-start on a running workflow only signals it and the workflow ignores an
event id it has seen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from enishi import keys
from enishi.enrollment.index import TriggerEntry
from enishi.memory import model

Record = Mapping[str, Any]


class Outcome(StrEnum):
    """What a trigger did to one customer's enrollment in one journey (metric labels)."""

    ENROLLED = "enrolled"
    """A new enrollment: start the workflow."""
    RESUMED = "resumed"
    """This very event enrolled before but the start may not have happened: start again."""
    ACTIVE = "active"
    """The customer is enrolled right now; one live enrollment per journey."""
    REENTRY_BLOCKED = "reentry_blocked"
    DUPLICATE = "duplicate"
    """This very event enrolled before and that enrollment has ended."""
    CAP = "cap"
    """The journey's enrollment cap is reached."""


STARTS = frozenset({Outcome.ENROLLED, Outcome.RESUMED})


def _int(record: Record, name: str) -> int:
    value = record.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return 0


def _ms(record: Record, name: str) -> int:
    """A time field in ms; ISO 8601 strings (a worker may keep `last_at` as one) accepted."""
    value = record.get(name)
    if isinstance(value, str) and value:
        try:
            return model.datetime_ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return 0
    return _int(record, name)


def decide(record: Record | None, entry: TriggerEntry, event_id: str, now_ms: int) -> Outcome:
    """The re-entry rules of docs/journeys.md over one record (never CAP: that needs Redis).

    `after` counts the cooldown from `last_at`: when the previous enrollment ended (the
    worker rewrites it then), else when it started.
    """
    if record is None:
        return Outcome.ENROLLED
    active = record.get("active") is True
    if record.get("event_id") == event_id:
        return Outcome.RESUMED if active else Outcome.DUPLICATE
    if active:
        return Outcome.ACTIVE
    if _int(record, "count") <= 0 or entry.reentry == "always":
        return Outcome.ENROLLED
    if entry.reentry == "never":
        return Outcome.REENTRY_BLOCKED
    if _ms(record, "last_at") + entry.cooldown_ms > now_ms:
        return Outcome.REENTRY_BLOCKED
    return Outcome.ENROLLED


def enrolled(
    record: Record | None, entry: TriggerEntry, event_id: str, now_ms: int, *, holdout: bool
) -> dict[str, Any]:
    """The record after enrolling: count + 1, active, this trigger; unknown fields kept."""
    previous = dict(record or {})
    previous.pop("ended", None)
    return {
        **previous,
        "count": _int(previous, "count") + 1,
        "last_at": now_ms,
        "active": True,
        "version": entry.version,
        "holdout": holdout,
        "event_id": event_id,
    }


def load(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored record, or None when absent or unreadable (unreadable counts as never)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Enrollment:
    """The decision and, when it starts a workflow, the start's parameters."""

    outcome: Outcome
    record: dict[str, Any] | None
    """The record after the decision (for the caller's per-batch snapshot)."""

    @property
    def count(self) -> int:
        return _int(self.record or {}, "count")

    @property
    def version(self) -> int:
        return _int(self.record or {}, "version")

    @property
    def holdout(self) -> bool:
        return bool((self.record or {}).get("holdout"))


class EnrollmentStore:
    """Decides and records enrollments atomically per customer."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def enroll(
        self, customer_id: str, entry: TriggerEntry, event_id: str, now_ms: int, *, holdout: bool
    ) -> Enrollment:
        """Decide from the stored record and, if the customer enrolls, record it.

        The cap counter is global (another cluster slot than the customer's key), so it is
        reserved with INCR between the WATCH and the EXEC and given back when the customer
        does not enroll after all. A crash between the two leaves the counter one too high:
        the cap errs on the side of fewer enrollments.
        """
        key = keys.customer(customer_id, keys.ENROLLMENTS)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                record = load(await pipe.hget(key, entry.journey_id))
                outcome = decide(record, entry, event_id, now_ms)
                if outcome is not Outcome.ENROLLED:
                    return Enrollment(outcome, record)
                if not await self._reserve(entry):
                    return Enrollment(Outcome.CAP, record)
                updated = enrolled(record, entry, event_id, now_ms, holdout=holdout)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, entry.journey_id, json.dumps(updated, separators=(",", ":")))
                if entry.awaits:
                    # Same hash tag, same transaction: the goal and exit events are routed
                    # from the start, before the workflow's own first `awaits` write.
                    pipe.hset(
                        keys.customer(customer_id, keys.AWAITS),
                        entry.journey_id,
                        json.dumps(sorted(entry.awaits)),
                    )
                try:
                    await pipe.execute()
                except WatchError:
                    await self._release(entry)
                    continue
                return Enrollment(Outcome.ENROLLED, updated)

    async def _reserve(self, entry: TriggerEntry) -> bool:
        if entry.enrollment_cap is None:
            return True
        counter = keys.journey_enrollments_total(entry.journey_id)
        if int(await self._redis.incr(counter)) <= entry.enrollment_cap:
            return True
        await self._redis.decr(counter)
        return False

    async def _release(self, entry: TriggerEntry) -> None:
        if entry.enrollment_cap is not None:
            await self._redis.decr(keys.journey_enrollments_total(entry.journey_id))


@dataclass(frozen=True)
class MergePlan:
    """What an identity merge does to the survivor's enrollment records (`plan_merge`)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Journey -> the survivor's new record, to write."""
    awaits: dict[str, bytes] = field(default_factory=dict)
    """Journey -> the merged customer's `awaits` entry, copied to the survivor."""
    hand_overs: dict[str, int] = field(default_factory=dict)
    """Journey -> the enrollment number the merged customer's running enrollment goes on with
    as the survivor's (signal it `merge` with `hand_over`)."""
    ends: tuple[str, ...] = ()
    """Journeys where the survivor runs an enrollment of their own: the merged customer's
    just ends (signal it `merge` without `hand_over`)."""


def merged_ids(record: Record | None) -> list[str]:
    """The customer ids whose records were folded into `record` (its `merged` field)."""
    value = (record or {}).get("merged")
    return [str(v) for v in value] if isinstance(value, list) else []


def plan_merge(
    merged_id: str,
    merge_event_id: str,
    merged: Mapping[str, Record | None],
    survivor: Mapping[str, Record | None],
    merged_awaits: Mapping[str, bytes],
) -> MergePlan:
    """Fold the merged customer's records into the survivor's (docs/stream.md, "Merges").

    - The merged customer runs an enrollment, the survivor does not: the survivor's record
      becomes that enrollment (active, `count` = both counts, `handed_from`, the merge as its
      `event_id`) and the merged customer's run is told to hand over.
    - Both run one: the survivor's stays; the merged customer's run is told to end.
    - The merged customer's ended enrollments add to the survivor's history (`count`,
      `last_at`), so re-entry rules see one person. A survivor's running record is never
      rewritten (its `count` is its run's enrollment number).

    Idempotent: a folded record lists `merged_id` in `merged`, and a redelivered merge only
    repeats the signals of a hand-over still in progress.
    """
    records: dict[str, dict[str, Any]] = {}
    awaits: dict[str, bytes] = {}
    hand_overs: dict[str, int] = {}
    ends: list[str] = []
    for journey_id, theirs in sorted(merged.items()):
        if theirs is None:
            continue
        ours = survivor.get(journey_id)
        folded = merged_id in merged_ids(ours)
        if (ours or {}).get("active") is True:
            if not folded:
                if theirs.get("active") is True:
                    ends.append(journey_id)
            elif ours and ours.get("event_id") == merge_event_id:
                hand_overs[journey_id] = _int(ours, "count")  # redelivered: signal again
            continue
        if folded:
            continue
        record = dict(theirs if ours is None else ours)
        record["count"] = _int(ours or {}, "count") + _int(theirs, "count")
        record["merged"] = [*merged_ids(ours), merged_id]
        if theirs.get("active") is True:
            record.pop("ended", None)
            record.update(
                last_at=_ms(theirs, "last_at"),
                active=True,
                version=_int(theirs, "version"),
                holdout=bool(theirs.get("holdout")),
                event_id=merge_event_id,
                handed_from=merged_id,
            )
            hand_overs[journey_id] = record["count"]
            if journey_id in merged_awaits:
                awaits[journey_id] = merged_awaits[journey_id]
        elif ours is not None:
            record["last_at"] = max(_ms(ours, "last_at"), _ms(theirs, "last_at"))
        records[journey_id] = record
    return MergePlan(records, awaits, hand_overs, tuple(ends))
