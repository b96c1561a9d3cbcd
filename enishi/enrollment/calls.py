"""The Temporal calls of enrolling and routing: start an enrollment, signal an event.

Made by the stream processor and by the worker's audience runs. Temporal is the scarce
resource (design §5): every call is counted in `enishi_temporal_calls_total{kind}` and at
most `concurrency` are in flight at once.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from enishi import tracing
from enishi.metrics import TEMPORAL_CALLS
from workflows import contract

WORKFLOW_TYPE: Final = "JourneyWorkflow"
"""The journey workflow's type name (docs/journey-runtime.md); started by name, not class."""


class JourneyCalls(Protocol):
    """What enrolling and routing need from Temporal (a fake in unit tests)."""

    async def start(self, request: contract.JourneyInput, event: contract.EventSignal) -> None:
        """Signal-with-start `journey:{journey}:{customer}` with `event` as the first signal."""
        ...

    async def signal(self, journey_id: str, customer_id: str, event: contract.EventSignal) -> bool:
        """Signal `touchpoint` to a running enrollment; False when it is no longer running."""
        ...

    async def merge(self, journey_id: str, customer_id: str, merge: contract.MergeSignal) -> bool:
        """Signal `merge` to a running enrollment; False when it is no longer running."""
        ...


class TemporalJourneyCalls:
    """`JourneyCalls` on a Temporal client, bounded and counted."""

    def __init__(
        self, client: Client, *, task_queue: str = contract.TASK_QUEUE, concurrency: int = 32
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._slots = asyncio.Semaphore(concurrency)

    async def start(self, request: contract.JourneyInput, event: contract.EventSignal) -> None:
        workflow_id = contract.workflow_id(request.journey_id, request.customer_id)
        # In the event's trace (the stream's span for it): the client's TracingInterceptor,
        # when tracing is on, carries it into the workflow and its activities.
        context = tracing.context_from_trace(event.traceparent)
        async with self._slots:
            TEMPORAL_CALLS.labels("signal_with_start").inc()
            # Signal-with-start: starts the run, or only signals it if it is running already
            # (a redelivered trigger); the workflow dedupes on the event id. ALLOW_DUPLICATE:
            # re-entry after a finished run is decided by the enrollment record, not Temporal.
            with tracing.attached(context):
                await self._client.start_workflow(
                    WORKFLOW_TYPE,
                    request,
                    id=workflow_id,
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    start_signal=contract.SIGNAL_TOUCHPOINT,
                    start_signal_args=[event],
                )

    async def signal(self, journey_id: str, customer_id: str, event: contract.EventSignal) -> bool:
        handle = self._client.get_workflow_handle(contract.workflow_id(journey_id, customer_id))
        context = tracing.context_from_trace(event.traceparent)
        async with self._slots:
            TEMPORAL_CALLS.labels("signal").inc()
            try:
                with tracing.attached(context):
                    await handle.signal(contract.SIGNAL_TOUCHPOINT, event)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return False  # the run finished: its `awaits` entry is stale
                raise
        return True

    async def merge(self, journey_id: str, customer_id: str, merge: contract.MergeSignal) -> bool:
        handle = self._client.get_workflow_handle(contract.workflow_id(journey_id, customer_id))
        async with self._slots:
            TEMPORAL_CALLS.labels("signal").inc()
            try:
                await handle.signal(contract.SIGNAL_MERGE, merge)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return False
                raise
        return True
