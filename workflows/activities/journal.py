"""What an enrollment did, as touchpoints on Kafka `touchpoints`: the timeline and analytics.

JOURNEY touchpoints (`journey.entered`, `journey.step_entered`, `journey.goal_reached`, ...),
SKIP touchpoints for sends the workflow itself skips (holdout), and IDENTIFY touchpoints for
`update` steps (the stream processor applies traits like any other). Event ids derive from the
fact (workflow id, enrollment, entry key), so a retried activity publishes duplicates the
stream processor drops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio import activity

from enishi.memory import model
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import dispatch_pb2, journey_pb2, touchpoint_pb2

SOURCE: Final = "enishi.worker"
JOURNEY_PREFIX: Final = "journey."
SKIPPED: Final = "message.skipped"
IDENTIFIED: Final = "customer.identified"
TRANSITIONS: Final = {
    "entered": journey_pb2.JOURNEY_TRANSITION_ENTERED,
    "step_entered": journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED,
    "completed": journey_pb2.JOURNEY_TRANSITION_COMPLETED,
    "exited": journey_pb2.JOURNEY_TRANSITION_EXITED,
    "goal_reached": journey_pb2.JOURNEY_TRANSITION_GOAL_REACHED,
    "migrated": journey_pb2.JOURNEY_TRANSITION_MIGRATED,
    "cancelled": journey_pb2.JOURNEY_TRANSITION_CANCELLED,
}
SKIP_REASONS: Final = {"holdout": dispatch_pb2.SKIP_REASON_HOLDOUT}


@dataclass(frozen=True)
class Enrollment:
    """Who and what every entry of a batch is about."""

    workflow_id: str
    journey_id: str
    customer_id: str
    enrollment: int
    holdout: bool
    trigger_event_id: str = ""
    designer: str = ""


@dataclass(frozen=True)
class JournalEntry:
    """One transition (a key of TRANSITIONS), unique in the enrollment by `key`."""

    key: str  # e.g. "step_entered:thanks:1": with the enrollment, the event id's material
    transition: str
    version: int
    step_id: str
    at: str  # workflow time, ISO 8601 UTC
    detail: str = ""


@dataclass(frozen=True)
class SkipEntry:
    """A send step the workflow skipped without calling `send` (holdout)."""

    dispatch_id: str
    reason: str  # a key of SKIP_REASONS
    version: int
    step_id: str
    template_id: str
    at: str
    variant: str = ""


@dataclass(frozen=True)
class JournalBatch:
    """Entries collected since the last flush (the workflow flushes before it waits)."""

    enrollment: Enrollment
    entries: tuple[JournalEntry, ...] = ()
    skips: tuple[SkipEntry, ...] = ()


@dataclass(frozen=True)
class TraitUpdate:
    """An `update` step: traits to set (None removes) on the customer."""

    enrollment: Enrollment
    key: str  # e.g. "update:flag:1"
    traits: dict[str, Any] = field(default_factory=dict)
    at: str = ""


class JournalActivities:
    """Publishes through the shared `TouchpointPublisher` (waits for Kafka's ack)."""

    def __init__(self, publisher: TouchpointPublisher) -> None:
        self._publisher = publisher

    @activity.defn(name="record_journal")
    async def record_journal(self, batch: JournalBatch) -> None:
        events = [journey_touchpoint(batch.enrollment, e) for e in batch.entries]
        events += [skip_touchpoint(batch.enrollment, s) for s in batch.skips]
        if events:
            await self._publisher.publish(events)

    @activity.defn(name="update_traits")
    async def update_traits(self, update: TraitUpdate) -> None:
        await self._publisher.publish([trait_touchpoint(update)])


def event_id(enrollment: Enrollment, key: str) -> str:
    """Deterministic touchpoint id of one journal fact."""
    material = f"{enrollment.workflow_id}\x1f{enrollment.enrollment}\x1f{key}".encode()
    return "j_" + hashlib.sha256(material).hexdigest()[:32]


def journey_touchpoint(enrollment: Enrollment, entry: JournalEntry) -> touchpoint_pb2.Touchpoint:
    return _touchpoint(
        enrollment,
        entry.key,
        JOURNEY_PREFIX + entry.transition,
        touchpoint_pb2.TOUCHPOINT_KIND_JOURNEY,
        entry.at,
        journey=journey_pb2.JourneyEvent(
            journey_id=enrollment.journey_id,
            version=entry.version,
            step_id=entry.step_id,
            workflow_id=enrollment.workflow_id,
            transition=TRANSITIONS[entry.transition],
            group=_group(enrollment),
            trigger_event_id=enrollment.trigger_event_id,
            detail=entry.detail,
        ),
    )


def skip_touchpoint(enrollment: Enrollment, skip: SkipEntry) -> touchpoint_pb2.Touchpoint:
    return _touchpoint(
        enrollment,
        f"skip:{skip.dispatch_id}",
        SKIPPED,
        touchpoint_pb2.TOUCHPOINT_KIND_SKIP,
        skip.at,
        skipped=dispatch_pb2.SendSkipped(
            skip_reason=SKIP_REASONS[skip.reason],
            detail=f"{skip.reason}: this enrollment gets no messages",
            dispatch_id=skip.dispatch_id,
            reason=dispatch_pb2.DispatchReason(
                journey_id=enrollment.journey_id,
                journey_version=skip.version,
                step_id=skip.step_id,
                trigger_event_id=enrollment.trigger_event_id,
                designer=enrollment.designer,
                workflow_id=enrollment.workflow_id,
                template_id=skip.template_id,
                variant=skip.variant,
            ),
        ),
    )


def trait_touchpoint(update: TraitUpdate) -> touchpoint_pb2.Touchpoint:
    detail = touchpoint_pb2.IdentifyDetail()
    json_format.ParseDict(update.traits, detail.traits)
    return _touchpoint(
        update.enrollment,
        update.key,
        IDENTIFIED,
        touchpoint_pb2.TOUCHPOINT_KIND_IDENTIFY,
        update.at,
        identify=detail,
    )


def _touchpoint(
    enrollment: Enrollment, key: str, name: str, kind: int, at: str, **detail: Any
) -> touchpoint_pb2.Touchpoint:
    touchpoint = touchpoint_pb2.Touchpoint(
        event_id=event_id(enrollment, key),
        customer_id=enrollment.customer_id,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        source=SOURCE,
        occurred_at=_timestamp(at),
        **detail,
    )
    touchpoint.customer.customer_id = enrollment.customer_id
    touchpoint.attributes["journey_id"] = enrollment.journey_id
    return touchpoint


def _timestamp(at: str) -> Timestamp:
    return model.from_ms(model.datetime_ms(datetime.fromisoformat(at)))


def _group(enrollment: Enrollment) -> journey_pb2.EnrollmentGroup.ValueType:
    if enrollment.holdout:
        return journey_pb2.ENROLLMENT_GROUP_HOLDOUT
    return journey_pb2.ENROLLMENT_GROUP_TREATMENT
