"""Identity merges fold the merged customer's enrollment records into the survivor's."""

from __future__ import annotations

from typing import Any

from enishi.enrollment.records import plan_merge

MERGE = "merge-event-1"


def _running(count: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "count": count,
        "last_at": 1_000,
        "active": True,
        "version": 2,
        "holdout": False,
        "event_id": "ev-a",
        **extra,
    }


def _ended(count: int = 1, last_at: int = 1_000, **extra: Any) -> dict[str, Any]:
    return {
        "count": count,
        "last_at": last_at,
        "active": False,
        "version": 1,
        "event_id": "ev-old",
        "ended": "completed",
        **extra,
    }


def test_a_running_enrollment_of_the_visitor_becomes_the_known_customers() -> None:
    plan = plan_merge(
        "anon", MERGE, {"f2": _running(holdout=True)}, {}, {"f2": b'["order.completed"]'}
    )
    record = plan.records["f2"]
    assert (record["count"], record["active"], record["event_id"]) == (1, True, MERGE)
    assert (record["version"], record["holdout"], record["handed_from"]) == (2, True, "anon")
    assert record["merged"] == ["anon"]
    assert plan.hand_overs == {"f2": 1}
    assert plan.awaits == {"f2": b'["order.completed"]'}
    assert plan.ends == ()


def test_the_hand_over_counts_the_known_customers_earlier_enrollments() -> None:
    plan = plan_merge("anon", MERGE, {"f2": _running()}, {"f2": _ended(count=2)}, {})
    record = plan.records["f2"]
    assert record["count"] == 3 and "ended" not in record
    assert plan.hand_overs == {"f2": 3}


def test_when_both_run_the_known_customers_enrollment_stays_and_the_visitors_ends() -> None:
    ours = _running(count=4, event_id="ev-k")
    plan = plan_merge("anon", MERGE, {"f2": _running()}, {"f2": ours}, {})
    assert plan.records == {} and plan.hand_overs == {}
    assert plan.ends == ("f2",)


def test_ended_enrollments_add_to_the_known_customers_history() -> None:
    plan = plan_merge(
        "anon",
        MERGE,
        {"f2": _ended(count=1, last_at=5_000), "welcome": _ended(count=1)},
        {"f2": _ended(count=2, last_at=3_000)},
        {},
    )
    assert (plan.records["f2"]["count"], plan.records["f2"]["last_at"]) == (3, 5_000)
    assert plan.records["welcome"]["count"] == 1  # re-entry `never` now holds for the person
    assert plan.records["welcome"]["merged"] == ["anon"]
    assert plan.hand_overs == {} and plan.ends == ()


def test_a_running_record_of_the_known_customer_is_never_rewritten() -> None:
    ours = _running(count=4, event_id="ev-k")
    plan = plan_merge("anon", MERGE, {"f2": _ended()}, {"f2": ours}, {})
    assert plan.records == {} and plan.ends == ()


def test_a_redelivered_merge_counts_nothing_twice_and_only_repeats_the_hand_over() -> None:
    theirs = {"f2": _running(), "welcome": _ended()}
    first = plan_merge("anon", MERGE, theirs, {}, {})
    again = plan_merge("anon", MERGE, theirs, first.records, {})
    assert again.records == {}
    assert again.hand_overs == {"f2": 1}  # the visitor's run may not have heard it yet
    assert again.ends == ()
    # Once the hand-over enrollment has ended, a redelivery does nothing at all.
    done = {**first.records["f2"], "active": False, "ended": "completed"}
    late = plan_merge("anon", MERGE, theirs, {**first.records, "f2": done}, {})
    assert (late.records, late.hand_overs, late.ends) == ({}, {}, ())
