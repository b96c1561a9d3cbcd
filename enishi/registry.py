"""What the JourneyRegistry shares with its readers and callers, defined once.

The trigger index entry format (docs/journey-runtime.md; written by the registry, read by the
stream processor) and the trailer that carries a rejected definition's diagnostics to the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from enishi.journeys.model import ConditionTrigger, EventTrigger, Journey, ScheduleTrigger

CONDITION_TRIGGERS: Final = "@condition"
"""Trigger index field holding condition triggers (`where` is the condition)."""
SCHEDULE_TRIGGERS: Final = "@schedule"
"""Trigger index field holding schedule triggers (`schedule` set, `where` the audience)."""

DIAGNOSTICS_TRAILER: Final = "enishi-diagnostics-bin"
"""Trailing metadata of a RegisterJourney answered INVALID_ARGUMENT: a serialized
`ValidateJourneyResponse` with every diagnostic (the status message shows the first few)."""


@dataclass(frozen=True)
class TriggerEntry:
    """One live trigger of one journey, as stored (JSON) under its trigger index field."""

    journey_id: str
    version: int
    where: str | None
    reentry: str  # "never" | "after" | "always"
    cooldown_seconds: int = 0
    holdout: float = 0.0
    enrollment_cap: int | None = None
    # Schedule triggers only: the trigger's schedule as written, plus `timezone_fallback`.
    schedule: Mapping[str, Any] | None = field(default=None)
    # Events every enrollment of this version listens for from its first moment (goal, exit
    # events): the stream processor writes them to the customer's `awaits` as it enrolls, so
    # a goal reached before the workflow's first wait is still routed.
    awaits: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; `schedule` only when set, so event entries match the contract."""
        data = asdict(self)
        if self.schedule is None:
            del data["schedule"]
        else:
            data["schedule"] = dict(self.schedule)
        if self.awaits:
            data["awaits"] = list(self.awaits)
        else:
            del data["awaits"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriggerEntry:
        """Read one entry; unknown keys (added by a newer registry) are ignored."""
        return cls(
            journey_id=str(data["journey_id"]),
            version=int(data["version"]),
            where=data.get("where"),
            reentry=str(data.get("reentry", "never")),
            cooldown_seconds=int(data.get("cooldown_seconds", 0)),
            holdout=float(data.get("holdout", 0.0)),
            enrollment_cap=data.get("enrollment_cap"),
            schedule=data.get("schedule"),
            awaits=tuple(str(name) for name in data.get("awaits", ())),
        )


def encode_entries(entries: Iterable[TriggerEntry]) -> bytes:
    """One index field's value: the entries as a JSON list, ordered by journey id."""
    ordered = sorted(entries, key=lambda e: (e.journey_id, e.version))
    return json.dumps([e.to_dict() for e in ordered], separators=(",", ":")).encode()


def decode_entries(value: bytes | str) -> list[TriggerEntry]:
    """One index field's value back into entries."""
    return [TriggerEntry.from_dict(item) for item in json.loads(value)]


def trigger_entries(journey: Journey, version: int) -> dict[str, TriggerEntry]:
    """Index field → this journey version's entry under it (one trigger, so one field)."""
    reentry = journey.reentry
    common: dict[str, Any] = {
        "journey_id": journey.id,
        "version": version,
        "reentry": reentry.policy,
        "cooldown_seconds": int(reentry.cooldown.total_seconds()) if reentry.cooldown else 0,
        "holdout": journey.holdout,
        "enrollment_cap": journey.enrollment_cap,
        "awaits": tuple(sorted(journey.lifetime_events())),
    }
    trigger = journey.trigger
    if isinstance(trigger, EventTrigger):
        return {trigger.event: TriggerEntry(where=trigger.where, **common)}
    if isinstance(trigger, ConditionTrigger):
        return {CONDITION_TRIGGERS: TriggerEntry(where=trigger.condition, **common)}
    assert isinstance(trigger, ScheduleTrigger)
    schedule = trigger.schedule.model_dump(mode="json", exclude_none=True, by_alias=True)
    # The zone of customers who have none (`at_local`), and of a cron without `timezone`: the
    # audience run reads it from here, not from the definition.
    schedule["timezone_fallback"] = journey.timezone_fallback
    return {SCHEDULE_TRIGGERS: TriggerEntry(where=trigger.where, schedule=schedule, **common)}
