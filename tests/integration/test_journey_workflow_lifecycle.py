"""JourneyWorkflow over long lives: continue-as-new, migration between versions, cancellation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.integration.journey_support import (
    Fakes,
    at,
    enroll,
    journey_source,
    send,
    worker,
)
from workflows import contract
from workflows.contract import MigrateSignal

pytestmark = pytest.mark.timeout(120)


async def test_continue_as_new_keeps_position_waits_and_dedupe(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            send("s1"),
            {"id": "w1", "wait": {"for": "1d"}},
            send("s2"),
            {"id": "w2", "wait": {"for": "1d"}},
            send("s3"),
        ],
        goal={"event": "order.completed"},
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue, max_steps_per_run=2)
        first_run = enrolled.handle.result_run_id
        await enrolled.at_step("w1")
        # A redelivered trigger after continue-as-new is still known: no goal, no restart.
        await enrolled.signal(enrolled.trigger)
        outcome = await enrolled.result()
        steps = await enrolled.steps()
        history = await env.client.get_workflow_handle(
            enrolled.handle.id, run_id=first_run
        ).fetch_history()
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert outcome.status == "completed"
    assert [s.step_id for s in fakes.sends] == ["s1", "s2", "s3"]
    assert len({s.dispatch_id for s in fakes.sends}) == 3
    s1, s2, s3 = fakes.sends
    # The wait resumed with its own wake-up time: not restarted by the new run.
    assert timedelta(days=1) <= at(s2.now) - at(s1.now) < timedelta(days=1, minutes=1)
    assert [(s.step_id, s.outcome) for s in steps] == [
        ("s1", "sent:email"),
        ("w1", "waited"),
        ("s2", "sent:email"),
        ("w2", "waited"),
        ("s3", "sent:email"),
    ]
    # Step-entered journal entries are not repeated by the runs that resume a wait.
    assert fakes.transitions().count("step_entered:w1") == 1


MIGRATION_V1 = journey_source(
    [send("a1"), {"id": "w", "wait": {"for": "10d"}}, send("a2")], templates=("t",)
)
MIGRATION_V2 = journey_source(
    [
        send("b1"),
        {"id": "w_new", "wait": {"for": "5d"}},
        send("b2"),
        {"id": "done", "exit": {"reason": "v2"}},
    ]
)


async def test_migrate_moves_a_waiting_enrollment_to_the_new_version(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = MIGRATION_V1
    fakes.definitions[("test-journey", 2)] = MIGRATION_V2
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("w")
        await enrolled.handle.signal(
            contract.SIGNAL_MIGRATE, MigrateSignal(to_version=2, step_map={"w": "w_new"})
        )
        outcome = await enrolled.result()
        steps = await enrolled.steps()
    assert outcome == contract.JourneyOutcome("completed", "v2", "done")
    assert [(s.step_id, s.version) for s in fakes.sends] == [("a1", 1), ("b2", 2)]
    # Landing on a wait keeps the old wake-up time (10 days), it does not start 5 more.
    a1, b2 = fakes.sends
    assert timedelta(days=10) <= at(b2.now) - at(a1.now) < timedelta(days=10, minutes=1)
    assert ("w", "migrated:v1->v2:w_new") in [(s.step_id, s.outcome) for s in steps]
    migrated = [e for e in fakes.journal if e.transition == "migrated"]
    assert [(e.step_id, e.version, e.detail) for e in migrated] == [("w_new", 2, "from version 1")]


async def test_migrate_without_a_mapping_keeps_the_old_version(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = MIGRATION_V1
    fakes.definitions[("test-journey", 2)] = MIGRATION_V2
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("w")
        await enrolled.handle.signal(
            contract.SIGNAL_MIGRATE, MigrateSignal(to_version=2, step_map={"other": "w_new"})
        )
        await enrolled.result()
        steps = await enrolled.steps()
    assert [(s.step_id, s.version) for s in fakes.sends] == [("a1", 1), ("a2", 1)]
    assert steps[1].outcome == "migrate:blocked:no mapping to v2"


async def test_a_temporal_cancel_still_clears_the_enrollment(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = MIGRATION_V1
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("w")
        await enrolled.handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await enrolled.result()
    assert [e.status for e in fakes.ends] == ["cancelled"]
    assert fakes.transitions()[-1] == "cancelled:w"
