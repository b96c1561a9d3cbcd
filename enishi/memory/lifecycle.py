"""Lifecycle phase and engagement density, computed on read from the stored counters.

Computing on read keeps the phase right as time passes with no event at all (a customer
lapses by staying quiet), and needs no timer per customer. Rules (docs/keys.md):

- LAPSED when the last activity (event or order) is `lapsed_after` old or older;
- LAPSING when it is `lapsing_after` old or older;
- ACTIVE with two orders or more (the second purchase is where a habit starts);
- NEW otherwise (first seen, maybe one order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from enishi.memory import model
from enishi.v1 import customer_pb2

Phase = customer_pb2.LifecyclePhase

ACTIVE_MIN_ORDERS = 2


@dataclass(frozen=True)
class LifecycleRules:
    """Thresholds of the lifecycle phases (configurable per deployment)."""

    lapsing_after: timedelta = timedelta(days=60)
    lapsed_after: timedelta = timedelta(days=180)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.lapsing_after < self.lapsed_after:
            raise ValueError("lapsing_after: must be positive and shorter than lapsed_after")


@dataclass(frozen=True)
class PhaseFacts:
    """What the phase depends on (times in ms since the epoch, None when unknown)."""

    created_ms: int | None
    last_activity_ms: int | None
    orders_count: int
    second_order_ms: int | None


@dataclass(frozen=True)
class PhaseResult:
    """A phase and when the customer entered it (None when unknown)."""

    phase: int
    changed_ms: int | None


def phase(facts: PhaseFacts, rules: LifecycleRules, now: datetime) -> PhaseResult:
    """The customer's phase at `now`."""
    last = facts.last_activity_ms if facts.last_activity_ms is not None else facts.created_ms
    if last is None:
        return PhaseResult(Phase.LIFECYCLE_PHASE_UNSPECIFIED, None)
    quiet_ms = model.datetime_ms(now) - last
    lapsed_ms = _ms(rules.lapsed_after)
    lapsing_ms = _ms(rules.lapsing_after)
    if quiet_ms >= lapsed_ms:
        return PhaseResult(Phase.LIFECYCLE_PHASE_LAPSED, last + lapsed_ms)
    if quiet_ms >= lapsing_ms:
        return PhaseResult(Phase.LIFECYCLE_PHASE_LAPSING, last + lapsing_ms)
    if facts.orders_count >= ACTIVE_MIN_ORDERS:
        # Approximate after a lapse and return: the memory keeps when the habit started.
        return PhaseResult(Phase.LIFECYCLE_PHASE_ACTIVE, facts.second_order_ms)
    return PhaseResult(Phase.LIFECYCLE_PHASE_NEW, facts.created_ms)


def engagement_density(daily_weights: Mapping[int, float], now: datetime) -> float:
    """Weighted touchpoints over the last DENSITY_WINDOW_DAYS days (today included)."""
    since = model.day(model.datetime_ms(now)) - model.DENSITY_WINDOW_DAYS + 1
    return float(sum(weight for day, weight in daily_weights.items() if day >= since))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
