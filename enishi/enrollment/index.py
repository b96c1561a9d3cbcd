"""The trigger index the registry publishes, parsed, compiled and cached per revision.

Format (docs/journey-runtime.md, `enishi.registry.TriggerEntry`): HASH `enishi:triggers`,
field = event name (or `@condition`, `@schedule`), value = JSON list of entries; STRING
`enishi:triggers:rev` changes with every edit. The stream processor reads the revision once
per batch (in the batch's one pipeline) and re-reads the index only when it changed; an
audience run reads it once. An entry that cannot be read is skipped with a warning: one bad
journey never stops the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import cel
import structlog
from redis.asyncio import Redis

from enishi import keys, registry
from enishi.journeys import conditions
from enishi.metrics import TRIGGER_DECISIONS

log = structlog.get_logger(__name__)

Reentry = Literal["never", "after", "always"]
_REENTRY: Final = ("never", "after", "always")
_SPECIAL: Final = (registry.CONDITION_TRIGGERS, registry.SCHEDULE_TRIGGERS)


class BadEntry(ValueError):
    """A trigger index entry this reader cannot use; the message names the field."""


@dataclass(frozen=True)
class TriggerEntry:
    """One live journey's trigger, as the stream processor needs it."""

    journey_id: str
    version: int
    reentry: Reentry = "never"
    cooldown_ms: int = 0
    holdout: float = 0.0
    enrollment_cap: int | None = None
    where: str | None = None
    program: cel.Program | None = field(default=None, compare=False, repr=False)
    uses_customer: bool = False
    """Whether `where` reads `customer`: only then is the customer's memory loaded."""
    awaits: tuple[str, ...] = ()
    """Goal and exit events, written to the customer's `awaits` as the customer enrolls."""
    schedule: Mapping[str, Any] | None = field(default=None, compare=False)
    """Schedule triggers only: the trigger's schedule as written (`at_local`, `cron`, ...)."""


@dataclass(frozen=True)
class TriggerIndex:
    """Event name -> entries, plus the condition and schedule entries, at `revision`."""

    revision: bytes | None = None
    by_event: Mapping[str, tuple[TriggerEntry, ...]] = field(default_factory=dict)
    conditions: tuple[TriggerEntry, ...] = ()
    schedules: tuple[TriggerEntry, ...] = ()

    def entries(self, event_name: str) -> tuple[TriggerEntry, ...]:
        """The entries `event_name` triggers (empty for most events)."""
        return self.by_event.get(event_name, ())

    def condition(self, journey_id: str) -> TriggerEntry | None:
        """The live condition trigger of `journey_id`, if it has one."""
        return next((e for e in self.conditions if e.journey_id == journey_id), None)

    def schedule(self, journey_id: str) -> TriggerEntry | None:
        """The live schedule trigger of `journey_id`, if it has one."""
        return next((e for e in self.schedules if e.journey_id == journey_id), None)


def compile_entry(stored: registry.TriggerEntry) -> TriggerEntry:
    """The registry's entry, checked and its `where` compiled; BadEntry names the field."""
    if not stored.journey_id:
        raise BadEntry("journey_id: a non-empty string")
    if stored.version < 1:
        raise BadEntry("version: a positive integer")
    if stored.reentry not in _REENTRY:
        raise BadEntry(f"reentry: one of never, after, always, got {stored.reentry!r}")
    if stored.cooldown_seconds < 0:
        raise BadEntry("cooldown_seconds: a number >= 0")
    if not 0 <= stored.holdout < 1:
        raise BadEntry("holdout: a number, 0 <= holdout < 1")
    cap = stored.enrollment_cap
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise BadEntry("enrollment_cap: null or a positive integer")
    program = None
    if stored.where is not None:
        if not isinstance(stored.where, str):
            raise BadEntry("where: a CEL string")
        try:
            program = conditions.compile_condition(stored.where)
        except conditions.ConditionError as exc:
            raise BadEntry(f"where: {exc}") from None
    return TriggerEntry(
        journey_id=stored.journey_id,
        version=stored.version,
        reentry=cast(Reentry, stored.reentry),
        cooldown_ms=stored.cooldown_seconds * 1000,
        holdout=stored.holdout,
        enrollment_cap=cap,
        where=stored.where,
        program=program,
        uses_customer=program is not None
        and conditions.CUSTOMER in conditions.free_variables(program),
        awaits=stored.awaits,
        schedule=dict(stored.schedule) if isinstance(stored.schedule, Mapping) else None,
    )


