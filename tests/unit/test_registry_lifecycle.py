"""Which status changes the registry allows (docs/registry.md, "Statuses")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enishi.errors import FailedPrecondition
from services.registry import lifecycle
from services.registry.store import JourneyState, Status


def _state(status: Status) -> JourneyState:
    return JourneyState("j", status, 1, 1, datetime(2025, 1, 1, tzinfo=UTC), "J", "t")


@pytest.mark.parametrize("status", [Status.DRAFT, Status.ACTIVE, Status.PAUSED])
def test_activation_makes_any_unarchived_journey_active(status: Status) -> None:
    assert lifecycle.activate(_state(status)) is Status.ACTIVE


def test_an_archived_journey_can_never_be_activated_or_resumed_again() -> None:
    for rule in (lifecycle.activate, lifecycle.resume, lifecycle.pause):
        with pytest.raises(FailedPrecondition, match="archived"):
            rule(_state(Status.ARCHIVED))


def test_a_draft_can_be_neither_paused_nor_resumed() -> None:
    with pytest.raises(FailedPrecondition, match="never activated"):
        lifecycle.pause(_state(Status.DRAFT))
    with pytest.raises(FailedPrecondition, match="ActivateJourney"):
        lifecycle.resume(_state(Status.DRAFT))


def test_repeating_pause_or_resume_is_allowed_so_clients_may_retry() -> None:
    assert lifecycle.pause(_state(Status.PAUSED)) is Status.PAUSED
    assert lifecycle.resume(_state(Status.ACTIVE)) is Status.ACTIVE


@pytest.mark.parametrize("status", list(Status))
def test_every_status_can_be_archived(status: Status) -> None:
    assert lifecycle.archive(_state(status)) is Status.ARCHIVED
