"""Recorded JourneyWorkflow histories replay on today's code (style rule 3).

Each history under tests/integration/histories/ was recorded once on the time-skipping server
by the recorder next to it here (run when the file is missing) and committed. A change to
workflows/journey.py that would break a running enrollment fails this test: put such a change
behind `workflow.patched("<id>")` and record a new history next to the old ones (the
`journey-lean-*` files are the `lean-bookkeeping` patch's).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from enishi.temporal import register_search_attributes
from tests.integration.journey_support import (
    Fakes,
    enroll,
    event,
    journey_source,
    send,
    worker,
)
from workflows import contract
from workflows.activities.customer_context import CustomerContext
from workflows.contract import MergeSignal
from workflows.journey import LEAN_BOOKKEEPING, JourneyWorkflow
from workflows.runner import WORKFLOW_RUNNER

pytestmark = pytest.mark.timeout(120)

HISTORIES = Path(__file__).with_name("histories")
CUSTOMER = "c-replay"

ALL_STEPS = journey_source(
    [
        send("thanks"),
        {"id": "wait_use", "wait": {"for": "7d", "at_local": "10:00"}},
        {
            "id": "replied",
            "wait_for": {"event": "message.replied", "timeout": "14d", "on_timeout": "done"},
        },
        {
            "id": "listen",
            "branch": [
                {"if": "event.props.sentiment == 'negative'", "then": "flag"},
                {"else": "offer"},
            ],
        },
        {"id": "flag", "update": {"set": {"unhappy": True}, "tag": ["care"]}},
        {
            "id": "offer",
            "split": [
                {"name": "a", "weight": 1, "next": "offer_a"},
                {"name": "b", "weight": 1, "next": "offer_b"},
            ],
        },
        {**send("offer_a"), "next": "done"},
        send("offer_b"),
        {"id": "done", "exit": {"reason": "finished"}},
    ],
    journey_id="replay-journey",
    goal={"event": "order.completed", "within": "30d"},
    exit=[{"event": "account.deleted"}],
)


async def record_all_steps(env: WorkflowEnvironment) -> str:
    """send, wait at local time, wait_for an event, branch, update, split, exit."""
    fakes = Fakes()
    fakes.definitions[("replay-journey", 1)] = ALL_STEPS
    fakes.customers[CUSTOMER] = CustomerContext({"id": CUSTOMER}, time_zone="Asia/Tokyo")
    task_queue = str(uuid.uuid4())
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(
            env.client, task_queue, journey_id="replay-journey", customer_id=CUSTOMER
        )
        await env.sleep(timedelta(days=8))  # past wait_use: time skips only when asked
        await enrolled.at_step("replied")
        await enrolled.signal(event("message.replied", CUSTOMER, sentiment="negative"))
        await enrolled.result()
        history = await enrolled.handle.fetch_history()
    return history.to_json()


async def record_continue_as_new(env: WorkflowEnvironment) -> str:
    """The first run of an enrollment that continues as new at a wait."""
    fakes = Fakes()
    fakes.definitions[("replay-journey", 1)] = ALL_STEPS
    task_queue = str(uuid.uuid4())
    customer = f"{CUSTOMER}-can"
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(
            env.client,
            task_queue,
            journey_id="replay-journey",
            customer_id=customer,
            max_steps_per_run=2,
        )
        first_run = enrolled.handle.result_run_id
        await enrolled.result()
        history = await env.client.get_workflow_handle(
            enrolled.handle.id, run_id=first_run
        ).fetch_history()
    return history.to_json()


async def record_merge_hand_over(env: WorkflowEnvironment) -> str:
    """An anonymous visitor's enrollment handed to the known customer at its wait."""
    fakes = Fakes()
    fakes.definitions[("replay-journey", 1)] = ALL_STEPS
    task_queue = str(uuid.uuid4())
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(
            env.client, task_queue, journey_id="replay-journey", customer_id=f"{CUSTOMER}-anon"
        )
        await enrolled.at_step("wait_use")
        await enrolled.handle.signal(
            JourneyWorkflow.merge, MergeSignal(f"{CUSTOMER}-known", enrollment=1)
        )
        with env.auto_time_skipping_disabled():
            await enrolled.result()
        history = await enrolled.handle.fetch_history()
        known = env.client.get_workflow_handle(
            contract.workflow_id("replay-journey", f"{CUSTOMER}-known")
        )
        await known.terminate("recorded")  # left waiting, it would hold up time skipping
    return history.to_json()


RECORDERS: dict[str, Callable[[WorkflowEnvironment], Awaitable[str]]] = {
    # Recorded before the `lean-bookkeeping` patch: normal bookkeeping activities.
    "journey-all-steps.json": record_all_steps,
    "journey-continue-as-new.json": record_continue_as_new,
    "journey-merge-hand-over.json": record_merge_hand_over,
    # Recorded with it: local bookkeeping activities, one upsert per workflow task.
    "journey-lean-all-steps.json": record_all_steps,
    "journey-lean-continue-as-new.json": record_continue_as_new,
    "journey-lean-merge-hand-over.json": record_merge_hand_over,
}
LEAN = sorted(name for name in RECORDERS if name.startswith("journey-lean-"))
BOOKKEEPING = {"set_awaits", "record_journal", "end_enrollment", "update_traits"}


@pytest.mark.parametrize("name", sorted(RECORDERS))
async def test_recorded_history_replays_without_nondeterminism(
    time_skipping: WorkflowEnvironment, name: str
) -> None:
    path = HISTORIES / name
    if not path.exists():
        await register_search_attributes(time_skipping.client)
        path.parent.mkdir(exist_ok=True)
        path.write_text(await RECORDERS[name](time_skipping))
    history = WorkflowHistory.from_json(f"replay-{name}", path.read_text())
    await Replayer(workflows=[JourneyWorkflow], workflow_runner=WORKFLOW_RUNNER).replay_workflow(
        history
    )


@pytest.mark.parametrize("name", LEAN)
def test_lean_histories_record_the_patch_and_no_bookkeeping_activity_tasks(name: str) -> None:
    history = WorkflowHistory.from_json(name, (HISTORIES / name).read_text())
    markers = [
        e.marker_recorded_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    patches = [m.details["patch-data"] for m in markers if m.marker_name == "core_patch"]
    assert any(LEAN_BOOKKEEPING.encode() in p.payloads[0].data for p in patches)
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert not scheduled & BOOKKEEPING
    assert any(m.marker_name == "core_local_activity" for m in markers)