def parse_index(stored: Mapping[bytes, bytes], revision: bytes | None) -> TriggerIndex:
    """The whole index from HGETALL; unreadable fields and entries are logged and skipped.

    Event names, `@condition` (whose `where` is the condition) and `@schedule` (whose
    `schedule` says when, `where` whom) are read; other `@` fields are left to their readers.
    """
    by_event: dict[str, list[TriggerEntry]] = {}
    condition_entries: list[TriggerEntry] = []
    schedule_entries: list[TriggerEntry] = []
    for raw_name, raw_value in stored.items():
        name = raw_name.decode(errors="replace")
        if name.startswith("@") and name not in _SPECIAL:
            continue
        try:
            values = json.loads(raw_value)
            if not isinstance(values, list):
                raise ValueError("not a list")
        except ValueError:
            log.warning("triggers.index_field_unreadable", trigger=name)
            continue
        for position, value in enumerate(values):
            try:
                if not isinstance(value, dict):
                    raise BadEntry("entry: not an object")
                try:
                    stored_entry = registry.TriggerEntry.from_dict(value)
                except (KeyError, TypeError, ValueError) as exc:
                    raise BadEntry(f"entry: {type(exc).__name__}: {exc}") from None
                entry = compile_entry(stored_entry)
                if name == registry.CONDITION_TRIGGERS and entry.program is None:
                    raise BadEntry("where: a condition trigger needs its condition")
                if name == registry.SCHEDULE_TRIGGERS and entry.schedule is None:
                    raise BadEntry("schedule: a schedule trigger needs its schedule")
            except BadEntry as exc:
                log.warning(
                    "triggers.entry_skipped", trigger=name, position=position, reason=str(exc)
                )
                continue
            if name == registry.CONDITION_TRIGGERS:
                condition_entries.append(entry)
            elif name == registry.SCHEDULE_TRIGGERS:
                schedule_entries.append(entry)
            else:
                by_event.setdefault(name, []).append(entry)
    return TriggerIndex(
        revision=revision,
        by_event={name: tuple(entries) for name, entries in by_event.items()},
        conditions=tuple(condition_entries),
        schedules=tuple(schedule_entries),
    )


class TriggerIndexCache:
    """The index as of the last revision seen; `refresh(revision)` re-reads it on change."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._index = TriggerIndex()
        self._loaded = False

    @property
    def current(self) -> TriggerIndex:
        """The cached index (empty before the first refresh)."""
        return self._index

    async def refresh(self, revision: bytes | None) -> TriggerIndex:
        """The index at `revision` or later: re-read only when `revision` differs.

        The revision is read before the hash (two keys, two cluster slots, no transaction):
        a registry edit in between makes the content newer than the revision remembered,
        so the next batch sees a new revision and reads again. Never older.
        """
        if self._loaded and revision == self._index.revision:
            return self._index
        stored = cast(dict[bytes, bytes], await self._redis.hgetall(keys.TRIGGER_INDEX))
        self._index = parse_index(stored, revision)
        self._loaded = True
        log.info(
            "triggers.index_loaded",
            revision=revision.decode() if revision else None,
            events=len(self._index.by_event),
            conditions=len(self._index.conditions),
            schedules=len(self._index.schedules),
        )
        return self._index

    async def read(self) -> TriggerIndex:
        """The index now: the revision, then (when it changed) the hash."""
        revision = cast(bytes | None, await self._redis.get(keys.TRIGGER_INDEX_REVISION))
        return await self.refresh(revision)


def holds(
    entry: TriggerEntry, variables: Mapping[str, Any], *, count_filtered: bool = True
) -> bool:
    """Whether `entry`'s `where` holds (True when it has none); errors do not hold.

    A `where` over an absent field (a trait the customer lacks) does not hold and counts as
    `error` in `enishi_trigger_decisions`; a false one as `filtered` (unless told not to).
    """
    if entry.program is None:
        return True
    try:
        result = conditions.evaluate(entry.program, variables)
    except BaseException as exc:  # noqa: BLE001 - the Rust side raises PanicException
        if isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise
        TRIGGER_DECISIONS.labels("error").inc()
        log.debug("triggers.where_failed", journey_id=entry.journey_id, error=type(exc).__name__)
        return False
    if result is True:
        return True
    if count_filtered:
        TRIGGER_DECISIONS.labels("filtered").inc()
    return False
