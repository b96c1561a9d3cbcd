"""Running JourneyWorkflow on the time-skipping server with recording fake activities.

The fakes register under the real activity names (`send`, `load_definition`, ...), so the
workflow under test is exactly the production one; they record what the workflow asked for
and answer from per-test data (definitions, customer memory, a send script).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from enishi.journeys import JourneyInvalid, parse_journey
from workflows import contract
from workflows.activities.customer_context import ContextRequest, CustomerContext
from workflows.activities.definitions import DefinitionRequest, DefinitionSource
from workflows.activities.enrollment import AwaitsUpdate, EnrollmentEnd, HandOverActivities
from workflows.activities.journal import (
    Enrollment,
    JournalBatch,
    JournalEntry,
    SkipEntry,
    TraitUpdate,
)
from workflows.contract import (
    EventSignal,
    JourneyInput,
    JourneyOutcome,
    SendOutcome,
    SendRequest,
    StepRecord,
)
from workflows.journey import JourneyWorkflow
from workflows.runner import WORKFLOW_RUNNER

TEMPLATE = {
    "email": {
        "ja": {"subject": "件名", "text": "本文"},
        "en": {"subject": "Subject", "text": "Body"},
    }
}


def journey_source(
    steps: Sequence[Mapping[str, Any]],
    *,
    journey_id: str = "test-journey",
    templates: Iterable[str] = ("t",),
    **top: Any,
) -> str:
    """A valid journey (JSON is YAML) with email templates named `templates`."""
    document: dict[str, Any] = {
        "id": journey_id,
        "name": "Test journey",
        "designer": "tests@enishi.example",
        "trigger": {"event": "order.completed"},
        "templates": {name: TEMPLATE for name in templates},
        "steps": list(steps),
        **top,
    }
    return json.dumps(document, ensure_ascii=False)


def send(step_id: str, template: str = "t", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "send": {"channel": "email", "template": template, **extra}}


def event(name: str, customer_id: str, event_id: str | None = None, **props: Any) -> EventSignal:
    return EventSignal(
        event_id=event_id or f"e-{uuid.uuid4()}",
        name=name,
        occurred_at=datetime.now(UTC).isoformat(),
        customer_id=customer_id,
        props=props,
    )


def sent(req: SendRequest) -> SendOutcome:
    return SendOutcome("sent", channel="email")


@dataclass
class Fakes:
    """Recording stand-ins for every activity the workflow calls."""

    definitions: dict[tuple[str, int], str] = field(default_factory=dict)
    customers: dict[str, CustomerContext] = field(default_factory=dict)
    on_send: Callable[[SendRequest], SendOutcome] = sent
    sends: list[SendRequest] = field(default_factory=list)
    awaits: list[AwaitsUpdate] = field(default_factory=list)
    ends: list[EnrollmentEnd] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    journal_of: list[Enrollment] = field(default_factory=list)  # each batch's identity
    skips: list[SkipEntry] = field(default_factory=list)
    updates: list[TraitUpdate] = field(default_factory=list)
    context_reads: int = 0
    during_end: Callable[[EnrollmentEnd], Awaitable[None]] | None = None
    """Runs inside `end_enrollment` (a signal that arrives while the enrollment ends)."""

    @activity.defn(name="load_definition")
    async def load_definition(self, req: DefinitionRequest) -> DefinitionSource:
        source = self.definitions.get((req.journey_id, req.version))
        if source is None:
            raise ApplicationError(f"no version {req.version}", non_retryable=True)
        try:
            parse_journey(source)  # the registry only stores what passes the whole validator
        except JourneyInvalid as exc:
            raise ApplicationError(f"test journey invalid: {exc}", non_retryable=True) from None
        return DefinitionSource(req.journey_id, req.version, source, designer="registrar")

    @activity.defn(name="customer_context")
    async def customer_context(self, req: ContextRequest) -> CustomerContext:
        self.context_reads += 1
        return self.customers.get(req.customer_id, CustomerContext({"id": req.customer_id}))

    @activity.defn(name="send")
    async def send(self, req: SendRequest) -> SendOutcome:
        self.sends.append(req)
        return self.on_send(req)

    @activity.defn(name="set_awaits")
    async def set_awaits(self, update: AwaitsUpdate) -> None:
        self.awaits.append(update)

    @activity.defn(name="end_enrollment")
    async def end_enrollment(self, end: EnrollmentEnd) -> None:
        self.ends.append(end)
        if self.during_end is not None:
            await self.during_end(end)

    @activity.defn(name="record_journal")
    async def record_journal(self, batch: JournalBatch) -> None:
        self.journal.extend(batch.entries)
        self.skips.extend(batch.skips)
        self.journal_of.append(batch.enrollment)

    @activity.defn(name="update_traits")
    async def update_traits(self, update: TraitUpdate) -> None:
        self.updates.append(update)

    def activities(self) -> list[Callable[..., Any]]:
        # The real `hand_over`: it only starts a workflow, on the test's own server.
        return [
            HandOverActivities().hand_over,
            self.load_definition,
            self.customer_context,
            self.send,
            self.set_awaits,
            self.end_enrollment,
            self.record_journal,
            self.update_traits,
        ]

    def transitions(self) -> list[str]:
        return [f"{e.transition}:{e.step_id}" if e.step_id else e.transition for e in self.journal]


def worker(client: Client, fakes: Fakes, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow],
        activities=fakes.activities(),
        workflow_runner=WORKFLOW_RUNNER,
    )


@dataclass
class Enrolled:
    handle: WorkflowHandle[JourneyWorkflow, JourneyOutcome]
    customer_id: str
    trigger: EventSignal

    async def result(self) -> JourneyOutcome:
        return await self.handle.result()

    async def steps(self) -> list[StepRecord]:
        return await self.handle.query(JourneyWorkflow.steps_taken)

    async def at_step(self, step_id: str, timeout: float = 10.0) -> None:
        """Poll `current_step` until the enrollment sits at `step_id` (time stays frozen)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            current = await self.handle.query(JourneyWorkflow.current_step)
            if current == step_id:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"enrollment at {current!r}, never reached {step_id!r}")
            await asyncio.sleep(0.05)

    async def signal(self, signal: EventSignal) -> None:
        await self.handle.signal(JourneyWorkflow.touchpoint, signal)


async def enroll(
    client: Client,
    task_queue: str,
    *,
    journey_id: str = "test-journey",
    version: int = 1,
    customer_id: str | None = None,
    trigger: EventSignal | None = None,
    holdout: bool = False,
    enrollment: int = 1,
    max_steps_per_run: int = 0,
) -> Enrolled:
    """Signal-with-start, as the stream processor does."""
    customer = customer_id or f"c-{uuid.uuid4()}"
    first = trigger or event("order.completed", customer)
    handle = await client.start_workflow(
        JourneyWorkflow.run,
        JourneyInput(
            journey_id=journey_id,
            version=version,
            customer_id=customer,
            enrollment=enrollment,
            holdout=holdout,
            max_steps_per_run=max_steps_per_run,
        ),
        id=contract.workflow_id(journey_id, customer),
        task_queue=task_queue,
        start_signal=contract.SIGNAL_TOUCHPOINT,
        start_signal_args=[first],
        execution_timeout=timedelta(days=800),
    )
    return Enrolled(handle, customer, first)


def at(value: str) -> datetime:
    """An ISO 8601 time as an aware datetime (workflow times cross Temporal as text)."""
    return datetime.fromisoformat(value)
