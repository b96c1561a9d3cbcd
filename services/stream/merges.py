"""Identity merges and journeys: a merged customer's enrollments follow them to the survivor.

When ingest merges an anonymous visitor A into a known customer K (a MERGE touchpoint keyed
by K), the memory writer folds A's memory into K. This hook step does the same for journeys
(docs/stream.md, "Merges and journeys"), before the batch's triggers and routing:

1. Read A's enrollment records and `awaits`; fold them into K's records in one WATCH/MULTI
   on K's keys (`records.plan_merge`): A's running enrollment becomes K's (record and
   `awaits` written now, so K's events are routed and K's triggers see K enrolled), A's
   ended ones add to K's history.
2. Tell each of A's running workflows: `merge` with `hand_over` (it starts
   `journey:{j}:{K}` with its state — same step, same wake-up time — and ends as `merged`),
   or without (K runs its own enrollment in that journey, which stays; A's ends).
3. A run that is gone (`NOT_FOUND`) hands nothing over: K's record takes A's end instead,
   unless A's record says the hand-over happened (`ended: merged`, a redelivered merge).

Every step is idempotent, so a redelivered MERGE repeats only what may not have happened.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from enishi import keys
from enishi.enrollment.calls import JourneyCalls
from enishi.enrollment.records import MergePlan, load, plan_merge
from enishi.v1 import touchpoint_pb2
from workflows import contract

log = structlog.get_logger(__name__)

Resolve = Callable[[Iterable[str]], Awaitable[dict[str, str]]]


def is_merge(touchpoint: touchpoint_pb2.Touchpoint) -> bool:
    """A MERGE touchpoint with its detail (the memory has validated it)."""
    return touchpoint.kind == touchpoint_pb2.TOUCHPOINT_KIND_MERGE and touchpoint.HasField("merge")


class EnrollmentMerges:
    """Moves one merged customer's enrollments to the survivor (records, awaits, runs)."""

    def __init__(self, redis: Redis, calls: JourneyCalls, resolve: Resolve) -> None:
        self._redis = redis
        self._calls = calls
        self._resolve = resolve

    async def follow(self, merge: touchpoint_pb2.Touchpoint) -> None:
        """Apply the MERGE `merge` (applied or redelivered) to journeys."""
        merged_id = merge.merge.from_customer_id
        survivor = (await self._resolve([merge.customer_id]))[merge.customer_id]
        if survivor == merged_id:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.customer(merged_id, keys.ENROLLMENTS))
            pipe.hgetall(keys.customer(merged_id, keys.AWAITS))
            raw_records, raw_awaits = await pipe.execute()
        theirs = {_text(j): load(r) for j, r in raw_records.items()}
        if not any(theirs.values()):
            return
        awaits = {_text(j): bytes(v) for j, v in raw_awaits.items()}
        plan = await self._fold(survivor, merged_id, merge.event_id, theirs, awaits)
        for journey_id, enrollment in plan.hand_overs.items():
            signal = contract.MergeSignal(survivor, enrollment, hand_over=True)
            if not await self._calls.merge(journey_id, merged_id, signal):
                await self._settle(journey_id, merged_id, survivor, merge.event_id)
        for journey_id in plan.ends:
            await self._calls.merge(
                journey_id, merged_id, contract.MergeSignal(survivor, hand_over=False)
            )
        log.info(
            "merges.followed",
            event_id=merge.event_id,
            journeys=len(theirs),
            handed_over=len(plan.hand_overs),
            ended=len(plan.ends),
        )

    async def _fold(
        self,
        survivor: str,
        merged_id: str,
        event_id: str,
        theirs: Mapping[str, dict[str, Any] | None],
        awaits: Mapping[str, bytes],
    ) -> MergePlan:
        key = keys.customer(survivor, keys.ENROLLMENTS)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                raw = cast(dict[bytes, bytes], await pipe.hgetall(key))
                ours = {_text(j): load(r) for j, r in raw.items()}
                plan = plan_merge(merged_id, event_id, theirs, ours, awaits)
                if not plan.records:
                    return plan
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, mapping=_encoded(plan.records))  # type: ignore[arg-type]
                if plan.awaits:
                    pipe.hset(
                        keys.customer(survivor, keys.AWAITS),
                        mapping=plan.awaits,  # type: ignore[arg-type]
                    )
                try:
                    await pipe.execute()
                except WatchError:
                    continue
                return plan

    async def _settle(self, journey_id: str, merged_id: str, survivor: str, event_id: str) -> None:
        """The merged run was gone: the survivor's hand-over record takes the run's end."""
        theirs = load(
            await self._redis.hget(keys.customer(merged_id, keys.ENROLLMENTS), journey_id)
        )
        if (theirs or {}).get("ended") == "merged":
            return  # it handed over (a redelivered merge): the survivor's run goes on
        key = keys.customer(survivor, keys.ENROLLMENTS)

        async def end(pipe: Any) -> None:
            ours = load(await pipe.hget(key, journey_id))
            if not ours or ours.get("event_id") != event_id or ours.get("active") is not True:
                return
            ours.update(
                active=False,
                last_at=(theirs or {}).get("last_at", ours.get("last_at")),
                ended=(theirs or {}).get("ended") or "not_running",
            )
            pipe.multi()
            pipe.hset(key, journey_id, json.dumps(ours, separators=(",", ":")))
            pipe.hdel(keys.customer(survivor, keys.AWAITS), journey_id)

        await self._redis.transaction(end, key)
        log.info("merges.nothing_to_hand_over", journey_id=journey_id)


def _encoded(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {j: json.dumps(r, separators=(",", ":")) for j, r in records.items()}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
