"""A stand-in `JourneyWorkflow` for routing tests: records its input and the events it gets.

Importable (the workflow sandbox re-imports it). It runs until told `finish`, so tests can
end an enrollment when they choose; it dedupes events by id like the real workflow.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # `from workflows.contract import ...` (not `from workflows import contract`) registers
    # the module in the sandbox, which the payload converter needs to resolve its hints.
    from workflows.contract import SIGNAL_TOUCHPOINT, EventSignal, JourneyInput

FINISH = "finish"
QUERY_EVENTS = "events"
QUERY_INPUT = "input"


@workflow.defn(name="JourneyWorkflow")
class RecordingJourney:
    def __init__(self) -> None:
        self._events: list[EventSignal] = []
        self._input: JourneyInput | None = None
        self._finished = False

    @workflow.run
    async def run(self, request: JourneyInput) -> list[str]:
        self._input = request
        await workflow.wait_condition(lambda: self._finished)
        return [e.event_id for e in self._events]

    @workflow.signal(name=SIGNAL_TOUCHPOINT)
    def touchpoint(self, event: EventSignal) -> None:
        if all(e.event_id != event.event_id for e in self._events):
            self._events.append(event)

    @workflow.signal(name=FINISH)
    def finish(self) -> None:
        self._finished = True

    @workflow.query(name=QUERY_EVENTS)
    def events(self) -> list[str]:
        return [e.event_id for e in self._events]

    @workflow.query(name=QUERY_INPUT)
    def input(self) -> JourneyInput | None:
        return self._input
