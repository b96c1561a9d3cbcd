"""Journey analytics: counts the worker's JOURNEY touchpoints into Redis, once per event.

A `BatchHook` (docs/registry.md "Stats", docs/keys.md "Journey stats"). Per journey, version,
step and group it counts how many enrollments entered a step, moved on from it (`completed`),
left the journey there (exit event, cancel, migration away) or reached the goal there; per
entry version and group, enrollments, conversions and ended enrollments. The registry's
GetJourneyStats reads the counters.

Exactly once per event id: the memory dedupes the batch, but a crash between its writes and
this hook redelivers the events as `duplicates`, so the hook counts both lists and dedupes on
its own, in the same Lua script that counts (`ZADD NX` into a bounded per-journey seen set).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from redis.asyncio import Redis

from enishi import keys
from enishi.v1 import journey_pb2, touchpoint_pb2
from services.stream.hooks import AppliedBatch

log = structlog.get_logger(__name__)

DEDUPE_SECONDS: Final = 24 * 3600
"""Event ids stay in a journey's seen set at least this long after they were counted..."""
DEDUPE_MAX: Final = 250_000
"""...unless the journey counted more than this many newer ones (memory bound, ~25 MB)."""
ARGS_PER_EVENT: Final = 6

TRANSITIONS: Final = {
    journey_pb2.JOURNEY_TRANSITION_ENTERED: "entered",
    journey_pb2.JOURNEY_TRANSITION_STEP_ENTERED: "step_entered",
    journey_pb2.JOURNEY_TRANSITION_COMPLETED: "completed",
    journey_pb2.JOURNEY_TRANSITION_EXITED: "exited",
    journey_pb2.JOURNEY_TRANSITION_GOAL_REACHED: "goal_reached",
    journey_pb2.JOURNEY_TRANSITION_MIGRATED: "migrated",
    journey_pb2.JOURNEY_TRANSITION_CANCELLED: "cancelled",
}
TREATMENT, HOLDOUT = keys.STATS_GROUPS

# KEYS: keys.journey_stats_keys (seen, counts, at). ARGV: now_ms, dedupe_ms, dedupe_max, then
# per event, in stream order: event_id, transition, version, step_id, workflow_id, group.
#
# Which step an enrollment is at lives in `at` (workflow id -> "<entry version>|<group>|
# <version>|<step>"), because the journal has no "step completed" fact: entering the next step
# completes the previous one, and `journey.migrated` names only where the enrollment lands,
# not the step it left. Ends (completed, exited, cancelled, goal_reached) carry their own step,
# so they do not depend on `at`. Group outcomes count under the version the enrollment entered
# with, so a migrated enrollment's conversion stays with its cohort.
_COUNT = """
local seen, counts, at = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local counted = 0
local function incr(field) redis.call('HINCRBY', counts, field, 1) end
local function step_field(version, step, group, counter)
  return 'step|' .. version .. '|' .. step .. '|' .. group .. '|' .. counter
end
local function group_field(version, group, counter)
  return 'group|' .. version .. '|' .. group .. '|' .. counter
end
for i = 4, #ARGV, 6 do
  local id, transition, version = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local step, workflow, group = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  if redis.call('ZADD', seen, 'NX', now, id) == 1 then
    counted = counted + 1
    local entry, at_group, at_version, at_step = version, group, version, ''
    local raw = redis.call('HGET', at, workflow)
    if raw then
      local e, g, v, s = string.match(raw, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
      if e then entry, at_group, at_version, at_step = e, g, v, s end
    end
    if transition == 'entered' then
      incr(group_field(version, group, 'enrolled'))
      redis.call('HSET', at, workflow, version .. '|' .. group .. '|' .. version .. '|')
    elseif transition == 'step_entered' or transition == 'migrated' then
      if at_step ~= '' then
        local left = transition == 'migrated' and 'migrated' or 'completed'
        incr(step_field(at_version, at_step, at_group, left))
      end
      local now_at = transition == 'migrated' and '' or step
      if transition == 'step_entered' then incr(step_field(version, step, group, 'entered')) end
      redis.call('HSET', at, workflow, entry .. '|' .. group .. '|' .. version .. '|' .. now_at)
    else
      local counter = transition == 'goal_reached' and 'goal' or transition
      if step ~= '' then incr(step_field(version, step, group, counter)) end
      incr(group_field(entry, group, 'ended'))
      if transition == 'goal_reached' then incr(group_field(entry, group, 'goal')) end
      redis.call('HDEL', at, workflow)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYRANK', seen, 0, -(tonumber(ARGV[3]) + 1))
return counted
"""


