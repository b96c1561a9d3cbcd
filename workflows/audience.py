"""JourneyAudienceWorkflow: one run of a journey's Temporal Schedule over its audience.

The registry's Schedule (`contract.schedule_id`, services/registry/schedules.py) starts it;
it calls `enroll_audience_page` (workflows/activities/audience.py) page after page until the
scan of customer memory is done, and continues as new when its history grows, carrying the
cursor. Deterministic code only: the run's time is the schedule's `TemporalScheduledStartTime`
(else when it started), fixed at the first run and carried on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from workflows.activities.audience import AudienceActivities, AudiencePage
    from workflows.contract import AudienceRun, AudienceTotals

SCHEDULED_START: Final = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
"""Set by Temporal on every workflow a Schedule starts: the action's scheduled time."""

PAGE_TIMEOUT: Final = timedelta(minutes=5)
PAGES_PER_RUN: Final = 500
"""Continue as new after this many pages (a few thousand history events)."""
RETRY: Final = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)


@workflow.defn(name="JourneyAudienceWorkflow")
class AudienceWorkflow:
    """Enrolls the due customers of one scheduled run, a page of the scan at a time."""

    @workflow.run
    async def run(self, run: AudienceRun) -> AudienceTotals:
        scheduled_at = run.scheduled_at or self._scheduled_at()
        cursor, totals = run.cursor, run.totals
        for _ in range(PAGES_PER_RUN):
            if workflow.info().is_continue_as_new_suggested():
                break
            result = await workflow.execute_activity_method(
                AudienceActivities.enroll_page,
                AudiencePage(run.journey_id, scheduled_at, cursor),
                start_to_close_timeout=PAGE_TIMEOUT,
                retry_policy=RETRY,
            )
            totals += result.totals
            if result.done:
                return totals
            cursor = result.cursor
        # Not done, so the cursor is not 0: the next run goes on from it.
        return workflow.continue_as_new(
            AudienceRun(
                journey_id=run.journey_id, scheduled_at=scheduled_at, cursor=cursor, totals=totals
            )
        )

    @staticmethod
    def _scheduled_at() -> str:
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        return (scheduled or workflow.now()).isoformat()
