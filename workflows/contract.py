"""The journey runtime contract: what the stream processor, the worker and the registry agree on.

Workflow ids, the task queue, signal and query names, and the typed payloads that cross the
Temporal boundary. Payloads are frozen dataclasses so fields can be added (with defaults)
without breaking running histories. Imported by workflow code: no I/O, no side effects.
Documented in docs/journey-runtime.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

TASK_QUEUE: Final = "enishi-journeys"
WORKFLOW_ID_PREFIX: Final = "journey"
AUDIENCE_WORKFLOW: Final = "JourneyAudienceWorkflow"
"""Workflow type of one scheduled run over a journey's audience (workflows/audience.py)."""
SCHEDULE_ID_PREFIX: Final = "journey-schedule"
AUDIENCE_ID_PREFIX: Final = "journey-audience"

SCHEDULED_EVENT: Final = "journey.scheduled"
"""The trigger's name when a schedule run enrolls a customer (no touchpoint did)."""
CONDITION_EVENT: Final = "journey.condition_met"
"""The trigger's name when a condition sweep enrolls a customer (time, not an event, did)."""

SIGNAL_TOUCHPOINT: Final = "touchpoint"
"""Signal carrying an `EventSignal`: the trigger (with start) or an event the enrollment awaits."""
SIGNAL_CANCEL: Final = "cancel"
"""Signal carrying a `CancelSignal`: the designer paused/archived with policy CANCEL."""
SIGNAL_MIGRATE: Final = "migrate"
"""Signal carrying a `MigrateSignal`: move to another version at the next safe point."""
SIGNAL_MERGE: Final = "merge"
"""Signal carrying a `MergeSignal`: the customer was merged into another (identity merge)."""
QUERY_CURRENT_STEP: Final = "current_step"
QUERY_STEPS_TAKEN: Final = "steps_taken"

# Search attributes the workflow upserts, so the registry can count who waits where
# (PlanMigration, stats) through Temporal visibility. Registered on the dev server by
# `enishi dev up` and by the namespace job in production.
SEARCH_ATTRIBUTES: Final = {
    "EnishiJourneyId": "Keyword",
    "EnishiJourneyVersion": "Int",
    "EnishiStep": "Keyword",
    "EnishiCustomerId": "Keyword",
}


def workflow_id(journey_id: str, customer_id: str) -> str:
    """One live enrollment per (journey, customer): `journey:{journey_id}:{customer_id}`."""
    return f"{WORKFLOW_ID_PREFIX}:{journey_id}:{customer_id}"


def schedule_id(journey_id: str) -> str:
    """The journey's Temporal Schedule: `journey-schedule:{journey_id}` (one per journey)."""
    return f"{SCHEDULE_ID_PREFIX}:{journey_id}"


def audience_workflow_id(journey_id: str) -> str:
    """The id of the schedule's runs; Temporal appends each run's scheduled time."""
    return f"{AUDIENCE_ID_PREFIX}:{journey_id}"


def parse_workflow_id(value: str) -> tuple[str, str]:
    """(journey_id, customer_id) of a journey workflow id."""
    prefix, journey_id, customer_id = value.split(":", 2)
    if prefix != WORKFLOW_ID_PREFIX or not journey_id or not customer_id:
        raise ValueError(f"workflow_id: not a journey workflow id: {value!r}")
    return journey_id, customer_id


def dispatch_id(workflow_id: str, enrollment: int, step_id: str, visit: int) -> str:
    """Deterministic dispatch id (design §6): the same send, retried or replayed, has one id.

    `enrollment` counts the customer's enrollments in this journey (re-entry makes new ones),
    `visit` counts how often this enrollment reached `step_id` (loops).
    """
    material = f"{workflow_id}\x1f{enrollment}\x1f{step_id}\x1f{visit}".encode()
    return "d_" + hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True)
class EventSignal:
    """A touchpoint as a workflow sees it: enough to evaluate CEL filters and branch on it."""

    event_id: str
    name: str
    occurred_at: str  # ISO 8601, UTC
    customer_id: str
    props: dict[str, Any] = field(default_factory=dict)
    kind: str = "event"  # TouchpointKind name in lower case, e.g. "event", "receipt"
    traceparent: str = ""


@dataclass(frozen=True)
class JourneyInput:
    """How an enrollment starts (signal-with-start input) or resumes after continue-as-new."""

    journey_id: str
    version: int
    customer_id: str
    enrollment: int = 1
    holdout: bool = False
    state: JourneyState | None = None  # set only by continue-as-new
    max_steps_per_run: int = 0  # continue-as-new after this many steps (0: when Temporal suggests)