class JourneyStatsHook:
    """Counts the JOURNEY touchpoints of each batch: one script call per journey, pipelined."""

    def __init__(
        self,
        redis: Redis,
        *,
        dedupe_seconds: int = DEDUPE_SECONDS,
        dedupe_max: int = DEDUPE_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._dedupe_ms = dedupe_seconds * 1000
        self._dedupe_max = dedupe_max
        self._clock = clock
        self._script = redis.register_script(_COUNT)

    async def on_applied(self, batch: AppliedBatch) -> None:
        by_journey = journey_args(in_stream_order(batch))
        if not by_journey:
            return
        header = [int(self._clock() * 1000), self._dedupe_ms, self._dedupe_max]
        async with self._redis.pipeline(transaction=False) as pipe:
            # execute() loads the script first if Redis lacks it (redis-py types the set as
            # sync Scripts; the asyncio pipeline holds AsyncScripts).
            pipe.scripts.add(self._script)  # type: ignore[arg-type]
            for journey_id, args in by_journey.items():
                names = keys.journey_stats_keys(journey_id)
                pipe.evalsha(self._script.sha, len(names), *names, *header, *args)
            counted = await pipe.execute()
        log.debug(
            "journey_stats.counted",
            journeys=len(by_journey),
            events=sum(len(a) for a in by_journey.values()) // ARGS_PER_EVENT,
            counted=sum(int(n) for n in counted),
        )


def in_stream_order(batch: AppliedBatch) -> list[touchpoint_pb2.Touchpoint]:
    """The batch's JOURNEY touchpoints, duplicates and applied, as the workflow wrote them.

    Duplicates come first: they are redeliveries of a batch older than the new events. The
    stable sort by occurred_at (workflow time, which never goes back within one enrollment)
    then repairs what that guess gets wrong, so a step's completion is credited to the step
    the enrollment actually left.
    """
    events = [tp for tp in (*batch.duplicates, *batch.applied) if _is_journey(tp)]
    return sorted(events, key=lambda tp: (tp.occurred_at.seconds, tp.occurred_at.nanos))


def journey_args(touchpoints: Iterable[touchpoint_pb2.Touchpoint]) -> dict[str, list[str]]:
    """Per journey id, the script's per-event arguments in order (malformed events left out)."""
    by_journey: dict[str, list[str]] = {}
    for tp in touchpoints:
        event = tp.journey
        transition = TRANSITIONS.get(event.transition)
        problem = _problem(event, transition)
        if problem is not None:
            # The worker never writes these; a hand-made JOURNEY touchpoint might. Counting it
            # would corrupt the funnel, refusing it would stall the stream: skip and say so.
            log.warning("journey_stats.skipped", event_id=tp.event_id, reason=problem)
            continue
        assert transition is not None
        group = HOLDOUT if event.group == journey_pb2.ENROLLMENT_GROUP_HOLDOUT else TREATMENT
        by_journey.setdefault(event.journey_id, []).extend(
            (
                tp.event_id,
                transition,
                str(event.version),
                event.step_id,
                event.workflow_id,
                group,
            )
        )
    return by_journey


def _is_journey(tp: touchpoint_pb2.Touchpoint) -> bool:
    return tp.kind == touchpoint_pb2.TOUCHPOINT_KIND_JOURNEY and tp.HasField("journey")


def _problem(event: journey_pb2.JourneyEvent, transition: str | None) -> str | None:
    if transition is None:
        return f"journey.transition: unknown ({event.transition})"
    if not event.journey_id or "|" in event.journey_id:
        return "journey.journey_id: missing or not a journey id"
    if event.version <= 0:
        return f"journey.version: must be >= 1, got {event.version}"
    if not event.workflow_id:
        return "journey.workflow_id: missing"
    if "|" in event.step_id:
        return "journey.step_id: not a step id"
    if transition == "step_entered" and not event.step_id:
        return "journey.step_id: missing for step_entered"
    return None
