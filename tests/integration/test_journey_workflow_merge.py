"""JourneyWorkflow and identity merges: an anonymous visitor's enrollment follows them.

The `merge` signal (sent by the stream processor on a MERGE touchpoint, docs/stream.md) hands
the running enrollment to the known customer's workflow, `journey:{journey}:{known}`, which
takes up the same wait with the same wake-up time. Time-skipping server, recording fakes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from tests.integration.journey_support import (
    Fakes,
    at,
    enroll,
    event,
    journey_source,
    send,
    worker,
)
from workflows import contract
from workflows.activities.enrollment import EnrollmentEnd
from workflows.contract import JourneyOutcome, MergeSignal
from workflows.journey import JourneyWorkflow

pytestmark = pytest.mark.timeout(120)

JOURNEY = journey_source(
    [send("hello"), {"id": "wait", "wait": {"for": "7d"}}, send("later")],
    goal={"event": "order.completed"},
)


def _ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"c_anon{suffix}", f"known-{suffix}"


async def _exists(client: Client, customer_id: str) -> bool:
    handle = client.get_workflow_handle(contract.workflow_id("test-journey", customer_id))
    try:
        await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_merged_visitors_wait_ends_for_the_known_customer_at_its_own_deadline(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    anon_id, known_id = _ids()
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = JOURNEY
    async with worker(env.client, fakes, task_queue):
        anon = await enroll(env.client, task_queue, customer_id=anon_id)
        await anon.at_step("wait")
        await env.sleep(timedelta(days=3))  # three of the seven days have passed
        await anon.handle.signal(JourneyWorkflow.merge, MergeSignal(known_id, enrollment=4))
        with env.auto_time_skipping_disabled():  # no skipping into the known run's wait
            handed = await anon.result()
        known = env.client.get_workflow_handle(
            contract.workflow_id("test-journey", known_id), result_type=JourneyOutcome
        )
        assert await known.query(JourneyWorkflow.current_step) == "wait"
        # Not started by this client, so its result() would not skip time: sleep past it.
        await env.sleep(timedelta(days=5))
        finished = await known.result()
        steps = await known.query(JourneyWorkflow.steps_taken)

    assert handed == JourneyOutcome("merged", f"into {known_id}", "wait")
    assert finished == JourneyOutcome("completed", last_step="later")
    hello, later = fakes.sends
    assert (hello.customer_id, later.customer_id) == (anon_id, known_id)
    # The wait was not restarted: seven days from the first send, not from the merge.
    assert timedelta(days=7) <= at(later.now) - at(hello.now) < timedelta(days=7, minutes=1)
    assert later.workflow_id == contract.workflow_id("test-journey", known_id)
    assert later.dispatch_id == contract.dispatch_id(later.workflow_id, 4, "later", 1)
    assert later.trigger == anon.trigger  # the enrollment's trigger goes with it
    assert [(s.step_id, s.outcome) for s in steps] == [
        ("hello", "sent:email"),
        ("wait", "waited"),
        ("later", "sent:email"),
    ]
    # Each record ends once, the visitor's as merged; the known customer's awaits are written.
    assert [(e.customer_id, e.enrollment, e.status) for e in fakes.ends] == [
        (anon_id, 1, "merged"),
        (known_id, 4, "completed"),
    ]
    assert any(a.customer_id == known_id and a.events == ("order.completed",) for a in fakes.awaits)
    # One enrollment in the journal (and the stats): entered once, its first identity kept.
    assert fakes.transitions() == [
        "entered",
        "step_entered:hello",
        "step_entered:wait",
        "step_entered:later",
        "completed:later",
    ]
    anon_workflow = contract.workflow_id("test-journey", anon_id)
    assert {(e.workflow_id, e.enrollment) for e in fakes.journal_of} == {(anon_workflow, 1)}
    assert {e.customer_id for e in fakes.journal_of} == {anon_id, known_id}


async def test_a_known_customer_in_the_journey_already_keeps_their_own_enrollment(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    anon_id, known_id = _ids()
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = JOURNEY
    async with worker(env.client, fakes, task_queue):
        known = await enroll(env.client, task_queue, customer_id=known_id)
        anon = await enroll(env.client, task_queue, customer_id=anon_id)
        await known.at_step("wait")
        await anon.at_step("wait")
        # The stream processor says "end" here; a hand-over that finds the known customer's
        # workflow running ends the same way, and says so.
        await anon.handle.signal(JourneyWorkflow.merge, MergeSignal(known_id, enrollment=2))
        with env.auto_time_skipping_disabled():  # the known run's wait must not pass meanwhile
            assert (await anon.result()).status == "merged"
        assert (await anon.steps())[-1].outcome == "merged:theirs_kept"
        description = await known.handle.describe()
        assert description.run_id == known.handle.result_run_id
        assert await known.handle.query(JourneyWorkflow.current_step) == "wait"
        # Left waiting without a worker, its timer would hold up time skipping for the
        # session's later tests.
        await known.handle.terminate("test over")
    assert [(e.customer_id, e.status) for e in fakes.ends] == [(anon_id, "merged")]


async def test_a_merge_without_hand_over_only_ends_the_visitors_enrollment(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    anon_id, known_id = _ids()
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = JOURNEY
    async with worker(env.client, fakes, task_queue):
        anon = await enroll(env.client, task_queue, customer_id=anon_id)
        await anon.at_step("wait")
        await anon.handle.signal(JourneyWorkflow.merge, MergeSignal(known_id, hand_over=False))
        assert (await anon.result()).status == "merged"
    assert not await _exists(env.client, known_id)
    assert [s.step_id for s in fakes.sends] == ["hello"]


async def test_a_merge_that_comes_as_the_goal_ends_it_closes_the_known_customers_record(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    anon_id, known_id = _ids()
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = JOURNEY
    async with worker(env.client, fakes, task_queue):
        anon = await enroll(env.client, task_queue, customer_id=anon_id)
        await anon.at_step("wait")

        signalled: list[EnrollmentEnd] = []

        async def merged_meanwhile(end: EnrollmentEnd) -> None:
            # The stream processor's merge, a moment too late (once: a local end_enrollment
            # runs again when the signal makes Temporal refuse the workflow's completion).
            if end.customer_id == anon_id and not signalled:
                signalled.append(end)
                await anon.handle.signal(JourneyWorkflow.merge, MergeSignal(known_id, enrollment=3))

        fakes.during_end = merged_meanwhile
        await anon.signal(event("order.completed", anon_id))
        outcome = await anon.result()
    assert outcome.status == "converted"
    assert not await _exists(env.client, known_id)
    # The record the stream processor wrote for the hand-over ends with the enrollment.
    # (end_enrollment is idempotent: the repeated local one for the visitor writes the same.)
    assert list(dict.fromkeys((e.customer_id, e.enrollment, e.status) for e in fakes.ends)) == [
        (anon_id, 1, "converted"),
        (known_id, 3, "converted"),
    ]
