"""Migration plans: who waits where, where they land, and why some are blocked."""

from __future__ import annotations

from datetime import UTC, datetime

from enishi.journeys import parse_journey
from enishi.journeys.model import Journey
from services.registry.enrollments import UNKNOWN_STEP, running_query
from services.registry.migration import check_step_map, effective_map, plan

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _journey(steps: str) -> Journey:
    return parse_journey(
        f"id: j\nname: J\ndesigner: t\ntrigger: {{event: order.completed}}\nsteps:\n{steps}"
    )


OLD = _journey(
    "  - {id: wait_a, wait: {for: 1d}}\n"
    "  - {id: note, update: {set: {x: 1}}}\n"
    "  - {id: reply, wait_for: {event: message.replied, timeout: 3d}}\n"
    "  - {id: gone, wait: {for: 1d}}\n"
    "  - {id: done, exit: {}}\n"
)
NEW = _journey(
    "  - {id: wait_a, wait: {for: 2d}}\n"
    "  - {id: reply2, wait_for: {event: message.replied, timeout: 5d}}\n"
    "  - {id: done, exit: {}}\n"
)


def test_same_ids_map_to_themselves_and_the_map_overrides() -> None:
    assert effective_map(OLD, NEW, {"reply": "reply2"}) == {
        "wait_a": "wait_a",
        "done": "done",
        "reply": "reply2",
    }


def test_rows_follow_the_definition_and_say_why_each_is_blocked() -> None:
    counts = {"reply": 4, "wait_a": 2, "note": 1, "gone": 3, UNKNOWN_STEP: 5}
    result = plan("j", OLD, 1, NEW, 2, {"gone": "nowhere"}, counts, NOW)
    rows = [
        (r.from_step_id, r.enrollments, r.to_step_id, r.migratable, r.blocked_reason)
        for r in result.rows
    ]
    assert rows == [
        ("wait_a", 2, "wait_a", True, ""),
        ("note", 1, "", False, "not a wait step"),
        ("reply", 4, "", False, "no mapping"),
        ("gone", 3, "nowhere", False, "step 'nowhere' does not exist in version 2"),
        ("", 5, "", False, "current step not reported (EnishiStep unset)"),
    ]
    assert (result.total_enrollments, result.migratable_enrollments) == (15, 2)
    assert result.blocked_enrollments == 13


def test_a_complete_map_makes_every_waiting_enrollment_migratable() -> None:
    result = plan("j", OLD, 1, NEW, 2, {"reply": "reply2"}, {"reply": 4, "wait_a": 1}, NOW)
    assert result.blocked_enrollments == 0 and result.migratable_enrollments == 5
    assert [r.to_step_id for r in result.rows] == ["wait_a", "reply2"]


def test_steps_without_enrollments_get_no_row() -> None:
    assert list(plan("j", OLD, 1, NEW, 2, {}, {}, NOW).rows) == []


def test_a_map_key_that_is_not_an_old_step_is_named() -> None:
    errors = check_step_map(OLD, 1, {"nope": "wait_a", "reply": ""})
    assert [str(e) for e in errors] == [
        "step_map.nope: 'nope' is not a step of version 1",
        "step_map.reply: empty target step",
    ]


def test_visibility_queries_name_journey_version_and_step() -> None:
    assert running_query("j", 2, "wait_a") == (
        "EnishiJourneyId = 'j' AND ExecutionStatus = 'Running' "
        "AND EnishiJourneyVersion = 2 AND EnishiStep = 'wait_a'"
    )
