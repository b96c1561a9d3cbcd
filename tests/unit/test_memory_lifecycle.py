"""Lifecycle phase thresholds and engagement density, computed on read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from enishi.memory import lifecycle, model
from enishi.v1 import customer_pb2

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RULES = lifecycle.LifecycleRules(lapsing_after=timedelta(days=60), lapsed_after=timedelta(days=180))


def _facts(*, last_days_ago: float, orders: int = 0) -> lifecycle.PhaseFacts:
    last = model.datetime_ms(NOW - timedelta(days=last_days_ago))
    second = model.datetime_ms(NOW - timedelta(days=300)) if orders >= 2 else None
    return lifecycle.PhaseFacts(
        created_ms=model.datetime_ms(NOW - timedelta(days=400)),
        last_activity_ms=last,
        orders_count=orders,
        second_order_ms=second,
    )


@pytest.mark.parametrize(
    ("last_days_ago", "orders", "expected"),
    [
        (1, 0, customer_pb2.LIFECYCLE_PHASE_NEW),
        (1, 1, customer_pb2.LIFECYCLE_PHASE_NEW),
        (59.9, 2, customer_pb2.LIFECYCLE_PHASE_ACTIVE),
        (60, 2, customer_pb2.LIFECYCLE_PHASE_LAPSING),
        (179.9, 5, customer_pb2.LIFECYCLE_PHASE_LAPSING),
        (180, 5, customer_pb2.LIFECYCLE_PHASE_LAPSED),
        (200, 0, customer_pb2.LIFECYCLE_PHASE_LAPSED),
    ],
)
def test_phase_follows_the_configured_thresholds(
    last_days_ago: float, orders: int, expected: int
) -> None:
    result = lifecycle.phase(_facts(last_days_ago=last_days_ago, orders=orders), RULES, NOW)
    assert result.phase == expected


def test_a_lapsing_customer_became_lapsing_when_the_threshold_passed() -> None:
    facts = _facts(last_days_ago=70, orders=2)
    result = lifecycle.phase(facts, RULES, NOW)
    assert facts.last_activity_ms is not None
    assert result.changed_ms == facts.last_activity_ms + 60 * 86_400_000


def test_thresholds_are_configurable() -> None:
    strict = lifecycle.LifecycleRules(
        lapsing_after=timedelta(days=7), lapsed_after=timedelta(days=14)
    )
    assert lifecycle.phase(_facts(last_days_ago=8, orders=3), strict, NOW).phase == (
        customer_pb2.LIFECYCLE_PHASE_LAPSING
    )


def test_lapsing_must_come_before_lapsed() -> None:
    with pytest.raises(ValueError, match="lapsing_after"):
        lifecycle.LifecycleRules(lapsing_after=timedelta(days=90), lapsed_after=timedelta(days=30))


def test_a_customer_never_seen_has_no_phase() -> None:
    facts = lifecycle.PhaseFacts(None, None, 0, None)
    assert lifecycle.phase(facts, RULES, NOW).phase == customer_pb2.LIFECYCLE_PHASE_UNSPECIFIED


def test_density_counts_only_the_last_30_days() -> None:
    today = model.day(model.datetime_ms(NOW))
    weights = {today: 2.0, today - 29: 1.0, today - 30: 100.0}
    assert lifecycle.engagement_density(weights, NOW) == 3.0
