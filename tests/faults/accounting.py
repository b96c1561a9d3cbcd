"""The fault suite's accounting: what enishi promised against what the stack holds afterwards.

- **Timelines**: every acknowledged touchpoint id is in its customer's timeline exactly once,
  and the memory counted each tracked event and order once (`events_count`, `orders_count`:
  a double application would show there even where the timeline cannot repeat an entry).
- **Sends**: every dispatch the journeys decided on (`dispatch.<channel>`, deduped by dispatch
  id) is in the provider sandbox's ledger exactly once. Ledger entries the sandbox recognised as
  a repeated idempotency key (`duplicate: true`) are the provider dropping a retried copy: the
  customer got one message, so they are reported but are not duplicates.
- **Enrollments**: every acknowledged first order has exactly one enrollment, and each has
  ended (Temporal visibility). The fault journey's only wait is seconds long and the
  population has no quiet hours and stays under the frequency caps, so nothing may
  legitimately wait: an enrollment still running after the drain is stuck.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from enishi import topics
from enishi.channels.line import retry_key
from enishi.channels.push import DISPATCH_ID_DATA_KEY
from enishi.memory.reader import MemoryReader
from enishi.v1 import dispatch_pb2
from services.sandbox.ledger import Ledger
from tests.faults.load import Acknowledged
from tests.integration.channels_support import read_topic
from workflows import contract

READ_CONCURRENCY = 32
TIMELINE_LIMIT = 200  # the memory keeps 200 entries in full; a customer here has ~30


@dataclass
class Timelines:
    """Acknowledged touchpoints found in their customers' memory."""

    accepted: int = 0
    found: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    miscounted: list[str] = field(default_factory=list)


async def timelines(redis: Redis, acknowledged: Acknowledged) -> Timelines:
    """Read every customer's memory back and compare it with what was acknowledged."""
    result = Timelines(accepted=acknowledged.event_count)
    reader = MemoryReader(redis)
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(customer_id: str, event_ids: set[str]) -> None:
        async with slots:
            view = await reader.customer(customer_id, timeline_limit=TIMELINE_LIMIT)
        if view is None:
            result.missing += sorted(event_ids)
            return
        seen = Counter(entry.event_id for entry in view.timeline)
        for event_id in event_ids:
            if seen[event_id] == 0:
                result.missing.append(event_id)
                continue
            result.found += 1
            if seen[event_id] > 1:
                result.duplicated.append(event_id)
        counted = (view.counters.events_count, view.counters.orders_count)
        expected = (
            acknowledged.tracked.get(customer_id, 0),
            acknowledged.orders.get(customer_id, 0),
        )
        if counted != expected:
            result.miscounted.append(f"{customer_id}: counted {counted}, sent {expected}")

    await asyncio.gather(*(one(c, ids) for c, ids in acknowledged.events.items()))
    return result


@dataclass
class Sends:
    """Dispatches decided (by id, their channel) against the sandbox ledger's deliveries."""

    decided: dict[str, str] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)
    provider_deduped: int = 0

    @property
    def lost(self) -> list[str]:
        return sorted(d for d in self.decided if self.delivered[d] == 0)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for d, count in self.delivered.items() if count > 1)

    @property
    def unexpected(self) -> list[str]:
        """Deliveries of dispatches nobody decided on."""
        return sorted(d for d in self.delivered if d not in self.decided)

    def by_channel(self) -> dict[str, int]:
        return dict(sorted(Counter(self.decided.values()).items()))


async def decided(bootstrap: str) -> dict[str, str]:
    """Every dispatch on `dispatch.<channel>`, deduped by id (a retried send publishes twice)."""
    found: dict[str, str] = {}
    for channel in topics.CHANNELS:
        for record in await read_topic(bootstrap, topics.dispatch(channel)):
            try:
                event = dispatch_pb2.DispatchEvent.FromString(record.value or b"")
            except DecodeError:
                continue  # the suite's own garbage record
            if event.dispatch_id:
                found[event.dispatch_id] = channel
    return found