@dataclass(frozen=True)
class StepRecord:
    """One step an enrollment took, for the `steps_taken` query and analytics."""

    step_id: str
    kind: str
    at: str  # ISO 8601, UTC (workflow time)
    outcome: str  # e.g. "sent:line", "skipped:no_consent", "deferred:quiet_hours", "branch:else"


@dataclass(frozen=True)
class JourneyState:
    """What continue-as-new carries: position, counters, recent history (bounded)."""

    current_step: str
    trigger: EventSignal | None
    visits: dict[str, int] = field(default_factory=dict)
    steps_taken: tuple[StepRecord, ...] = ()
    started_at: str = ""
    goal_deadline: str = ""  # ISO 8601; empty when the journey has no goal window
    wake_at: str = ""  # ISO 8601: when the wait the enrollment sits in ends (kept, not recomputed)
    last_event: EventSignal | None = None  # the last event waited for (`event` in branches)
    variant: str = ""  # the split arm taken last (the dispatch's why)
    awaiting: tuple[str, ...] = ()  # the event names last written to the awaits hash
    seen_event_ids: tuple[str, ...] = ()  # recent event ids, for dedupe across runs
    pending_events: tuple[EventSignal, ...] = ()  # received, not yet handled
    # The enrollment's identity in its journal (and so in the stats): the workflow id and
    # enrollment number it started with, kept when an identity merge hands it to another
    # customer's workflow. Empty: this workflow's own.
    journal_workflow_id: str = ""
    journal_enrollment: int = 0


@dataclass(frozen=True)
class SendRequest:
    """Input of the send activity: one `send` step of one enrollment."""

    workflow_id: str
    journey_id: str
    version: int
    step_id: str
    customer_id: str
    dispatch_id: str
    channel: str  # a channel name, or "preferred"
    fallback: tuple[str, ...]
    template_id: str
    on_quiet_hours: str  # "defer" | "skip"
    trigger_event_id: str
    designer: str
    now: str  # workflow time, ISO 8601 UTC: caps windows and quiet hours are judged at it
    holdout: bool = False
    variant: str = ""  # the split arm the customer is in, for the dispatch's why
    trigger: EventSignal | None = None  # the enrolling event: `trigger` in templates
    event: EventSignal | None = None  # the last event waited for: `event` in templates


@dataclass(frozen=True)
class SendOutcome:
    """What the send activity did: sent on a channel, skipped with a reason, or deferred."""

    status: str  # "sent" | "skipped" | "deferred"
    channel: str = ""
    reason: str = ""  # SkipReason name in lower case, e.g. "no_consent", "quiet_hours"
    retry_at: str = ""  # deferred only: ISO 8601 UTC time to try again


@dataclass(frozen=True)
class CancelSignal:
    reason: str


@dataclass(frozen=True)
class MigrateSignal:
    to_version: int
    step_map: dict[str, str]  # old step id -> new step id


@dataclass(frozen=True)
class MergeSignal:
    """The enrollment's customer was merged into `into_customer_id` (docs/stream.md).

    `hand_over`: continue the enrollment as `journey:{journey}:{into}` with `enrollment` as its
    number there (the stream processor recorded it on the survivor's enrollment record);
    otherwise the survivor has its own enrollment in the journey and this one just ends.
    """

    into_customer_id: str
    enrollment: int = 0
    hand_over: bool = True


@dataclass(frozen=True)
class JourneyOutcome:
    """How an enrollment ended."""

    status: str  # "completed" | "converted" | "exited" | "cancelled" | "merged"
    reason: str = ""
    last_step: str = ""


@dataclass(frozen=True)
class AudienceTotals:
    """What a scheduled run did so far: customers read, due (filters passed), enrolled."""

    scanned: int = 0
    due: int = 0
    enrolled: int = 0

    def __add__(self, other: AudienceTotals) -> AudienceTotals:
        return AudienceTotals(
            self.scanned + other.scanned, self.due + other.due, self.enrolled + other.enrolled
        )


@dataclass(frozen=True)
class AudienceRun:
    """Input of `JourneyAudienceWorkflow`: one run of a journey's schedule over its audience.

    The registry's Temporal Schedule starts it with `journey_id` only; `scheduled_at` (empty:
    the schedule's `TemporalScheduledStartTime`, else the start) and the scan position are set
    when the run continues as new.
    """

    journey_id: str
    scheduled_at: str = ""  # ISO 8601 UTC: the run's time (local-time windows, trigger id)
    cursor: int = 0  # the Redis SCAN cursor to go on from (0: the start)
    totals: AudienceTotals = field(default_factory=AudienceTotals)
