"""The customer's memory as CEL sees it (`customer`), read for the workflow's conditions and
local-time waits.

The mapping itself is `enishi.journeys.context.customer_variables`, shared with the stream
processor. Times cross the Temporal boundary as ISO text; `from_wire` turns them back into
datetimes on the workflow side so CEL compares timestamps the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from temporalio import activity

from enishi.journeys.context import customer_variables
from enishi.memory.reader import MemoryReader

TIME_FIELDS: Final = (
    "first_order_at",
    "last_order_at",
    "last_contact_at",
    "last_seen_at",
    "last_message_at",
    "created_at",
)


@dataclass(frozen=True)
class ContextRequest:
    customer_id: str
    now: str  # workflow time, ISO 8601 UTC: the lifecycle phase is computed at it


@dataclass(frozen=True)
class CustomerContext:
    """`customer` for CEL (times as ISO text) and the customer's IANA time zone ('' if none)."""

    variables: dict[str, Any] = field(default_factory=dict)
    time_zone: str = ""


class CustomerContextActivities:
    """Reads customer memory through `MemoryReader` (one pipelined round trip)."""

    def __init__(self, reader: MemoryReader) -> None:
        self._reader = reader

    @activity.defn(name="customer_context")
    async def customer_context(self, req: ContextRequest) -> CustomerContext:
        view = await self._reader.customer(
            req.customer_id, timeline_limit=0, now=datetime.fromisoformat(req.now)
        )
        variables = customer_variables(req.customer_id, view)
        for name in TIME_FIELDS:
            value = variables.get(name)
            if isinstance(value, datetime):
                variables[name] = value.isoformat()
        time_zone = view.preferences.time_zone if view is not None else ""
        return CustomerContext(variables=variables, time_zone=time_zone)


def from_wire(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The activity's variables with ISO times back as datetimes (pure; used in the workflow)."""
    result = dict(variables)
    for name in TIME_FIELDS:
        value = result.get(name)
        if isinstance(value, str) and value:
            result[name] = datetime.fromisoformat(value)
    return result