def _dispatch_id(entry: Mapping[str, Any], line_keys: Mapping[str, str]) -> str:
    """The dispatch a ledger entry delivered, from what each provider is given."""
    provider, request = entry["provider"], entry["request"]
    if provider == "smtp":
        return str(request["dispatch_id"])  # X-Enishi-Dispatch-Id
    if provider == "line":
        key = str(entry["idempotency_key"])  # X-Line-Retry-Key: UUIDv5 of the dispatch id
        return line_keys.get(key, f"unknown LINE retry key {key}")
    if provider == "sms":
        return str(entry["idempotency_key"])  # Idempotency-Key: the dispatch id
    return str(request["data"][DISPATCH_ID_DATA_KEY])  # FCM: data.enishi_dispatch_id


async def sends(bootstrap: str, redis: Redis) -> Sends:
    result = Sends(decided=await decided(bootstrap))
    line_keys = {retry_key(d): d for d, channel in result.decided.items() if channel == "line"}
    for entry in await Ledger(redis).entries():
        if entry["duplicate"]:
            result.provider_deduped += 1
        else:
            result.delivered[_dispatch_id(entry, line_keys)] += 1
    return result


@dataclass
class Enrollments:
    """The fault journey's workflows in Temporal visibility."""

    expected: set[str] = field(default_factory=set)
    runs: dict[str, list[WorkflowExecutionStatus]] = field(default_factory=dict)

    def _with(self, *statuses: WorkflowExecutionStatus) -> list[str]:
        return sorted(w for w, runs in self.runs.items() if runs[-1] in statuses)

    @property
    def completed(self) -> list[str]:
        return self._with(WorkflowExecutionStatus.COMPLETED)

    @property
    def running(self) -> list[str]:
        return self._with(WorkflowExecutionStatus.RUNNING)

    @property
    def broken(self) -> list[str]:
        """Ended, but not as a journey ends: failed, terminated, timed out, cancelled."""
        return self._with(
            WorkflowExecutionStatus.FAILED,
            WorkflowExecutionStatus.TERMINATED,
            WorkflowExecutionStatus.TIMED_OUT,
            WorkflowExecutionStatus.CANCELED,
        )

    @property
    def missing(self) -> list[str]:
        return sorted(self.expected - set(self.runs))

    @property
    def doubled(self) -> list[str]:
        """Enrolled more than once (a continue-as-new chain is one enrollment)."""
        return sorted(
            w
            for w, runs in self.runs.items()
            if sum(s != WorkflowExecutionStatus.CONTINUED_AS_NEW for s in runs) > 1
        )

    @property
    def settled(self) -> bool:
        return not self.running and not self.missing


async def enrollments(temporal: Client, journey_id: str, customers: Iterable[str]) -> Enrollments:
    result = Enrollments(expected={contract.workflow_id(journey_id, c) for c in customers})
    prefix = contract.workflow_id(journey_id, "")
    found: list[tuple[Any, str, WorkflowExecutionStatus]] = []
    async for execution in temporal.list_workflows("WorkflowType = 'JourneyWorkflow'"):
        if execution.id.startswith(prefix) and execution.status is not None:
            found.append((execution.start_time, execution.id, execution.status))
    for _, workflow_id, status in sorted(found, key=lambda f: (f[0], f[1])):
        result.runs.setdefault(workflow_id, []).append(status)
    return result


async def why_running(temporal: Client, workflow_ids: Iterable[str]) -> list[str]:
    """For a stuck enrollment: its current step and what its pending activities last said."""
    lines = []
    for workflow_id in workflow_ids:
        handle = temporal.get_workflow_handle(workflow_id)
        try:
            described = await handle.describe()
            step = await handle.query(contract.QUERY_CURRENT_STEP)
        except RPCError as exc:
            lines.append(f"{workflow_id}: not described ({exc})")
            continue
        pending = [
            f"{a.activity_type.name} attempt {a.attempt}: {a.last_failure.message}"
            for a in described.raw_description.pending_activities
        ]
        lines.append(f"{workflow_id} at {step!r}: {pending or 'no pending activity'}")
    return lines
