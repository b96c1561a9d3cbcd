"""Schedule triggers: who is due in which run (local time, weekdays, DST), and the Temporal spec."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from temporalio.client import ScheduleOverlapPolicy

from enishi.journeys import parse_journey, schedules
from services.registry.schedules import fires_by_time, overlap_for, spec_for
from workflows.activities.audience import run_trigger, sweep_trigger

TEN = time(10, 0)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_customer_is_due_in_the_run_at_their_local_at_local() -> None:
    run = _utc(2026, 3, 2, 1, 0)  # Monday 10:00 in Tokyo, 02:00 in Paris
    assert schedules.due(TEN, None, run, "Asia/Tokyo")
    assert not schedules.due(TEN, None, run, "Europe/Paris")
    assert schedules.due(TEN, None, _utc(2026, 3, 2, 9, 0), "Europe/Paris")


def test_each_customer_is_due_in_exactly_one_run_a_day() -> None:
    runs = [_utc(2026, 3, 2) + n * schedules.GRID for n in range(96)]
    for zone in ("Asia/Tokyo", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "UTC"):
        due = [run for run in runs if schedules.due(time(7, 5), None, run, zone)]
        assert len(due) == 1, zone


def test_a_run_off_the_grid_still_enrolls_those_whose_time_fell_in_its_window() -> None:
    # A run triggered by hand at 10:07 Tokyo time covers 09:52-10:07.
    assert schedules.due(TEN, None, _utc(2026, 3, 2, 1, 7), "Asia/Tokyo")
    assert not schedules.due(TEN, None, _utc(2026, 3, 2, 1, 16), "Asia/Tokyo")


def test_weekdays_are_the_customers_local_weekdays() -> None:
    # 00:30 local Monday in Tokyo is still Sunday in UTC.
    run = _utc(2026, 3, 1, 15, 30)
    assert schedules.due(time(0, 30), ("mon",), run, "Asia/Tokyo")
    assert not schedules.due(time(0, 30), ("sun",), run, "Asia/Tokyo")


def test_a_customer_without_a_time_zone_uses_the_fallback() -> None:
    run = _utc(2026, 3, 2, 1, 0)
    assert schedules.due(TEN, None, run, "", "Asia/Tokyo")
    assert schedules.due(TEN, None, run, "Not/AZone", "Asia/Tokyo")
    assert not schedules.due(TEN, None, run, None, "Europe/Paris")


def test_a_local_time_skipped_by_spring_forward_is_due_right_after_the_gap() -> None:
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT; 02:30 is read as 03:30 EDT.
    runs = [_utc(2026, 3, 8) + n * schedules.GRID for n in range(96)]
    due = [run for run in runs if schedules.due(time(2, 30), None, run, "America/New_York")]
    assert due == [_utc(2026, 3, 8, 7, 30)]


def test_an_ambiguous_local_time_is_due_once_at_its_first_occurrence() -> None:
    # New York, 1 November 2026: 01:30 happens twice; the first is EDT (05:30 UTC).
    runs = [_utc(2026, 11, 1) + n * schedules.GRID for n in range(96)]
    due = [run for run in runs if schedules.due(time(1, 30), None, run, "America/New_York")]
    assert due == [_utc(2026, 11, 1, 5, 30)]


def test_most_runs_of_the_grid_find_no_zone_at_its_at_local() -> None:
    runs = [_utc(2026, 3, 2) + n * schedules.GRID for n in range(96)]
    busy = [run for run in runs if schedules.due_anywhere(TEN, None, run)]
    assert _utc(2026, 3, 2, 1, 0) in busy  # Tokyo
    assert _utc(2026, 3, 2, 1, 15) in busy  # Australia/Eucla, +8:45
    assert _utc(2026, 3, 2, 1, 45) not in busy  # no zone is 8:15 ahead of UTC
    assert 24 <= len(busy) < 48


def _journey(trigger: str) -> str:
    return (
        "id: sched\nname: S\ndesigner: t\ntimezone_fallback: Europe/Paris\n"
        f"trigger: {trigger}\nsteps: [{{id: w, wait: {{for: 1d}}}}]\n"
    )


def test_an_at_local_schedule_fires_every_quarter_hour_on_the_grid_of_its_minute() -> None:
    spec = spec_for(parse_journey(_journey('{schedule: {at_local: "09:40"}}')))
    assert spec is not None
    (interval,) = spec.intervals
    assert (interval.every, interval.offset) == (timedelta(minutes=15), timedelta(minutes=10))
    assert not spec.cron_expressions


def test_a_cron_schedule_fires_in_its_time_zone_else_the_fallback() -> None:
    spec = spec_for(parse_journey(_journey('{schedule: {cron: "0 9 1 * *"}}')))
    assert spec is not None
    assert (spec.cron_expressions, spec.time_zone_name) == (["0 9 1 * *"], "Europe/Paris")
    zoned = spec_for(
        parse_journey(_journey('{schedule: {cron: "0 9 * * mon", timezone: Asia/Tokyo}}'))
    )
    assert zoned is not None and zoned.time_zone_name == "Asia/Tokyo"


def test_a_condition_trigger_is_swept_at_the_configured_interval_and_skips_overlaps() -> None:
    lapsing = parse_journey(_journey("{condition: \"customer.phase == 'lapsing'\"}"))
    spec = spec_for(lapsing, timedelta(minutes=20))
    assert spec is not None
    (interval,) = spec.intervals
    assert interval.every == timedelta(minutes=20)
    assert overlap_for(lapsing) is ScheduleOverlapPolicy.SKIP
    daily = parse_journey(_journey('{schedule: {at_local: "09:40"}}'))
    assert overlap_for(daily) is ScheduleOverlapPolicy.BUFFER_ONE


def test_an_event_trigger_needs_no_schedule() -> None:
    journey = parse_journey(_journey("{event: order.completed}"))
    assert spec_for(journey) is None and not fires_by_time(journey)


def test_every_enrollment_of_a_run_has_the_same_trigger_id_and_another_run_another() -> None:
    at = _utc(2026, 3, 2, 1, 0)
    first, second = run_trigger("sched", at, "c1"), run_trigger("sched", at, "c2")
    assert first.event_id == second.event_id == "schedule:sched:20260302T010000Z"
    assert (first.customer_id, first.name, first.kind) == ("c1", "journey.scheduled", "schedule")
    assert run_trigger("sched", at + timedelta(days=1), "c1").event_id != first.event_id


def test_a_sweeps_enrollments_share_one_trigger_id_per_sweep() -> None:
    at = _utc(2026, 3, 2, 1, 0)
    first, second = sweep_trigger("lapsing", at, "c1"), sweep_trigger("lapsing", at, "c2")
    assert first.event_id == second.event_id == "condition:lapsing:20260302T010000Z"
    assert (first.name, first.kind) == ("journey.condition_met", "sweep")
