"""JourneyWorkflow on the time-skipping server: every step kind, goals, exits, holdout, sends.

Activities are recording fakes under the real names (tests/integration/journey_support.py);
each test has its own task queue and customer.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import WorkflowEnvironment

from enishi.journeys import parse_journey
from enishi.journeys.model import SplitStep
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
from workflows.activities.customer_context import CustomerContext
from workflows.contract import SendOutcome, SendRequest
from workflows.journey import LEAN_BOOKKEEPING

pytestmark = pytest.mark.timeout(120)


async def test_a_30_day_journey_sends_waits_and_completes_in_seconds(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            send("thanks"),
            {"id": "wait_month", "wait": {"for": "30d"}},
            send("again"),
            {"id": "done", "exit": {"reason": "all_sent"}},
        ]
    )
    started = time.monotonic()
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        outcome = await enrolled.result()
        steps = await enrolled.steps()
    assert time.monotonic() - started < 30
    assert outcome == contract.JourneyOutcome("completed", "all_sent", "done")
    assert [s.step_id for s in fakes.sends] == ["thanks", "again"]
    first, second = fakes.sends
    assert at(second.now) - at(first.now) >= timedelta(days=30)
    workflow_id = contract.workflow_id("test-journey", enrolled.customer_id)
    assert first.dispatch_id == contract.dispatch_id(workflow_id, 1, "thanks", 1)
    assert first.trigger_event_id == enrolled.trigger.event_id
    assert first.designer == "registrar"
    assert [(s.step_id, s.outcome) for s in steps] == [
        ("thanks", "sent:email"),
        ("wait_month", "waited"),
        ("again", "sent:email"),
        ("done", "exit:all_sent"),
    ]
    assert fakes.transitions() == [
        "entered",
        "step_entered:thanks",
        "step_entered:wait_month",
        "step_entered:again",
        "step_entered:done",
        "completed:done",
    ]
    assert [(e.journey_id, e.status, e.enrollment) for e in fakes.ends] == [
        ("test-journey", "completed", 1)
    ]


async def test_the_last_step_completes_the_journey_without_an_exit_step(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source([send("only")])
    async with worker(env.client, fakes, task_queue):
        outcome = await (await enroll(env.client, task_queue)).result()
    assert outcome == contract.JourneyOutcome("completed", "", "only")


async def test_wait_at_local_time_uses_the_customers_time_zone(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {"id": "morning", "wait": {"for": "1d", "at_local": "10:00"}},
            send("hello"),
        ]
    )
    customer = f"c-{uuid.uuid4()}"
    fakes.customers[customer] = CustomerContext({"id": customer}, time_zone="America/New_York")
    async with worker(env.client, fakes, task_queue):
        await (await enroll(env.client, task_queue, customer_id=customer)).result()
    (hello,) = fakes.sends
    local = at(hello.now).astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (10, 0)


async def test_wait_without_a_customer_zone_uses_the_journey_fallback(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [{"id": "morning", "wait": {"at_local": "09:30"}}, send("hello")],
        timezone_fallback="Europe/Paris",
    )
    async with worker(env.client, fakes, task_queue):
        await (await enroll(env.client, task_queue)).result()
    local = at(fakes.sends[0].now).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 30)


async def test_wait_until_a_missing_trait_goes_to_on_missing(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {
                "id": "birthday",
                "wait": {
                    "until_trait": {"trait": "birthday", "yearly": True},
                    "at_local": "09:00",
                    "on_missing": "no_birthday",
                },
            },
            send("greet"),
            {"id": "done", "exit": {}},
            {"id": "no_birthday", "exit": {"reason": "no_birthday"}},
        ]
    )
    async with worker(env.client, fakes, task_queue):
        outcome = await (await enroll(env.client, task_queue)).result()
    assert outcome.reason == "no_birthday"
    assert fakes.sends == []


async def test_wait_until_a_birthday_greets_in_the_local_morning(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {
                "id": "birthday",
                "wait": {"until_trait": {"trait": "birthday", "yearly": True}, "at_local": "09:00"},
            },
            send("greet"),
        ]
    )
    customer = f"c-{uuid.uuid4()}"
    fakes.customers[customer] = CustomerContext(
        {"id": customer, "traits": {"birthday": "1990-02-14"}}, time_zone="Asia/Tokyo"
    )
    async with worker(env.client, fakes, task_queue):
        await (await enroll(env.client, task_queue, customer_id=customer)).result()
    local = at(fakes.sends[0].now).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.month, local.day, local.hour) == (2, 14, 9)


async def test_wait_for_the_event_takes_on_event(env: WorkflowEnvironment, task_queue: str) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {
                "id": "replied",
                "wait_for": {
                    "event": "message.replied",
                    "where": "event.props.text != ''",
                    "timeout": "7d",
                    "on_timeout": "nudge",
                },
            },
            send("thanks"),
            {"id": "done", "exit": {}},
            send("nudge"),
        ]
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("replied")
        await enrolled.signal(event("message.replied", enrolled.customer_id, text=""))
        await enrolled.signal(event("message.replied", enrolled.customer_id, text="great"))
        await enrolled.result()
        steps = await enrolled.steps()
    assert [s.step_id for s in fakes.sends] == ["thanks"]
    assert steps[0].outcome == "event:message.replied"
    # Entering the wait_for adds its event to what the enrollment awaits.
    assert fakes.awaits[0].events == ("message.replied",)


async def test_wait_for_timeout_takes_on_timeout(env: WorkflowEnvironment, task_queue: str) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {
                "id": "replied",
                "wait_for": {"event": "message.replied", "timeout": "14d", "on_timeout": "nudge"},
            },
            send("thanks"),
            {"id": "done", "exit": {}},
            send("nudge"),
        ]
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.result()
        steps = await enrolled.steps()
    assert [s.step_id for s in fakes.sends] == ["nudge"]
    assert at(steps[1].at) - at(steps[0].at) < timedelta(seconds=1)
    assert steps[0].outcome == "timeout"


async def test_a_redelivered_event_is_handled_once(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    wait_for = {"event": "cart.updated", "timeout": "1d", "on_timeout": "missed"}
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {"id": "first", "wait_for": wait_for},
            {"id": "second", "wait_for": wait_for},
            {"id": "done", "exit": {"reason": "both"}},
            {"id": "missed", "exit": {"reason": "missed"}},
        ]
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("first")
        update = event("cart.updated", enrolled.customer_id, event_id="same-id")
        await enrolled.signal(update)
        await enrolled.signal(update)
        outcome = await enrolled.result()
    assert outcome.reason == "missed"


BRANCHES: list[dict[str, Any]] = [
    {
        "id": "listen",
        "wait_for": {"event": "message.replied", "timeout": "7d"},
    },
    {
        "id": "route",
        "branch": [
            {"if": "event.props.sentiment == 'negative'", "then": "support"},
            {"if": "customer.traits.vip == true", "then": "vip"},
            {"else": "plain"},
        ],
    },
    send("support"),
    {"id": "end_support", "exit": {"reason": "support"}},
    send("vip"),
    {"id": "end_vip", "exit": {"reason": "vip"}},
    send("plain"),
]


@pytest.mark.parametrize(
    ("sentiment", "vip", "expected"),
    [("negative", True, "support"), ("positive", True, "vip"), ("positive", False, "plain")],
)
async def test_branch_on_event_props_and_customer_traits(
    env: WorkflowEnvironment, task_queue: str, sentiment: str, vip: bool, expected: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(BRANCHES)
    customer = f"c-{uuid.uuid4()}"
    fakes.customers[customer] = CustomerContext({"id": customer, "traits": {"vip": vip}})
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue, customer_id=customer)
        await enrolled.at_step("listen")
        await enrolled.signal(event("message.replied", customer, sentiment=sentiment))
        await enrolled.result()
    assert [s.step_id for s in fakes.sends] == [expected]


async def test_branch_without_a_waited_event_sees_the_trigger(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [
            {"id": "route", "branch": [{"if": "event.props.amount >= 10000", "then": "big"}]},
            send("small"),
            {"id": "end", "exit": {}},
            send("big"),
        ]
    )
    async with worker(env.client, fakes, task_queue):
        customer = f"c-{uuid.uuid4()}"
        trigger = event("order.completed", customer, amount=12000)
        await (await enroll(env.client, task_queue, customer_id=customer, trigger=trigger)).result()
    assert [s.step_id for s in fakes.sends] == ["big"]
    assert fakes.sends[0].trigger == trigger


async def test_split_is_deterministic_per_customer(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    source = journey_source(
        [
            {
                "id": "offer",
                "split": [
                    {"name": "a", "weight": 1, "next": "send_a"},
                    {"name": "b", "weight": 1, "next": "send_b"},
                ],
            },
            send("send_a"),
            {"id": "end", "exit": {}},
            send("send_b"),
        ]
    )
    split = parse_journey(source).step("offer")
    assert isinstance(split, SplitStep)
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = source
    customers = [f"c-{i}-{uuid.uuid4()}" for i in range(6)]
    async with worker(env.client, fakes, task_queue):
        for customer in customers:
            await (await enroll(env.client, task_queue, customer_id=customer)).result()
        # Re-entry of the first customer: the same arm again.
        await (
            await enroll(env.client, task_queue, customer_id=customers[0], enrollment=2)
        ).result()
    chosen = {s.customer_id: s.step_id for s in fakes.sends}
    for customer in customers:
        assert chosen[customer] == split.choose("test-journey", customer).next
    assert [s.step_id for s in fakes.sends if s.customer_id == customers[0]] == [
        chosen[customers[0]]
    ] * 2
    assert {s.variant for s in fakes.sends} <= {"a", "b"}


async def test_update_step_publishes_traits_and_tags(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [{"id": "flag", "update": {"set": {"vip": True}, "tag": ["care"], "untag": ["happy"]}}]
    )
    customer = f"c-{uuid.uuid4()}"
    fakes.customers[customer] = CustomerContext({"id": customer, "tags": ["happy", "old"]})
    async with worker(env.client, fakes, task_queue):
        await (await enroll(env.client, task_queue, customer_id=customer)).result()
    (update,) = fakes.updates
    assert update.traits == {"vip": True, "tags": ["care", "old"]}
    assert update.key == "update:flag:1"
    assert update.enrollment.customer_id == customer


async def test_holdout_never_sends_and_records_the_skip(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [send("one"), {"id": "pause", "wait": {"for": "2d"}}, send("two")]
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue, holdout=True)
        await enrolled.result()
        steps = await enrolled.steps()
    assert fakes.sends == []
    assert [(s.step_id, s.reason) for s in fakes.skips] == [("one", "holdout"), ("two", "holdout")]
    assert [s.outcome for s in steps] == ["skipped:holdout", "waited", "skipped:holdout"]


async def test_a_deferred_send_sleeps_then_retries_with_the_same_dispatch_id(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    def quiet_first(req: SendRequest) -> SendOutcome:
        if len(fakes.sends) == 1:
            retry_at = at(req.now) + timedelta(hours=9)
            return SendOutcome("deferred", reason="quiet_hours", retry_at=retry_at.isoformat())
        return SendOutcome("sent", channel="line")

    fakes = Fakes(on_send=quiet_first)
    fakes.definitions[("test-journey", 1)] = journey_source([send("hello")])
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.result()
        steps = await enrolled.steps()
    first, second = fakes.sends
    assert first.dispatch_id == second.dispatch_id
    assert at(second.now) - at(first.now) >= timedelta(hours=9)
    assert [s.outcome for s in steps] == ["deferred:quiet_hours", "sent:line"]


async def test_a_skipped_send_is_recorded_and_the_journey_goes_on(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes(on_send=lambda req: SendOutcome("skipped", reason="no_consent"))
    fakes.definitions[("test-journey", 1)] = journey_source([send("one"), send("two")])
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.result()
        steps = await enrolled.steps()
    assert [s.outcome for s in steps] == ["skipped:no_consent", "skipped:no_consent"]


GOAL_STEPS = [send("thanks"), {"id": "pause", "wait": {"for": "20d"}}, send("reminder")]


async def test_reaching_the_goal_ends_the_journey_as_converted(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        GOAL_STEPS,
        goal={"event": "order.completed", "within": "30d", "where": "event.props.amount > 0"},
        exit=[{"event": "account.deleted"}],
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("pause")
        await enrolled.signal(event("order.completed", enrolled.customer_id, amount=0))
        await enrolled.signal(event("order.completed", enrolled.customer_id, amount=3200))
        outcome = await enrolled.result()
    assert outcome == contract.JourneyOutcome("converted", "order.completed", "pause")
    assert [s.step_id for s in fakes.sends] == ["thanks"]
    assert fakes.awaits[0].events == ("account.deleted", "order.completed")
    assert fakes.transitions()[-1] == "goal_reached:pause"
    assert fakes.ends[0].status == "converted"


async def test_the_trigger_itself_does_not_count_as_the_goal(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [send("thanks")], goal={"event": "order.completed"}
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        outcome = await enrolled.result()
    assert outcome.status == "completed"


async def test_a_goal_after_its_window_does_not_count(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        [{"id": "pause", "wait": {"for": "20d"}}, {"id": "later", "wait": {"for": "20d"}}],
        goal={"event": "order.completed", "within": "10d"},
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("pause")
        await env.sleep(timedelta(days=11))
        await enrolled.signal(event("order.completed", enrolled.customer_id))
        outcome = await enrolled.result()
    assert outcome.status == "completed"
    # Once the window closed the goal event stopped being awaited.
    assert [a.events for a in fakes.awaits] == [("order.completed",), ()]


async def test_an_exit_event_ends_the_journey_as_exited(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(
        GOAL_STEPS, exit=[{"event": "account.deleted", "where": "event.props.confirmed == true"}]
    )
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("pause")
        await enrolled.signal(event("account.deleted", enrolled.customer_id, confirmed=False))
        await enrolled.signal(event("account.deleted", enrolled.customer_id, confirmed=True))
        outcome = await enrolled.result()
    assert outcome == contract.JourneyOutcome("exited", "account.deleted", "pause")
    assert fakes.transitions()[-1] == "exited:pause"


async def test_the_cancel_signal_ends_the_journey_as_cancelled(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(GOAL_STEPS)
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("pause")
        await enrolled.handle.signal(contract.SIGNAL_CANCEL, contract.CancelSignal(reason="paused"))
        outcome = await enrolled.result()
    assert outcome == contract.JourneyOutcome("cancelled", "paused", "pause")
    assert fakes.ends[0].status == "cancelled"
    assert fakes.transitions()[-1] == "cancelled:pause"


async def test_search_attributes_say_who_waits_where(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = Fakes()
    fakes.definitions[("test-journey", 1)] = journey_source(GOAL_STEPS)
    async with worker(env.client, fakes, task_queue):
        enrolled = await enroll(env.client, task_queue)
        await enrolled.at_step("pause")
        described = await enrolled.handle.describe()
        await enrolled.handle.signal(contract.SIGNAL_CANCEL, contract.CancelSignal("done"))
        await enrolled.result()
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    # Temporal's own: the patches the run took (docs/workflow.md, "Patches").
    assert attributes.pop("TemporalChangeVersion") == [LEAN_BOOKKEEPING]
    assert set(attributes) == set(contract.SEARCH_ATTRIBUTES)
    assert attributes == {
        "EnishiJourneyId": "test-journey",
        "EnishiJourneyVersion": 1,
        "EnishiStep": "pause",
        "EnishiCustomerId": enrolled.customer_id,
    }
