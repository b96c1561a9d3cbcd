"""GetJourneyStats: the stream processor's journey counters, read back as `JourneyStats`.

The counters (`keys.journey_stats(journey_id, keys.STATS_COUNTS)`) are written by
services/stream/journey_stats.py; what each number means is in docs/registry.md "Stats".
Rows follow the definitions: every version, every step in definition order (zeros included),
so a funnel shows the steps nobody reached too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import redis.asyncio as aioredis

from enishi import keys
from enishi.journeys import JourneyInvalid, parse_journey
from enishi.v1 import journey_pb2

GROUPS: Final = {
    "treatment": journey_pb2.ENROLLMENT_GROUP_TREATMENT,
    "holdout": journey_pb2.ENROLLMENT_GROUP_HOLDOUT,
}
ALL_VERSIONS: Final = 0

Raw = Mapping[bytes | str, bytes | str]


@dataclass
class Counters:
    """The counts hash of one journey, decoded (both groups summed for steps)."""

    steps: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)
    groups: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: Raw) -> Counters:
        """Fields of an unknown shape are ignored (a newer writer may add some)."""
        steps: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        groups: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for name, value in raw.items():
            parts = _text(name).split("|")
            try:
                count = int(_text(value))
                if parts[0] == "step" and len(parts) == 5:
                    steps[(int(parts[1]), parts[2])][parts[4]] += count
                elif parts[0] == "group" and len(parts) == 4 and parts[2] in GROUPS:
                    groups[(int(parts[1]), parts[2])][parts[3]] += count
            except ValueError:
                continue
        return cls(dict(steps), dict(groups))


async def read_counters(redis: aioredis.Redis, journey_id: str) -> Counters:
    """One HGETALL: the counters are one hash per journey."""
    raw = await redis.hgetall(keys.journey_stats(journey_id, keys.STATS_COUNTS))
    return Counters.decode(raw)


def step_order(definitions: Iterable[journey_pb2.JourneyDefinition]) -> dict[int, list[str]]:
    """Version -> step ids in definition order (empty for a source that no longer parses)."""
    order: dict[int, list[str]] = {}
    for definition in definitions:
        try:
            order[definition.version] = [s.id for s in parse_journey(definition.source).steps]
        except JourneyInvalid:
            order[definition.version] = []  # the counters still name its steps
    return order


def goal_rate(goal_reached: int, enrolled: int) -> float:
    """goal_reached / enrolled; 0 when nobody enrolled."""
    return goal_reached / enrolled if enrolled > 0 else 0.0


def lift(treatment: journey_pb2.GroupStats, holdout: journey_pb2.GroupStats) -> float:
    """Treatment goal rate minus holdout goal rate; 0 when either group has no enrollment."""
    if treatment.enrolled <= 0 or holdout.enrolled <= 0:
        return 0.0
    return treatment.goal_rate - holdout.goal_rate


def build(
    journey_id: str,
    counters: Counters,
    steps: Mapping[int, Sequence[str]],
    version: int,
    computed_at: datetime,
) -> journey_pb2.JourneyStats:
    """The response: `version` 0 for every version (plus the all-versions group rows)."""
    versions = sorted(set(steps) | {v for v, _ in counters.steps} | {v for v, _ in counters.groups})
    if version != ALL_VERSIONS:
        versions = [version]
    stats = journey_pb2.JourneyStats(journey_id=journey_id)
    stats.computed_at.FromDatetime(computed_at)
    for v in versions:
        known = list(steps.get(v, ()))
        extra = sorted(s for w, s in counters.steps if w == v and s not in known)
        for step_id in known + extra:
            stats.steps.append(_step_stats(v, step_id, counters.steps.get((v, step_id), {})))
    totals: dict[str, journey_pb2.GroupStats] = {}
    for v in versions:
        for name, group in GROUPS.items():
            row = _group_stats(v, group, counters.groups.get((v, name), {}))
            stats.groups.append(row)
            total = totals.setdefault(name, journey_pb2.GroupStats(group=group))
            total.enrolled += row.enrolled
            total.goal_reached += row.goal_reached
    for total in totals.values():
        total.goal_rate = goal_rate(total.goal_reached, total.enrolled)
    if version == ALL_VERSIONS:
        stats.groups.extend(totals.values())
    if totals:
        stats.lift = lift(totals["treatment"], totals["holdout"])
    return stats


def _step_stats(version: int, step_id: str, counts: Mapping[str, int]) -> journey_pb2.StepStats:
    entered, completed = counts.get("entered", 0), counts.get("completed", 0)
    goal = counts.get("goal", 0)
    # Leaving the journey at a step: an exit event, a cancel (pause/archive), a migration away.
    exited = counts.get("exited", 0) + counts.get("cancelled", 0) + counts.get("migrated", 0)
    return journey_pb2.StepStats(
        version=version,
        step_id=step_id,
        entered=entered,
        completed=completed,
        exited=exited,
        goal_reached=goal,
        # Every entry leaves exactly once, so what has not left is still there. Clamped: an
        # end whose entry fell outside the counting (older than the stats) must not go below 0.
        waiting=max(entered - completed - exited - goal, 0),
    )


def _group_stats(
    version: int, group: journey_pb2.EnrollmentGroup.ValueType, counts: Mapping[str, int]
) -> journey_pb2.GroupStats:
    enrolled, goal = counts.get("enrolled", 0), counts.get("goal", 0)
    return journey_pb2.GroupStats(
        version=version,
        group=group,
        enrolled=enrolled,
        goal_reached=goal,
        goal_rate=goal_rate(goal, enrolled),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
