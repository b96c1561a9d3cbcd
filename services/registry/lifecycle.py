"""Which status changes a journey allows, and to what: the rules of docs/registry.md in one place.

Each function takes the journey's state and returns the status it moves to, or raises
FailedPrecondition saying why not. Idempotent repeats (pausing a paused journey) are allowed,
so a client may retry any call.
"""

from __future__ import annotations

from enishi.errors import FailedPrecondition
from services.registry.store import JourneyState, Status


def activate(state: JourneyState) -> Status:
    """Any status but archived becomes ACTIVE (a paused journey resumes on that version)."""
    if state.status is Status.ARCHIVED:
        raise FailedPrecondition(
            f"journey_id: '{state.journey_id}' is archived and cannot be activated again"
        )
    return Status.ACTIVE


def pause(state: JourneyState) -> Status:
    """ACTIVE (or already PAUSED) becomes PAUSED."""
    if state.status is Status.DRAFT:
        raise FailedPrecondition(
            f"journey_id: '{state.journey_id}' was never activated; there is nothing to pause"
        )
    if state.status is Status.ARCHIVED:
        raise FailedPrecondition(f"journey_id: '{state.journey_id}' is archived")
    return Status.PAUSED


def resume(state: JourneyState) -> Status:
    """PAUSED (or already ACTIVE) becomes ACTIVE on the live version."""
    if state.status is Status.DRAFT:
        raise FailedPrecondition(
            f"journey_id: '{state.journey_id}' was never activated; use ActivateJourney "
            "with a version"
        )
    if state.status is Status.ARCHIVED:
        raise FailedPrecondition(
            f"journey_id: '{state.journey_id}' is archived and cannot be resumed"
        )
    return Status.ACTIVE


def archive(state: JourneyState) -> Status:
    """Every status becomes ARCHIVED, for good."""
    return Status.ARCHIVED
