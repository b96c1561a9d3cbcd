"""Applies planned touchpoints to Redis: one script call per customer, pipelined per batch.

A batch is cut at each MERGE: everything before it is applied first, then the merged
customer's memory is read and folded into the survivor in one script call (deduped on the
merge's event id like any other event), then the merged customer's keys are removed and its
alias recorded, so later events for it land on the survivor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from enishi import keys
from enishi.memory import model
from enishi.memory.apply import SET_PARTS, ZSET_PARTS, MemoryDump, Plan, Token, merge_plan
from enishi.memory.scripts import (
    ALWAYS_PARTS,
    APPLY_SCRIPT,
    KEY_OPERANDS,
    OPCODES,
    Packed,
    encode,
    key_index,
    payload,
)

# A merged customer can itself be merged later; follow that many aliases at most.
_MAX_ALIAS_HOPS = 8
# Script calls per pipeline. A batch's pipelines run concurrently on their own connections,
# so Python encodes the next one while Redis runs the previous one (two cores, both busy);
# one pipeline of thousands of calls left each side idle while the other worked.
PIPELINE_CALLS = 200
_MESSAGE_WINDOW_MS = int(model.MESSAGE_WINDOW.total_seconds() * 1000)
_ALWAYS = sum(1 << key_index(part) for part in ALWAYS_PARTS)
_PART_NAMES = tuple(enumerate(keys.MEMORY_PARTS, start=1))
_APPLIED = ord("1")  # the script answers one byte per event: b"1" applied, b"0" duplicate


class MemoryWriter:
    """Writes customer memory; every method is idempotent per event id."""

    def __init__(self, redis: Redis, retention: model.Retention | None = None) -> None:
        self._redis = redis
        self._retention = retention or model.Retention()
        self._script = redis.register_script(APPLY_SCRIPT)

    async def apply(self, plans: Sequence[Plan], *, now: datetime | None = None) -> list[bool]:
        """Apply `plans` in order; per plan, True when new, False when a duplicate."""
        now_ms = model.datetime_ms(now or datetime.now(UTC))
        applied = [False] * len(plans)
        segment: list[int] = []
        for index, plan in enumerate(plans):
            if plan.merge_from is None:
                segment.append(index)
                continue
            await self._apply_segment(plans, segment, applied, now_ms)
            segment = []
            applied[index] = await self._apply_merge(plan, now_ms)
        await self._apply_segment(plans, segment, applied, now_ms)
        return applied

    async def resolve(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """The surviving customer id of each id (itself when never merged)."""
        resolved = {cid: cid for cid in customer_ids}
        pending = list(resolved)
        for _ in range(_MAX_ALIAS_HOPS):
            if not pending:
                break
            targets = await self._redis.mget([keys.alias(resolved[cid]) for cid in pending])
            next_pending = []
            for cid, target in zip(pending, targets, strict=True):
                if target is not None:
                    resolved[cid] = target.decode() if isinstance(target, bytes) else target
                    next_pending.append(cid)
            pending = next_pending
        return resolved

    async def _apply_segment(
        self, plans: Sequence[Plan], indexes: Sequence[int], applied: list[bool], now_ms: int
    ) -> None:
        if not indexes:
            return
        targets = await self.resolve({plans[i].customer_id for i in indexes})
        by_customer: dict[str, list[int]] = {}
        for index in indexes:
            by_customer.setdefault(targets[plans[index].customer_id], []).append(index)
        header = self._header(now_ms)
        calls = list(by_customer.items())

        async def run(chunk: list[tuple[str, list[int]]]) -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                # execute() loads the script first if Redis lacks it. (redis-py types the set
                # as sync Scripts; the asyncio pipeline holds AsyncScripts.)
                pipe.scripts.add(self._script)  # type: ignore[arg-type]
                for customer_id, members in chunk:
                    self._call(pipe, customer_id, [plans[i] for i in members], header)
                results = await pipe.execute()
            for (_, members), flags in zip(chunk, results, strict=True):
                for index, flag in zip(members, flags, strict=True):
                    applied[index] = flag == _APPLIED

        await asyncio.gather(
            *(run(calls[i : i + PIPELINE_CALLS]) for i in range(0, len(calls), PIPELINE_CALLS))
        )

    async def _apply_merge(self, plan: Plan, now_ms: int) -> bool:
        assert plan.merge_from is not None
        source = plan.merge_from
        target = (await self.resolve([plan.customer_id]))[plan.customer_id]
        folded = merge_plan(plan, await self.dump(source))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.scripts.add(self._script)  # type: ignore[arg-type]
            self._call(pipe, target, [folded], self._header(now_ms))
            (flags,) = await pipe.execute()
        # Also after a duplicate: a crash may have come between the fold and this cleanup.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(*keys.memory_keys(source))
            pipe.set(keys.alias(source), target)
            await pipe.execute()
        return bool(flags[0] == _APPLIED)

    async def dump(self, customer_id: str) -> MemoryDump:
        """One customer's whole memory, raw."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for part, key in zip(keys.MEMORY_PARTS, keys.memory_keys(customer_id), strict=True):
                if part in ZSET_PARTS:
                    pipe.zrange(key, 0, -1, withscores=True)
                elif part in SET_PARTS:
                    pipe.smembers(key)
                else:
                    pipe.hgetall(key)
            results = await pipe.execute()
        zsets, hashes, sets = {}, {}, {}
        for part, result in zip(keys.MEMORY_PARTS, results, strict=True):
            if part in ZSET_PARTS:
                zsets[part] = list(result)
            elif part in SET_PARTS:
                sets[part] = sorted(result)
            else:
                hashes[part] = dict(result)
        return MemoryDump(zsets=zsets, hashes=hashes, sets=sets)

    def _header(self, now_ms: int) -> Packed:
        """The payload's leading tokens, the same for every call of a batch."""
        return encode(
            (
                now_ms,
                self._retention.timeline_max,
                self._retention.dedupe_window,
                now_ms - _MESSAGE_WINDOW_MS,
                model.day(now_ms) - model.DENSITY_WINDOW_DAYS + 1,
            )
        )

    def _call(
        self, pipe: Pipeline, customer_id: str, plans: Sequence[Plan], header: Packed
    ) -> None:
        tokens: list[Token] = []
        touched = _ALWAYS
        for plan in plans:
            tokens.append(plan.event_id)
            tokens.append(len(plan.tokens))
            tokens.extend(plan.tokens)
            touched |= _touched_parts(plan.tokens)
        # Only the parts this call needs are declared (fewer arguments to encode and send);
        # every key the script touches is still declared, as Redis Cluster requires.
        parts, names = [], []
        for index, part in _PART_NAMES:
            if touched >> index & 1:
                parts.append(index)
                names.append(keys.customer(customer_id, part))
        pipe.evalsha(
            self._script.sha, len(names), *names, bytes(parts), payload(header, encode(tokens))
        )


def _touched_parts(tokens: Sequence[Token]) -> int:
    """The part indexes the key operands of `tokens` name, as a bit set."""
    touched = 0
    position, count = 0, len(tokens)
    while position < count:
        opcode = tokens[position]
        operands = KEY_OPERANDS[opcode]  # type: ignore[index]
        if operands:
            touched |= 1 << tokens[position + 1]  # type: ignore[operator]
            if operands == 2:
                touched |= 1 << tokens[position + 2]  # type: ignore[operator]
            elif operands > 2:
                for offset in range(2, operands + 1):
                    touched |= 1 << tokens[position + offset]  # type: ignore[operator]
        position += 1 + OPCODES[opcode]  # type: ignore[index]
    return touched
