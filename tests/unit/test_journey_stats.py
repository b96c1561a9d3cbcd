"""Journey analytics maths: decoding counters, the funnel, goal rates, lift and its verdict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enishi import keys
from enishi.cli.journey import describe_lift, lift_estimate
from enishi.v1 import journey_pb2, touchpoint_pb2
from services.registry import stats
from services.stream.hooks import AppliedBatch
from services.stream.journey_stats import in_stream_order, journey_args

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
TREATMENT = journey_pb2.ENROLLMENT_GROUP_TREATMENT
HOLDOUT = journey_pb2.ENROLLMENT_GROUP_HOLDOUT


def counters(**counts: int) -> stats.Counters:
    """Counters from `step__<v>__<step>__<group>__<counter>=n` / `group__<v>__<group>__<c>=n`."""
    raw: dict[bytes | str, bytes | str] = {}
    for name, n in counts.items():
        kind, *parts = name.split("__")
        if kind == "step":
            v, step, group, counter = parts
            raw[keys.stats_step_field(int(v), step, group, counter).encode()] = str(n).encode()
        else:
            v, group, counter = parts
            raw[keys.stats_group_field(int(v), group, counter)] = str(n)
    return stats.Counters.decode(raw)


def groups_of(result: journey_pb2.JourneyStats) -> dict[tuple[int, str], tuple[int, int, float]]:
    names = {TREATMENT: "treatment", HOLDOUT: "holdout"}
    return {
        (g.version, names[g.group]): (g.enrolled, g.goal_reached, g.goal_rate)
        for g in result.groups
    }


# --- counters -> JourneyStats -----------------------------------------------------------------


def test_step_counts_of_both_groups_add_up_and_unknown_fields_are_ignored() -> None:
    decoded = stats.Counters.decode(
        {
            b"step|1|a|treatment|entered": b"3",
            b"step|1|a|holdout|entered": b"2",
            b"step|x|a|holdout|entered": b"2",  # not a version
            b"group|1|control|enrolled": b"9",  # not a group
            b"something|else": b"1",
            b"step|1|a|treatment|completed": b"nan",
        }
    )
    assert decoded.steps == {(1, "a"): {"entered": 5}}
    assert decoded.groups == {}


def test_the_funnel_follows_the_definition_order_and_shows_steps_nobody_reached() -> None:
    result = stats.build(
        "j",
        counters(step__1__b__treatment__entered=4, step__1__b__treatment__completed=1),
        {1: ["a", "b", "c"]},
        0,
        NOW,
    )
    assert [(s.version, s.step_id, s.entered, s.completed) for s in result.steps] == [
        (1, "a", 0, 0),
        (1, "b", 4, 1),
        (1, "c", 0, 0),
    ]
    assert result.computed_at.ToDatetime(tzinfo=UTC) == NOW


def test_exits_cancels_and_migrations_away_all_leave_at_the_step_and_the_rest_wait() -> None:
    result = stats.build(
        "j",
        counters(
            step__1__w__treatment__entered=10,
            step__1__w__holdout__entered=2,
            step__1__w__treatment__completed=3,
            step__1__w__treatment__exited=1,
            step__1__w__holdout__cancelled=1,
            step__1__w__treatment__migrated=2,
            step__1__w__treatment__goal=2,
        ),
        {1: ["w"]},
        0,
        NOW,
    )
    (step,) = result.steps
    assert (step.entered, step.completed, step.exited, step.goal_reached) == (12, 3, 4, 2)
    assert step.waiting == 12 - 3 - 4 - 2


def test_waiting_never_goes_below_zero_when_ends_outnumber_entries() -> None:
    result = stats.build("j", counters(step__1__w__treatment__exited=2), {1: ["w"]}, 0, NOW)
    assert result.steps[0].waiting == 0


def test_a_step_only_the_counters_know_is_listed_after_the_definitions_steps() -> None:
    result = stats.build("j", counters(step__1__gone__treatment__entered=1), {1: ["a"]}, 0, NOW)
    assert [s.step_id for s in result.steps] == ["a", "gone"]


def test_goal_rates_per_version_and_group_and_over_all_versions() -> None:
    result = stats.build(
        "j",
        counters(
            group__1__treatment__enrolled=80,
            group__1__treatment__goal=20,
            group__1__holdout__enrolled=20,
            group__1__holdout__goal=3,
            group__2__treatment__enrolled=20,
            group__2__treatment__goal=10,
        ),
        {1: [], 2: []},
        0,
        NOW,
    )
    assert groups_of(result) == {
        (1, "treatment"): (80, 20, 0.25),
        (1, "holdout"): (20, 3, 0.15),
        (2, "treatment"): (20, 10, 0.5),
        (2, "holdout"): (0, 0, 0.0),  # nobody enrolled: rate 0, not a division by zero
        (0, "treatment"): (100, 30, 0.3),
        (0, "holdout"): (20, 3, 0.15),
    }
    assert result.lift == pytest.approx(0.3 - 0.15)


def test_one_version_shows_only_its_rows_and_its_own_lift() -> None:
    result = stats.build(
        "j",
        counters(
            step__1__a__treatment__entered=5,
            step__2__a__treatment__entered=7,
            group__1__treatment__enrolled=10,
            group__1__treatment__goal=5,
            group__1__holdout__enrolled=10,
            group__1__holdout__goal=1,
            group__2__treatment__enrolled=10,
        ),
        {1: ["a"], 2: ["a"]},
        2,
        NOW,
    )
    assert [(s.version, s.entered) for s in result.steps] == [(2, 7)]
    assert set(groups_of(result)) == {(2, "treatment"), (2, "holdout")}
    assert result.lift == 0.0  # v2 has no holdout enrollment


def test_lift_is_zero_without_a_holdout_and_without_any_enrollment() -> None:
    assert stats.build("j", stats.Counters(), {1: ["a"]}, 0, NOW).lift == 0.0
    only_treatment = counters(group__1__treatment__enrolled=50, group__1__treatment__goal=10)
    assert stats.build("j", only_treatment, {1: []}, 0, NOW).lift == 0.0


def test_goal_rate_of_an_empty_group_is_zero() -> None:
    assert stats.goal_rate(0, 0) == 0.0
    assert stats.goal_rate(3, 4) == 0.75


def test_the_step_order_of_a_source_that_no_longer_parses_is_left_to_the_counters() -> None:
    broken = journey_pb2.JourneyDefinition(version=3, source="id: [not, a, journey")
    assert stats.step_order([broken]) == {3: []}


# --- the lift the CLI prints ---------------------------------------------------------------------


def test_lift_with_enough_data_has_a_95_percent_interval_around_it() -> None:
    estimate = lift_estimate((120, 1000), (80, 1000))
    assert estimate.lift == pytest.approx(0.04)
    # standard error: sqrt(.12*.88/1000 + .08*.92/1000) = 0.0133866...
    assert estimate.low == pytest.approx(0.04 - 1.959964 * 0.0133866, abs=1e-6)
    assert estimate.high == pytest.approx(0.04 + 1.959964 * 0.0133866, abs=1e-6)
    line = describe_lift(estimate)
    assert line.startswith("lift: +4.0 pts (95% CI +1.4 pts to +6.6 pts)")
    assert "treatment 120/1000 converted, holdout 80/1000" in line


def test_an_interval_that_spans_zero_is_called_indistinguishable_from_zero() -> None:
    line = describe_lift(lift_estimate((30, 200), (25, 200)))
    assert "not distinguishable from 0" in line


@pytest.mark.parametrize(
    ("treatment", "holdout", "why"),
    [
        ((3, 20), (0, 2), "expected conversions"),  # tiny groups
        ((2, 1000), (0, 100), "expected conversions"),  # a rare goal: ~0.2 expected in holdout
        ((998, 1000), (99, 100), "non-conversions"),  # nearly everyone converts
        ((10, 100), (0, 0), "no holdout enrollments"),
        ((0, 0), (5, 100), "no treatment enrollments"),
        ((0, 0), (0, 0), "no holdout enrollments"),
    ],
)
def test_too_little_data_says_so_instead_of_printing_a_number(
    treatment: tuple[int, int], holdout: tuple[int, int], why: str
) -> None:
    estimate = lift_estimate(treatment, holdout)
    assert estimate.lift is None
    line = describe_lift(estimate)
    assert line.startswith("lift: not enough data (")
    assert why in line
    assert f"treatment {treatment[0]}/{treatment[1]}" in line
    assert "pts" not in line


# --- what the stream hook sends to its script -------------------------------------------------


def journey_event(
    event_id: str,
    transition: journey_pb2.JourneyTransition.ValueType,
    *,
    seconds: int = 100,
    journey_id: str = "j",
    version: int = 1,
    step: str = "a",
    group: journey_pb2.EnrollmentGroup.ValueType = TREATMENT,
) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(
        event_id=event_id,
        customer_id="c",
        name="journey.x",
        kind=touchpoint_pb2.TOUCHPOINT_KIND_JOURNEY,
        journey=journey_pb2.JourneyEvent(
            journey_id=journey_id,
            version=version,
            step_id=step,
            workflow_id="journey:j:c",
            transition=transition,
            group=group,
        ),
    )
    tp.occurred_at.seconds = seconds
    return tp


def test_only_journey_touchpoints_are_counted_in_workflow_time_order() -> None:
    step = journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED
    later_redelivered = journey_event("dup-late", step, seconds=300, step="c")
    early_redelivered = journey_event("dup-early", step, seconds=100, step="a")
    new = journey_event("new", step, seconds=200, step="b")
    other = touchpoint_pb2.Touchpoint(event_id="order", name="order.completed")
    batch = AppliedBatch(applied=[new, other], duplicates=[later_redelivered, early_redelivered])
    assert [tp.event_id for tp in in_stream_order(batch)] == ["dup-early", "new", "dup-late"]


def test_ties_in_workflow_time_keep_duplicates_before_new_events() -> None:
    entered = journey_event("e", journey_pb2.JOURNEY_TRANSITION_ENTERED, step="")
    first_step = journey_event("s", journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED)
    batch = AppliedBatch(applied=[first_step], duplicates=[entered])
    assert [tp.event_id for tp in in_stream_order(batch)] == ["e", "s"]


def test_script_arguments_per_journey_and_malformed_events_left_out() -> None:
    events = [
        journey_event("1", journey_pb2.JOURNEY_TRANSITION_ENTERED, step=""),
        journey_event("2", journey_pb2.JOURNEY_TRANSITION_GOAL_REACHED, group=HOLDOUT),
        journey_event("3", journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED, journey_id="k"),
        journey_event("4", journey_pb2.JOURNEY_TRANSITION_UNSPECIFIED),
        journey_event("5", journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED, version=0),
        journey_event("6", journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED, step=""),
        journey_event("7", journey_pb2.JOURNEY_TRANSITION_EXITED, step="a|b"),
    ]
    assert journey_args(events) == {
        "j": [
            *("1", "entered", "1", "", "journey:j:c", "treatment"),
            *("2", "goal_reached", "1", "a", "journey:j:c", "holdout"),
        ],
        "k": ["3", "step_entered", "1", "a", "journey:j:c", "treatment"],
    }
