"""The trigger index entries a journey version publishes, and replacing one journey's entries."""

from __future__ import annotations

import json

from enishi.journeys import parse_journey
from enishi.registry import (
    CONDITION_TRIGGERS,
    SCHEDULE_TRIGGERS,
    TriggerEntry,
    decode_entries,
    encode_entries,
    trigger_entries,
)
from services.registry.trigger_index import journey_entries, replace_journey

EVENT_JOURNEY = """\
id: f2
name: F2
designer: t
trigger: {event: order.completed, where: "customer.orders_count == 1"}
reentry: {policy: after, cooldown: 7d}
goal: {event: order.completed, within: 30d}
holdout: 0.1
enrollment_cap: 500
steps: [{id: w, wait: {for: 1d}}]
"""


def _entry(journey_id: str, version: int = 1) -> TriggerEntry:
    return TriggerEntry(journey_id=journey_id, version=version, where=None, reentry="never")


def test_an_event_trigger_is_indexed_under_the_event_name_in_the_contract_format() -> None:
    entries = trigger_entries(parse_journey(EVENT_JOURNEY), 3)
    assert list(entries) == ["order.completed"]
    assert json.loads(encode_entries(entries.values())) == [
        {
            "journey_id": "f2",
            "version": 3,
            "where": "customer.orders_count == 1",
            "reentry": "after",
            "cooldown_seconds": 7 * 86400,
            "holdout": 0.1,
            "enrollment_cap": 500,
            "awaits": ["order.completed"],
        }
    ]


def test_a_condition_trigger_is_indexed_under_at_condition_with_the_condition_as_where() -> None:
    journey = parse_journey(
        "id: lapse\nname: L\ndesigner: t\ntrigger: {condition: \"customer.phase == 'lapsing'\"}\n"
        "steps: [{id: w, wait: {for: 1d}}]\n"
    )
    (field, entry), *_ = trigger_entries(journey, 1).items()
    assert field == CONDITION_TRIGGERS
    assert entry.where == "customer.phase == 'lapsing'"
    assert entry.reentry == "never" and entry.enrollment_cap is None
    assert entry.awaits == ()  # no goal, no exit events: nothing to listen for from the start


def test_a_schedule_trigger_is_indexed_under_at_schedule_with_its_schedule() -> None:
    journey = parse_journey(
        "id: weekly\nname: W\ndesigner: t\n"
        'trigger: {schedule: {at_local: "10:00", weekdays: [mon]},'
        ' where: "customer.orders_count > 0"}\n'
        "steps: [{id: w, wait: {for: 1d}}]\n"
    )
    (field, entry), *_ = trigger_entries(journey, 2).items()
    assert field == SCHEDULE_TRIGGERS
    assert entry.schedule == {
        "at_local": "10:00",
        "weekdays": ["mon"],
        "timezone_fallback": "Asia/Tokyo",
    }
    assert decode_entries(encode_entries([entry])) == [entry]


def test_replacing_a_journey_keeps_other_journeys_under_the_same_event() -> None:
    index = {"order.completed": encode_entries([_entry("a"), _entry("b")])}
    change = replace_journey(index, "a", {"order.completed": _entry("a", 2)})
    assert change.delete == ()
    assert decode_entries(change.set["order.completed"]) == [_entry("a", 2), _entry("b")]


def test_removing_a_journey_deletes_fields_left_empty_and_rewrites_shared_ones() -> None:
    index = {
        "order.completed": encode_entries([_entry("a"), _entry("b")]),
        "cart.updated": encode_entries([_entry("a")]),
    }
    change = replace_journey(index, "a", {})
    assert change.delete == ("cart.updated",)
    assert decode_entries(change.set["order.completed"]) == [_entry("b")]


def test_moving_a_journey_to_another_event_removes_it_from_the_old_one() -> None:
    index = {"cart.updated": encode_entries([_entry("a")])}
    change = replace_journey(index, "a", {"order.completed": _entry("a", 2)})
    assert change.delete == ("cart.updated",)
    assert list(change.set) == ["order.completed"]


def test_an_unchanged_index_needs_no_write() -> None:
    index = {"order.completed": encode_entries([_entry("a"), _entry("b")])}
    assert replace_journey(index, "a", {"order.completed": _entry("a")}).empty
    assert replace_journey(index, "zzz", {}).empty


def test_journey_entries_finds_one_journeys_entries() -> None:
    index = {"order.completed": encode_entries([_entry("a"), _entry("b")])}
    assert journey_entries(index, "b") == {"order.completed": _entry("b")}
