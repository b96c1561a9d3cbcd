"""Running enrollments as Temporal visibility sees them: count, group by step, signal.

Journey workflows upsert the `workflows.contract.SEARCH_ATTRIBUTES` (`EnishiJourneyId`,
`EnishiJourneyVersion`, `EnishiStep`), so the registry finds them without asking any worker.
Visibility is eventually consistent: an enrollment started a moment ago may not be listed yet
(docs/registry.md says what that means for pause and migrate).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import structlog
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from enishi.errors import Unavailable
from workflows.contract import SIGNAL_CANCEL, SIGNAL_MIGRATE, CancelSignal, MigrateSignal

RPC_TIMEOUT: Final = timedelta(seconds=10)
SIGNAL_CONCURRENCY: Final = 32
UNKNOWN_STEP: Final = ""
"""`by_step` key for running enrollments whose `EnishiStep` is unset or not a listed step."""

log = structlog.get_logger(__name__)


def _literal(value: str) -> str:
    # Journey and step ids are slugs; anything that would need escaping is refused instead.
    if not value or any(c in value for c in "'\"\\\n"):
        raise ValueError(f"not a visibility literal: {value!r}")
    return f"'{value}'"


def running_query(journey_id: str, version: int | None = None, step: str | None = None) -> str:
    """Visibility query for the running enrollments of a journey (a version, a step)."""
    query = f"EnishiJourneyId = {_literal(journey_id)} AND ExecutionStatus = 'Running'"
    if version is not None:
        query += f" AND EnishiJourneyVersion = {int(version)}"
    if step is not None:
        query += f" AND EnishiStep = {_literal(step)}"
    return query


@dataclass(frozen=True)
class SignalResult:
    """How many running enrollments accepted the signal; `failed`: gone meanwhile or refused."""

    delivered: int = 0
    failed: int = 0


@contextlib.asynccontextmanager
async def temporal_errors(what: str) -> AsyncIterator[None]:
    """Temporal down or timing out is UNAVAILABLE (retry), never INTERNAL."""
    try:
        yield
    except RPCError as exc:
        if exc.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
        ):
            raise Unavailable(f"Temporal unavailable while {what}; retry with backoff") from exc
        raise


class Enrollments:
    """Counts and signals running journey workflows through one Temporal client."""

    def __init__(self, client: Client, *, signal_concurrency: int = SIGNAL_CONCURRENCY) -> None:
        self._client = client
        self._concurrency = signal_concurrency
        self._group_by_step: bool | None = None  # learnt on first use

    @property
    def client(self) -> Client:
        """The Temporal client (the journey schedules share it)."""
        return self._client

    async def count(self, journey_id: str, version: int | None = None) -> int:
        """Running enrollments of the journey (of one version)."""
        async with temporal_errors("counting enrollments"):
            result = await self._client.count_workflows(
                running_query(journey_id, version), rpc_timeout=RPC_TIMEOUT
            )
        return result.count

    async def by_step(self, journey_id: str, version: int, steps: Iterable[str]) -> dict[str, int]:
        """Running enrollments of one version per current step (only steps with some).

        Uses `GROUP BY EnishiStep` where visibility supports it; otherwise (the dev server's
        SQLite visibility groups by ExecutionStatus only) one count per step of `steps` and a
        total, so nothing has to be listed. Enrollments at no listed step are under
        UNKNOWN_STEP.
        """
        steps = list(dict.fromkeys(steps))
        if self._group_by_step is not False:
            grouped = await self._grouped(journey_id, version)
            if grouped is not None:
                return grouped
        async with temporal_errors("counting enrollments per step"):
            total, *per_step = await asyncio.gather(
                self._client.count_workflows(
                    running_query(journey_id, version), rpc_timeout=RPC_TIMEOUT
                ),
                *(
                    self._client.count_workflows(
                        running_query(journey_id, version, step), rpc_timeout=RPC_TIMEOUT
                    )
                    for step in steps
                ),
            )
        found = {step: c.count for step, c in zip(steps, per_step, strict=True) if c.count}
        rest = total.count - sum(found.values())
        if rest > 0:
            found[UNKNOWN_STEP] = rest
        return found

    async def _grouped(self, journey_id: str, version: int) -> dict[str, int] | None:
        query = running_query(journey_id, version) + " GROUP BY EnishiStep"
        try:
            async with temporal_errors("counting enrollments per step"):
                result = await self._client.count_workflows(query, rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status is not RPCStatusCode.INVALID_ARGUMENT:
                raise
            self._group_by_step = False
            log.info("registry.visibility_group_by_unsupported", detail=exc.message)
            return None
        self._group_by_step = True
        found: dict[str, int] = {}
        for group in result.groups:
            value = group.group_values[0] if group.group_values else None
            key = value if isinstance(value, str) and value else UNKNOWN_STEP
            found[key] = found.get(key, 0) + group.count
        return found

    async def workflows(self, query: str) -> list[tuple[str, str]]:
        """(workflow id, run id) of every execution matching `query`."""
        found: list[tuple[str, str]] = []
        async with temporal_errors("listing enrollments"):
            async for execution in self._client.list_workflows(query, rpc_timeout=RPC_TIMEOUT):
                found.append((execution.id, execution.run_id))
        return found

    async def cancel(self, journey_id: str, reason: str) -> SignalResult:
        """Signal `cancel` to every running enrollment of the journey, all versions."""
        targets = await self.workflows(running_query(journey_id))
        return await self._signal(targets, SIGNAL_CANCEL, CancelSignal(reason=reason))

    async def migrate(
        self, journey_id: str, from_version: int, steps: Iterable[str], signal: MigrateSignal
    ) -> SignalResult:
        """Signal `migrate` to the running enrollments of `from_version` at `steps`."""
        targets: list[tuple[str, str]] = []
        for step in steps:
            targets += await self.workflows(running_query(journey_id, from_version, step))
        return await self._signal(targets, SIGNAL_MIGRATE, signal)

    async def _signal(self, targets: list[tuple[str, str]], name: str, arg: Any) -> SignalResult:
        limit = asyncio.Semaphore(self._concurrency)
        outcomes: dict[str, bool] = {}

        async def one(workflow_id: str, run_id: str) -> None:
            async with limit:
                handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
                try:
                    async with temporal_errors(f"signalling {name}"):
                        await handle.signal(name, arg, rpc_timeout=RPC_TIMEOUT)
                    outcomes[workflow_id] = True
                except RPCError as exc:
                    # Completed (or cancelled) since it was listed: nothing left to signal.
                    log.info(
                        "registry.signal_failed",
                        signal=name,
                        workflow_id=workflow_id,
                        code=exc.status.name,
                    )
                    outcomes[workflow_id] = False

        errors = await asyncio.gather(*(one(w, r) for w, r in targets), return_exceptions=True)
        for error in errors:
            if isinstance(error, BaseException):
                raise error  # Temporal went away mid-way: UNAVAILABLE, the caller retries
        delivered = sum(1 for ok in outcomes.values() if ok)
        return SignalResult(delivered=delivered, failed=len(outcomes) - delivered)
