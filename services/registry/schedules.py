"""Temporal Schedules of journeys whose trigger fires by time: create, update, pause, delete.

One Schedule per journey, `contract.schedule_id(journey_id)`, starting
`JourneyAudienceWorkflow` (workflows/audience.py) on the journey worker's task queue. What it
fires on comes from the live version's trigger (`spec_for`):

- `schedule: {cron, timezone}`: the cron line in `timezone` (default `timezone_fallback`);
- `schedule: {at_local, weekdays}`: every quarter hour on the grid holding `at_local`; each
  run enrolls the customers whose local `at_local` fell in its window
  (`enishi.journeys.schedules`);
- `condition`: every `sweep_every` (`ENISHI_JOURNEY_CONDITION_SWEEP_MINUTES`), a sweep that
  re-evaluates the condition over every customer, for conditions that turn true with the
  passing of time alone (a phase turning `lapsing`): the stream processor sees only changes
  that come with an event.

Policies: one run per journey at a time. An `at_local` run due while the previous one still
runs waits for it (`BUFFER_ONE`: its quarter hour's customers are late, not lost); a `cron`
run or a sweep due meanwhile is skipped. A paused Schedule takes no actions and unpausing
does not make up the ones it skipped, so resuming never floods customers; after a Temporal
outage a run is still taken if it is at most `CATCHUP_WINDOW` late.
The registry keeps the Schedule in step with the journey's status (docs/registry.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from enishi.journeys import Journey, schedules
from enishi.journeys.model import ConditionTrigger, ScheduleTrigger
from services.registry.enrollments import RPC_TIMEOUT, temporal_errors
from workflows import contract

CATCHUP_WINDOW: Final = timedelta(minutes=10)
"""A run missed while Temporal was unavailable is still taken this late, never later."""
DEFAULT_SWEEP: Final = timedelta(hours=1)

log = structlog.get_logger(__name__)


def fires_by_time(journey: Journey) -> bool:
    """Whether the journey's trigger needs a Schedule (a schedule, or a condition's sweep)."""
    return isinstance(journey.trigger, ScheduleTrigger | ConditionTrigger)


def spec_for(journey: Journey, sweep_every: timedelta = DEFAULT_SWEEP) -> ScheduleSpec | None:
    """When the journey's Schedule fires; None when its trigger does not fire by time."""
    trigger = journey.trigger
    if isinstance(trigger, ConditionTrigger):
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=sweep_every)])
    if isinstance(trigger, ScheduleTrigger):
        when = trigger.schedule
        if when.cron is not None:
            return ScheduleSpec(
                cron_expressions=[when.cron],
                time_zone_name=when.timezone or journey.timezone_fallback,
            )
        assert when.at_local is not None  # the model allows exactly one of cron, at_local
        return ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(
                    every=schedules.GRID, offset=schedules.grid_offset(when.at_local)
                )
            ]
        )
    return None


def overlap_for(journey: Journey) -> ScheduleOverlapPolicy:
    """A quarter-hour run covers its own customers: buffer it; other runs: skip."""
    trigger = journey.trigger
    if isinstance(trigger, ScheduleTrigger) and trigger.schedule.at_local is not None:
        return ScheduleOverlapPolicy.BUFFER_ONE
    return ScheduleOverlapPolicy.SKIP


class JourneySchedules:
    """The registry's hand on Temporal Schedules (one client; calls map to UNAVAILABLE)."""

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = contract.TASK_QUEUE,
        sweep_every: timedelta = DEFAULT_SWEEP,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._sweep_every = sweep_every

    def schedule(self, journey: Journey, version: int) -> Schedule | None:
        """The journey's Schedule, unpaused; None when its trigger does not fire by time."""
        spec = spec_for(journey, self._sweep_every)
        if spec is None:
            return None
        return Schedule(
            action=ScheduleActionStartWorkflow(
                contract.AUDIENCE_WORKFLOW,
                contract.AudienceRun(journey_id=journey.id),
                id=contract.audience_workflow_id(journey.id),
                task_queue=self._task_queue,
            ),
            spec=spec,
            policy=SchedulePolicy(overlap=overlap_for(journey), catchup_window=CATCHUP_WINDOW),
            state=ScheduleState(note=f"journey {journey.id} version {version}", paused=False),
        )

    async def activate(self, journey: Journey, version: int) -> None:
        """Create or replace the journey's Schedule (unpaused), or delete it if none is needed.

        Replacing also unpauses: activating or resuming a journey is when it fires again.
        """
        wanted = self.schedule(journey, version)
        if wanted is None:
            await self.delete(journey.id)
            return
        schedule_id = contract.schedule_id(journey.id)
        async with temporal_errors("setting the journey's schedule"):
            try:
                await self._client.create_schedule(schedule_id, wanted, rpc_timeout=RPC_TIMEOUT)
                log.info("registry.schedule_created", journey_id=journey.id, version=version)
                return
            except ScheduleAlreadyRunningError:
                pass

            def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=wanted)

            handle = self._client.get_schedule_handle(schedule_id)
            await handle.update(replace, rpc_timeout=RPC_TIMEOUT)
        log.info("registry.schedule_updated", journey_id=journey.id, version=version)

    async def pause(self, journey_id: str, note: str) -> None:
        """Pause the journey's Schedule (no runs until activated or resumed); none: nothing."""
        handle = self._client.get_schedule_handle(contract.schedule_id(journey_id))
        async with temporal_errors("pausing the journey's schedule"):
            try:
                await handle.pause(note=note or "paused", rpc_timeout=RPC_TIMEOUT)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                return
        log.info("registry.schedule_paused", journey_id=journey_id)

    async def delete(self, journey_id: str) -> None:
        """Delete the journey's Schedule if there is one (its running run, if any, goes on)."""
        handle = self._client.get_schedule_handle(contract.schedule_id(journey_id))
        async with temporal_errors("deleting the journey's schedule"):
            try:
                await handle.delete(rpc_timeout=RPC_TIMEOUT)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                return
        log.info("registry.schedule_deleted", journey_id=journey_id)
