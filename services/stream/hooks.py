"""The seam where journey trigger evaluation plugs in: called once per applied batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from enishi.v1 import touchpoint_pb2


@dataclass(frozen=True)
class AppliedBatch:
    """The valid touchpoints of one batch, after their memory writes are durable.

    `duplicates` were already in memory: normally redeliveries, but also the events of a
    batch whose hook failed before its offsets were committed. A hook that must see every
    event at least once (trigger evaluation) looks at both and dedupes on its own ids (the
    workflow id does that for journeys).
    """

    applied: Sequence[touchpoint_pb2.Touchpoint]
    duplicates: Sequence[touchpoint_pb2.Touchpoint]


class BatchHook(Protocol):
    """Runs after a batch's memory writes and before its offsets are committed."""

    async def on_applied(self, batch: AppliedBatch) -> None:
        """React to a batch; raising makes the batch (and this call) be retried."""
        ...


class Hooks:
    """Several hooks run in order as one (the first to raise stops the rest and the batch)."""

    def __init__(self, *hooks: BatchHook) -> None:
        self._hooks = hooks

    async def on_applied(self, batch: AppliedBatch) -> None:
        for hook in self._hooks:
            await hook.on_applied(batch)
