"""JourneyWorkflow: one enrollment of one customer in one journey version, step by step.

Deterministic code only (docs/workflow.md): time from `workflow.now()`, no I/O outside
activities, the journey language and CEL passed through the sandbox. Signal handlers only
queue; the run loop does the work, so events are handled in order at the points where the
enrollment waits. Contract (ids, signals, payloads): workflows/contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import cel

    from enishi.journeys import Journey, waits
    from enishi.journeys.conditions import (
        CUSTOMER,
        EVENT,
        TRIGGER,
        ConditionError,
        compile_condition,
        evaluate,
        free_variables,
    )
    from enishi.journeys.model import (
        AnyStep,
        BranchIf,
        BranchStep,
        ExitStep,
        SendStep,
        SplitStep,
        UpdateStep,
        WaitFor,
        WaitForStep,
        WaitStep,
    )
    from workflows import contract
    from workflows.activities.customer_context import (
        ContextRequest,
        CustomerContext,
        CustomerContextActivities,
        from_wire,
    )
    from workflows.activities.definitions import (
        DefinitionActivities,
        DefinitionInvalid,
        DefinitionRequest,
        DefinitionSource,
        parsed,
    )
    from workflows.activities.enrollment import (
        AwaitsUpdate,
        EnrollmentActivities,
        EnrollmentEnd,
        HandOver,
        HandOverActivities,
    )
    from workflows.activities.journal import (
        Enrollment,
        JournalActivities,
        JournalBatch,
        JournalEntry,
        SkipEntry,
        TraitUpdate,
    )
    from workflows.contract import (
        CancelSignal,
        EventSignal,
        JourneyInput,
        JourneyOutcome,
        JourneyState,
        MergeSignal,
        MigrateSignal,
        SendOutcome,
        SendRequest,
        StepRecord,
    )

SEND_ACTIVITY: Final = "send"
"""Activity name of `workflows.activities.sending.SendActivities.send` (called by name)."""

JOURNEY_ID: Final = SearchAttributeKey.for_keyword("EnishiJourneyId")
JOURNEY_VERSION: Final = SearchAttributeKey.for_int("EnishiJourneyVersion")
STEP: Final = SearchAttributeKey.for_keyword("EnishiStep")
CUSTOMER_ID: Final = SearchAttributeKey.for_keyword("EnishiCustomerId")

MAX_STEPS_TAKEN: Final = 100
"""`steps_taken` keeps the newest this many records (it crosses continue-as-new)."""
MAX_SEEN_EVENTS: Final = 256
"""Event ids remembered for dedupe: redeliveries arrive close together (Kafka replays)."""
MAX_DEFERRALS: Final = 50
"""A send deferred more often than this is given up (a bug, not quiet hours)."""

LEAN_BOOKKEEPING: Final = "lean-bookkeeping"
"""Patch id (docs/workflow.md, "Patches"): the bookkeeping activities (`set_awaits`,
`record_journal`, `end_enrollment`, `update_traits`) run as local activities, and the search
attribute upserts of one workflow task go out as one upsert. Runs recorded before it replay
the old path: normal activities, one upsert per step."""

READ_TIMEOUT: Final = timedelta(seconds=10)
WRITE_TIMEOUT: Final = timedelta(seconds=30)
SEND_TIMEOUT: Final = timedelta(seconds=60)
# Redis and Kafka outages delay an enrollment, never end it: retry without limit, backing off
# to a few minutes. Activities raise ApplicationError(non_retryable=True) for what a retry
# cannot fix.
RETRY: Final = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
LOCAL_RETRY: Final = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


_Arg = TypeVar("_Arg")


class _Ended(Exception):
    """The enrollment ends now (goal, exit event, exit step, cancel): unwinds the walk."""

    def __init__(self, outcome: JourneyOutcome, transition: str, detail: str = "") -> None:
        super().__init__(outcome.status)
        self.outcome = outcome
        self.transition = transition
        self.detail = detail


class _Moved(Exception):
    """A migration moved the enrollment to `step_id` of another version (at a wait)."""

    def __init__(self, step_id: str, deadline: datetime | None) -> None:
        super().__init__(step_id)
        self.step_id = step_id
        self.deadline = deadline


@dataclass
class _Context:
    """The customer as last read, and the workflow time it was read at."""

    at: datetime
    variables: dict[str, Any]
    time_zone: str


@workflow.defn(name="JourneyWorkflow")
class JourneyWorkflow:
    """Interprets one journey version for one customer (docs/workflow.md)."""

    def __init__(self) -> None:
        self._inbox: list[EventSignal] = []
        self._seen: dict[str, None] = {}
        self._cancel: CancelSignal | None = None
        self._migration: MigrateSignal | None = None
        self._merge: MergeSignal | None = None
        self._merge_settled = False  # handed over, or the survivor's record ended with this
        self._journal_id = ""  # journal identity (workflow id, enrollment) when handed over
        self._journal_enrollment = 0
        self._step = ""
        self._taken: list[StepRecord] = []
        self._visits: dict[str, int] = {}
        self._trigger: EventSignal | None = None
        self._event: EventSignal | None = None
        self._variant = ""
        self._started_at = ""
        self._goal_deadline: datetime | None = None
        self._awaiting: tuple[str, ...] = ()
        self._journal: list[JournalEntry] = []
        self._skips: list[SkipEntry] = []
        self._steps_this_run = 0
        self._programs: dict[str, cel.Program] = {}
        self._context: _Context | None = None
        self._input: JourneyInput | None = None
        self._journey: Journey | None = None
        self._definition: DefinitionSource | None = None
        self._version = 0
        self._lean = False  # LEAN_BOOKKEEPING applies to this run
        self._attributes: dict[str, SearchAttributeUpdate[Any]] = {}  # not yet upserted (lean)

    # -- messages: handlers only record; the run loop acts -------------------------------

    @workflow.signal(name=contract.SIGNAL_TOUCHPOINT)
    def touchpoint(self, event: EventSignal) -> None:
        if event.event_id in self._seen:
            return
        self._remember(event.event_id)
        self._inbox.append(event)

    @workflow.signal(name=contract.SIGNAL_CANCEL)
    def cancel(self, signal: CancelSignal) -> None:
        self._cancel = signal

    @workflow.signal(name=contract.SIGNAL_MIGRATE)
    def migrate(self, signal: MigrateSignal) -> None:
        self._migration = signal

    @workflow.signal(name=contract.SIGNAL_MERGE)
    def merge(self, signal: MergeSignal) -> None:
        if self._merge is None:  # a redelivered merge says the same
            self._merge = signal

    @workflow.query(name=contract.QUERY_CURRENT_STEP)
    def current_step(self) -> str:
        return self._step

    @workflow.query(name=contract.QUERY_STEPS_TAKEN)
    def steps_taken(self) -> list[StepRecord]:
        return list(self._taken)

    # -- the run --------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyOutcome:
        self._input = inp
        self._version = inp.version
        self._lean = workflow.patched(LEAN_BOOKKEEPING)
        try:
            return await self._run(inp)
        finally:
            self._publish_attributes()

    async def _run(self, inp: JourneyInput) -> JourneyOutcome:
        await self._load(inp.version)
        try:
            if inp.state is None:
                start, deadline, resumed = self._enroll(), None, False
            else:
                start, deadline, resumed = self._restore(inp.state), None, True
                if inp.state.wake_at:
                    deadline = datetime.fromisoformat(inp.state.wake_at)
            self._upsert(
                [
                    JOURNEY_ID.value_set(inp.journey_id),
                    JOURNEY_VERSION.value_set(inp.version),
                    CUSTOMER_ID.value_set(inp.customer_id),
                    STEP.value_set(self._step),
                ]
            )
            last = await self._walk(start, deadline, resumed)
            raise _Ended(JourneyOutcome("completed", last_step=last), "completed")
        except _Ended as end:
            return await self._finish(end)
        except asyncio.CancelledError:
            # Cancelled through Temporal (not the `cancel` signal): still leave Redis and the
            # timeline right, then let the cancellation stand.
            reason = "workflow cancelled"
            await self._finish(
                _Ended(JourneyOutcome("cancelled", reason, self._step), "cancelled", reason)
            )
            raise

    def _enroll(self) -> str:
        """A fresh enrollment: the trigger is the first event (signal-with-start)."""
        self._trigger = self._inbox.pop(0) if self._inbox else None
        now = workflow.now()
        self._started_at = now.isoformat()
        goal = self.journey.goal
        if goal is not None and goal.within is not None:
            self._goal_deadline = now + goal.within
        self._note("entered", "")
        return self.journey.first_step.id

    def _restore(self, state: JourneyState) -> str:
        """Continue-as-new: take up the position and memory the previous run handed over."""
        self._step = state.current_step
        self._trigger = state.trigger
        self._event = state.last_event
        self._visits = dict(state.visits)
        self._taken = list(state.steps_taken)
        self._started_at = state.started_at
        self._goal_deadline = (
            datetime.fromisoformat(state.goal_deadline) if state.goal_deadline else None
        )
        self._variant = state.variant
        self._awaiting = state.awaiting
        self._journal_id = state.journal_workflow_id
        self._journal_enrollment = state.journal_enrollment
        for event_id in state.seen_event_ids:
            self._remember(event_id)
        # Events that arrived before this run started are already in the inbox (signals are
        # applied before run); the carried ones happened earlier, so they go first.
        self._inbox[:0] = list(state.pending_events)
        return state.current_step

    async def _walk(self, step_id: str | None, deadline: datetime | None, resumed: bool) -> str:
        """Run steps from `step_id` until the journey's end; returns the last step id."""
        last = self._step
        while step_id is not None:
            self._check_cancel()
            if not resumed:
                self._enter(step_id)
            resumed = False
            last = step_id
            step = self.journey.step(step_id)
            try:
                step_id = await self._run_step(step, deadline)
                deadline = None
            except _Moved as moved:
                step_id, deadline = moved.step_id, moved.deadline
        return last

    def _enter(self, step_id: str) -> None:
        self._step = step_id
        self._visits[step_id] = self._visits.get(step_id, 0) + 1
        self._steps_this_run += 1
        self._upsert([STEP.value_set(step_id)])
        self._note("step_entered", step_id, key_suffix=str(self._visits[step_id]))

    async def _run_step(self, step: AnyStep, deadline: datetime | None) -> str | None:
        """Do one step; returns the next step id (None: the journey is complete)."""
        if isinstance(step, SendStep):
            await self._send(step)
            return self.journey.next_of(step.id)
        if isinstance(step, WaitStep):
            return await self._wait(step, deadline)
        if isinstance(step, WaitForStep):
            return await self._wait_for(step, deadline)
        if isinstance(step, BranchStep):
            return await self._branch(step)
        if isinstance(step, SplitStep):
            return self._split(step)
        if isinstance(step, UpdateStep):
            await self._update(step)
            return self.journey.next_of(step.id)
        if isinstance(step, ExitStep):
            reason = step.exit.reason or ""
            self._record(step, f"exit:{reason}" if reason else "exit")
            raise _Ended(JourneyOutcome("completed", reason, step.id), "completed", reason)
        raise ApplicationError(f"step {step.id!r}: unknown kind", non_retryable=True)

    # -- steps ----------------------------------------------------------------------------

    async def _send(self, step: SendStep) -> None:
        inp = self.input
        dispatch = contract.dispatch_id(
            self._workflow_id, inp.enrollment, step.id, self._visits.get(step.id, 1)
        )
        if inp.holdout:
            self._skips.append(
                SkipEntry(
                    dispatch_id=dispatch,
                    reason="holdout",
                    version=self._version,
                    step_id=step.id,
                    template_id=step.send.template,
                    at=self._now(),
                    variant=self._variant,
                )
            )
            self._record(step, "skipped:holdout")
            return
        for _ in range(MAX_DEFERRALS):
            request = SendRequest(
                workflow_id=self._workflow_id,
                journey_id=inp.journey_id,
                version=self._version,
                step_id=step.id,
                customer_id=inp.customer_id,
                dispatch_id=dispatch,
                channel=step.send.channel,
                fallback=step.send.fallback,
                template_id=step.send.template,
                on_quiet_hours=step.send.on_quiet_hours,
                trigger_event_id=self._trigger.event_id if self._trigger else "",
                designer=self._designer,
                now=self._now(),
                holdout=inp.holdout,
                variant=self._variant,
                trigger=self._trigger,
                event=self._event,
            )
            self._publish_attributes()
            try:
                outcome = await workflow.execute_activity(
                    SEND_ACTIVITY,
                    request,
                    result_type=SendOutcome,
                    start_to_close_timeout=SEND_TIMEOUT,
                    retry_policy=RETRY,
                )
            except ActivityError as exc:
                # Non-retryable: this send cannot be made (e.g. the template does not render
                # for anyone). The enrollment goes on; the reason is in steps_taken.
                self._record(step, f"failed:{_cause(exc)}")
                return
            if outcome.status != "deferred":
                detail = outcome.channel if outcome.status == "sent" else outcome.reason
                self._record(step, f"{outcome.status}:{detail}")
                return
            self._record(step, f"deferred:{outcome.reason}")
            retry_at = datetime.fromisoformat(outcome.retry_at) if outcome.retry_at else None
            if retry_at is None:
                raise ApplicationError(
                    f"send {step.id!r}: deferred without retry_at", non_retryable=True
                )
            await self._block(step.id, retry_at, safe=False)
        self._record(step, "skipped:deferred_too_often")

    async def _wait(self, step: WaitStep, deadline: datetime | None) -> str | None:
        if deadline is None:
            needs_customer = step.wait.at_local is not None or step.wait.until_trait is not None
            context = await self._customer() if needs_customer else None
            tz = waits.zone(context.time_zone if context else None, self.journey.timezone_fallback)
            traits = context.variables.get("traits", {}) if context else {}
            # `holidays` imports its calendars lazily and builds them with gettext (which reads
            # the process locale): both are refused inside the sandbox and would fail the task
            # at the first `skip_holidays` wait. The calendar is a pure function of the
            # library's version (docs/workflow.md, "Waits"), so compute it unrestricted.
            with (
                workflow.unsafe.imports_passed_through(),
                workflow.unsafe.sandbox_unrestricted(),
            ):
                woken = waits.wake_at(
                    step.wait,
                    workflow.now(),
                    tz=tz,
                    calendar=self.journey.calendar,
                    traits=traits,
                )
            if isinstance(woken, waits.MissingTraitDate):
                self._record(step, f"missing:{woken.trait}")
                if step.wait.on_missing is None:
                    reason = f"missing trait {woken.trait}"
                    raise _Ended(JourneyOutcome("completed", reason, step.id), "completed", reason)
                return step.wait.on_missing
            deadline = woken
        await self._block(step.id, deadline, safe=True)
        self._record(step, "waited")
        return self.journey.next_of(step.id)

    async def _wait_for(self, step: WaitForStep, deadline: datetime | None) -> str | None:
        spec = step.wait_for
        if deadline is None:
            deadline = workflow.now() + spec.timeout
        event = await self._block(step.id, deadline, safe=True, waiting_for=spec)
        if event is None:
            self._record(step, "timeout")
            return spec.on_timeout or self.journey.next_of(step.id)
        self._event = event
        self._record(step, f"event:{event.name}")
        return spec.on_event or self.journey.next_of(step.id)

    async def _branch(self, step: BranchStep) -> str | None:
        event = self._event or self._trigger
        for index, case in enumerate(step.branch):
            if isinstance(case, BranchIf):
                if await self._holds(case.if_, event):
                    self._record(step, f"branch:{index}")
                    return case.then
            else:
                self._record(step, "branch:else")
                return case.else_
        self._record(step, "branch:else")
        return self.journey.next_of(step.id)

    def _split(self, step: SplitStep) -> str:
        variant = step.choose(self.journey.id, self.input.customer_id)
        self._variant = step.variant_name(step.split.index(variant))
        self._record(step, f"split:{self._variant}")
        return variant.next

    async def _update(self, step: UpdateStep) -> None:
        spec = step.update
        traits: dict[str, Any] = dict(spec.set_ or {})
        if spec.tag or spec.untag:
            context = await self._customer()
            tags = set(context.variables.get("tags", []))
            traits["tags"] = sorted((tags | set(spec.tag)) - set(spec.untag))
        await self._write(
            JournalActivities.update_traits,
            TraitUpdate(
                enrollment=self._enrollment,
                key=f"update:{step.id}:{self._visits.get(step.id, 1)}",
                traits=traits,
                at=self._now(),
            ),
        )
        self._context = None  # memory changed (once the stream processor applies it)
        self._record(step, "updated")

    # -- waiting: timers, events, goal, exits, cancel, migration, continue-as-new ----------

    async def _block(
        self,
        step_id: str,
        until: datetime,
        *,
        safe: bool,
        waiting_for: WaitFor | None = None,
    ) -> EventSignal | None:
        """Wait until `until`, handling events as they come.

        Returns the event that satisfied `waiting_for`, or None when the time is up. Raises
        _Ended (goal, exit event, cancel) and, at a safe point (a wait), _Moved (migration)
        or continues as new.
        """
        await self._sync_awaits(step_id, waiting_for)
        await self._flush()
        timed_out = False
        while True:
            self._check_cancel()
            while self._inbox:
                event = self._inbox.pop(0)
                if await self._handle(event, waiting_for):
                    return event
            if self._goal_expired():
                await self._sync_awaits(step_id, waiting_for)
            if safe and self._migration is not None:
                await self._apply_migration(step_id, until)
            if self._merge is not None and not self._merge_settled:
                await self._hand_over(step_id, until)
            now = workflow.now()
            if timed_out or now >= until:
                return None
            if safe and self._should_continue_as_new():
                await self._continue_as_new(step_id, until)
            goal_end = self._goal_deadline
            wake = until if goal_end is None or goal_end <= now else min(until, goal_end)
            self._publish_attributes()
            try:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._inbox)
                        or self._cancel is not None
                        or (safe and self._migration is not None)
                        or (self._merge is not None and not self._merge_settled)
                    ),
                    timeout=max(wake - now, timedelta(milliseconds=1)),
                )
            except TimeoutError:
                timed_out = wake >= until

    async def _handle(self, event: EventSignal, waiting_for: WaitFor | None) -> bool:
        """Exit events and the goal end the enrollment; True when `waiting_for` matches."""
        for exit_event in self.journey.exit:
            if event.name == exit_event.event and await self._holds(exit_event.where, event):
                outcome = JourneyOutcome("exited", event.name, self._step)
                raise _Ended(outcome, "exited", event.name)
        goal = self.journey.goal
        if (
            goal is not None
            and event.name == goal.event
            and not self._goal_expired()
            and await self._holds(goal.where, event)
        ):
            raise _Ended(JourneyOutcome("converted", event.name, self._step), "goal_reached")
        return (
            waiting_for is not None
            and event.name == waiting_for.event
            and await self._holds(waiting_for.where, event)
        )

    def _goal_expired(self) -> bool:
        return self._goal_deadline is not None and workflow.now() >= self._goal_deadline

    def _check_cancel(self) -> None:
        if self._cancel is not None:
            reason = self._cancel.reason
            raise _Ended(JourneyOutcome("cancelled", reason, self._step), "cancelled", reason)

    async def _apply_migration(self, step_id: str, until: datetime) -> None:
        """Move to the signalled version at `step_id` (a wait), or record why not."""
        signal, self._migration = self._migration, None
        assert signal is not None
        step = self.journey.step(step_id)
        old = self._version
        target = signal.step_map.get(step_id, "")
        if signal.to_version == old:
            return
        if not target:
            self._record(step, f"migrate:blocked:no mapping to v{signal.to_version}")
            return
        journey, definition = self._journey, self._definition
        try:
            await self._load(signal.to_version)
        except (ActivityError, ApplicationError) as exc:
            self._record(step, f"migrate:blocked:{_cause(exc)}")
            return
        if target not in self.journey.steps_by_id:
            self._journey, self._definition = journey, definition
            self._record(step, f"migrate:blocked:no step {target!r} in v{signal.to_version}")
            return
        self._version = signal.to_version
        goal = self.journey.goal
        started = datetime.fromisoformat(self._started_at)
        self._goal_deadline = (
            started + goal.within if goal is not None and goal.within is not None else None
        )
        self._upsert([JOURNEY_VERSION.value_set(self._version)])
        self._record(step, f"migrated:v{old}->v{self._version}:{target}")
        self._note("migrated", target, detail=f"from version {old}", key_suffix=f"v{old}")
        landing = self.journey.step(target)
        # Landing on a wait keeps the wake-up time: migrating never restarts a long wait.
        keep = until if isinstance(landing, WaitStep | WaitForStep) else None
        raise _Moved(target, keep)

    def _should_continue_as_new(self) -> bool:
        limit = self.input.max_steps_per_run
        return workflow.info().is_continue_as_new_suggested() or (
            limit > 0 and self._steps_this_run >= limit
        )

    async def _continue_as_new(self, step_id: str, until: datetime) -> None:
        await self._flush()
        self._publish_attributes()
        await workflow.wait_condition(workflow.all_handlers_finished)
        inp = self.input
        workflow.continue_as_new(
            JourneyInput(
                journey_id=inp.journey_id,
                version=self._version,
                customer_id=inp.customer_id,
                enrollment=inp.enrollment,
                holdout=inp.holdout,
                state=self._state(step_id, until),
                max_steps_per_run=inp.max_steps_per_run,
            )
        )

    def _state(self, step_id: str, until: datetime) -> JourneyState:
        """What the next run needs to take up the wait at `step_id` ending at `until`."""
        return JourneyState(
            current_step=step_id,
            trigger=self._trigger,
            visits=dict(self._visits),
            steps_taken=tuple(self._taken),
            started_at=self._started_at,
            goal_deadline=self._goal_deadline.isoformat() if self._goal_deadline else "",
            wake_at=until.isoformat(),
            last_event=self._event,
            variant=self._variant,
            awaiting=self._awaiting,
            seen_event_ids=tuple(self._seen),
            pending_events=tuple(self._inbox),
            journal_workflow_id=self._journal_id,
            journal_enrollment=self._journal_enrollment,
        )

    async def _hand_over(self, step_id: str, until: datetime) -> None:
        """The customer was merged into another: the enrollment goes on as theirs.

        The survivor's workflow, `journey:{journey}:{survivor}`, starts with this enrollment's
        state (the same step, the same wake-up time, its events and journal identity), the
        way continue-as-new would; this run then ends as `merged`. If the survivor's workflow
        already runs, it is kept and this one just ends.
        """
        signal = self._merge
        assert signal is not None
        self._merge_settled = True
        inp = self.input
        step = self.journey.step(step_id)
        outcome = "merged"
        if signal.hand_over and signal.into_customer_id != inp.customer_id:
            await self._flush()
            await workflow.wait_condition(workflow.all_handlers_finished)
            state = replace(
                self._state(step_id, until),
                awaiting=(),  # the survivor's awaits are written by the new run
                journal_workflow_id=self._journal_id or self._workflow_id,
                journal_enrollment=self._journal_enrollment or inp.enrollment,
            )
            self._publish_attributes()
            started = await workflow.execute_activity_method(
                HandOverActivities.hand_over,
                HandOver(
                    JourneyInput(
                        journey_id=inp.journey_id,
                        version=self._version,
                        customer_id=signal.into_customer_id,
                        enrollment=signal.enrollment,
                        holdout=inp.holdout,
                        state=state,
                        max_steps_per_run=inp.max_steps_per_run,
                    )
                ),
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=RETRY,
            )
            outcome = "merged:handed_over" if started else "merged:theirs_kept"
        self._record(step, outcome)
        detail = f"into {signal.into_customer_id}"
        raise _Ended(JourneyOutcome("merged", detail, step_id), "", detail)

    # -- the end --------------------------------------------------------------------------

    async def _finish(self, end: _Ended) -> JourneyOutcome:
        """Record the transition, clear awaits, mark the enrollment ended; then return.

        A hand-over records no transition: the enrollment goes on in the survivor's workflow.
        """
        if end.transition:
            self._note(end.transition, end.outcome.last_step, detail=end.detail)
        inp = self.input
        status = end.outcome.status
        await asyncio.gather(
            self._flush(), self._end_enrollment(inp.customer_id, inp.enrollment, status)
        )
        self._awaiting = ()
        while True:
            merge = self._merge
            if merge is not None and merge.hand_over and not self._merge_settled:
                # Merged too late to hand over: the survivor's record, written for the
                # hand-over by the stream processor, ends with this enrollment.
                self._merge_settled = True
                await self._end_enrollment(merge.into_customer_id, merge.enrollment, status)
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._merge is merge:
                return end.outcome

    async def _end_enrollment(self, customer_id: str, enrollment: int, status: str) -> None:
        await self._write(
            EnrollmentActivities.end_enrollment,
            EnrollmentEnd(
                customer_id=customer_id,
                journey_id=self.input.journey_id,
                enrollment=enrollment,
                ended_at=self._now(),
                status=status,
            ),
        )

    # -- helpers --------------------------------------------------------------------------

    async def _load(self, version: int) -> None:
        definition = await workflow.execute_local_activity_method(
            DefinitionActivities.load_definition,
            DefinitionRequest(self.input.journey_id, version),
            start_to_close_timeout=READ_TIMEOUT,
            retry_policy=LOCAL_RETRY,
        )
        try:
            # Parsing may import lazily (holidays calendars, tz data): pass those through too.
            with workflow.unsafe.imports_passed_through():
                journey = parsed(definition.source)
        except DefinitionInvalid as exc:
            raise ApplicationError(
                f"journey {self.input.journey_id!r} version {version}: invalid: {exc}",
                non_retryable=True,
            ) from None
        self._journey, self._definition = journey, definition
        self._programs.clear()

    async def _customer(self) -> _Context:
        """The customer's memory, read at most once per workflow instant."""
        now = workflow.now()
        if self._context is None or self._context.at != now:
            result: CustomerContext = await workflow.execute_local_activity_method(
                CustomerContextActivities.customer_context,
                ContextRequest(self.input.customer_id, now.isoformat()),
                start_to_close_timeout=READ_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
            self._context = _Context(now, from_wire(result.variables), result.time_zone)
        return self._context

    async def _holds(self, expression: str | None, event: EventSignal | None) -> bool:
        """A CEL condition over `event`, `customer` and `trigger`; errors count as false.

        A condition reading a field the event or customer lacks is false, not a failure:
        designers write `event.props.sentiment == 'negative'` without `has()` guards.
        """
        if expression is None:
            return True
        program = self._programs.get(expression)
        if program is None:
            try:
                program = compile_condition(expression)
            except ConditionError:
                return False
            self._programs[expression] = program
        variables: dict[str, Any] = {
            EVENT: _event_variables(event),
            TRIGGER: _event_variables(self._trigger),
        }
        if CUSTOMER in free_variables(program):
            variables[CUSTOMER] = (await self._customer()).variables
        try:
            return evaluate(program, variables) is True
        except Exception:  # noqa: BLE001 - CEL raises KeyError/TypeError/ValueError for no-such-field
            return False

    async def _sync_awaits(self, step_id: str, waiting_for: WaitFor | None) -> None:
        """Keep the awaits hash equal to what the enrollment listens for now."""
        names = {e.event for e in self.journey.exit}
        goal = self.journey.goal
        if goal is not None and not self._goal_expired():
            names.add(goal.event)
        if waiting_for is not None:
            names.add(waiting_for.event)
        wanted = tuple(sorted(names))
        if wanted == self._awaiting:
            return
        await self._write(
            EnrollmentActivities.set_awaits,
            AwaitsUpdate(self.input.customer_id, self.input.journey_id, wanted),
        )
        self._awaiting = wanted

    async def _flush(self) -> None:
        """Publish the journal collected since the last flush (one activity, not one a step)."""
        if not self._journal and not self._skips:
            return
        batch = JournalBatch(self._enrollment, tuple(self._journal), tuple(self._skips))
        self._journal, self._skips = [], []
        await self._write(JournalActivities.record_journal, batch)

    async def _write(self, activity: Callable[[Any, _Arg], Awaitable[None]], arg: _Arg) -> None:
        """A bookkeeping write (Redis, or an idempotent touchpoint on Kafka).

        Lean: a local activity, one marker in the history and no task of its own; before
        LEAN_BOOKKEEPING a normal activity (old histories replay that way).
        """
        if self._lean:
            await workflow.execute_local_activity_method(
                activity, arg, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=LOCAL_RETRY
            )
        else:
            await workflow.execute_activity_method(
                activity, arg, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=RETRY
            )

    def _upsert(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
        """Set search attributes; lean, they wait for `_publish_attributes` (one upsert)."""
        if not self._lean:
            workflow.upsert_search_attributes(updates)
            return
        for update in updates:
            self._attributes[update.key.name] = update

    def _publish_attributes(self) -> None:
        """Upsert what `_upsert` collected; called before the workflow task can end
        (an activity, a timer or wait, continue-as-new, the end), so the visible values
        are the same as with one upsert per step."""
        if self._attributes:
            workflow.upsert_search_attributes(list(self._attributes.values()))
            self._attributes.clear()

    def _note(
        self, transition: str, step_id: str, *, detail: str = "", key_suffix: str = ""
    ) -> None:
        key = ":".join(part for part in (transition, step_id, key_suffix) if part)
        self._journal.append(
            JournalEntry(
                key=key,
                transition=transition,
                version=self._version,
                step_id=step_id,
                at=self._now(),
                detail=detail,
            )
        )

    def _record(self, step: AnyStep, outcome: str) -> None:
        self._taken.append(StepRecord(step.id, step.kind, self._now(), outcome))
        del self._taken[:-MAX_STEPS_TAKEN]

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        while len(self._seen) > MAX_SEEN_EVENTS:
            del self._seen[next(iter(self._seen))]

    def _now(self) -> str:
        return workflow.now().isoformat()

    @property
    def input(self) -> JourneyInput:
        assert self._input is not None, "run() sets the input first"
        return self._input

    @property
    def journey(self) -> Journey:
        assert self._journey is not None, "run() loads the journey first"
        return self._journey

    @property
    def _workflow_id(self) -> str:
        return workflow.info().workflow_id

    @property
    def _designer(self) -> str:
        definition = self._definition
        return (definition.designer if definition else "") or self.journey.designer

    @property
    def _enrollment(self) -> Enrollment:
        """Who the journal is about: the customer now, the enrollment's first identity."""
        inp = self.input
        return Enrollment(
            workflow_id=self._journal_id or self._workflow_id,
            journey_id=inp.journey_id,
            customer_id=inp.customer_id,
            enrollment=self._journal_enrollment or inp.enrollment,
            holdout=inp.holdout,
            trigger_event_id=self._trigger.event_id if self._trigger else "",
            designer=self._designer,
        )


def _event_variables(event: EventSignal | None) -> dict[str, Any]:
    """`event` / `trigger` for CEL, shaped like `enishi.journeys.context.event_variables`."""
    if event is None:
        return {}
    return {
        "event_id": event.event_id,
        "name": event.name,
        "kind": event.kind,
        "props": dict(event.props),
        "occurred_at": datetime.fromisoformat(event.occurred_at) if event.occurred_at else None,
        "channel": "",
        "source": "",
        "attributes": {},
    }


def _cause(error: ActivityError | ApplicationError) -> str:
    return str(error.cause or error)[:200]
