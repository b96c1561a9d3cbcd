"""The demo's accounting: what became of every enrollment of this run's customers.

Read from Kafka, where every part of enishi writes what it did: `journey.entered` (the
worker's journal), `dispatch.<channel>` (the send activity), `message.sent` /
`message.failed` (the channel services' receipts), `message.deferred` / `message.skipped`
(the send activity's or the workflow's SKIP touchpoints, with their reason). An enrollment is
(journey, customer); its state is the furthest its send got.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError

from enishi import topics
from enishi.memory.model import channel_name
from enishi.v1 import dispatch_pb2, journey_pb2, touchpoint_pb2

State = Literal["waiting", "deferred", "dispatched", "sent", "failed", "skipped"]
STATES: Final[tuple[State, ...]] = (
    "sent",
    "failed",
    "deferred",
    "skipped",
    "dispatched",
    "waiting",
)
_RANK: Final[dict[State, int]] = {
    "waiting": 0,
    "deferred": 1,
    "dispatched": 2,
    "sent": 3,
    "failed": 3,
    "skipped": 3,
}
_EVENT_KINDS: Final = (
    touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
    touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED,
)
SENT: Final = "message.sent"
FAILED: Final = "message.failed"
DEFERRED: Final = "message.deferred"
SKIPPED: Final = "message.skipped"


@dataclass
class Enrollment:
    """One (journey, customer) of this run, and the furthest its send got."""

    journey_id: str
    customer_id: str
    entered: bool = False
    holdout: bool = False
    version: int = 0
    state: State = "waiting"
    channel: str = ""
    reason: str = ""  # skip / deferral reason, or the failure's error code

    def advance(self, state: State, *, channel: str = "", reason: str = "") -> None:
        if _RANK[state] >= _RANK[self.state]:
            self.state = state
            self.channel = channel or self.channel
            self.reason = reason


def _skip_reason(value: int) -> str:
    return dispatch_pb2.SkipReason.Name(value).removeprefix("SKIP_REASON_").lower()  # type: ignore[arg-type]


@dataclass
class Tally:
    """Everything the demo has seen of its own customers on Kafka."""

    prefix: str
    enrollments: dict[tuple[str, str], Enrollment] = field(default_factory=dict)
    events_seen: int = 0
    last_change: float = 0.0

    def _enrollment(self, journey_id: str, customer_id: str) -> Enrollment:
        key = (journey_id, customer_id)
        if key not in self.enrollments:
            self.enrollments[key] = Enrollment(journey_id, customer_id)
        return self.enrollments[key]

    def touchpoint(self, tp: touchpoint_pb2.Touchpoint) -> bool:
        """Count one touchpoint; True when it changed the accounting."""
        if not tp.customer_id.startswith(self.prefix):
            return False
        detail = tp.WhichOneof("detail")
        if detail == "journey":
            event = tp.journey
            if event.transition != journey_pb2.JOURNEY_TRANSITION_ENTERED:
                return False
            enrollment = self._enrollment(event.journey_id, tp.customer_id)
            enrollment.entered = True
            enrollment.version = event.version
            enrollment.holdout = event.group == journey_pb2.ENROLLMENT_GROUP_HOLDOUT
            return True
        if detail == "receipt" and tp.name in (SENT, FAILED):
            receipt = tp.receipt
            enrollment = self._enrollment(receipt.reason.journey_id, tp.customer_id)
            channel = channel_name(receipt.channel)
            if tp.name == SENT:
                enrollment.advance("sent", channel=channel)
            else:
                enrollment.advance("failed", channel=channel, reason=receipt.error_code)
            return True
        if detail == "skipped":
            skipped = tp.skipped
            enrollment = self._enrollment(skipped.reason.journey_id, tp.customer_id)
            state: State = "deferred" if tp.name == DEFERRED else "skipped"
            enrollment.advance(state, reason=_skip_reason(skipped.skip_reason))
            return True
        if tp.kind in (
            touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
            touchpoint_pb2.TOUCHPOINT_KIND_UNSPECIFIED,
        ):
            self.events_seen += 1
        return False

    def dispatch(self, event: dispatch_pb2.DispatchEvent) -> bool:
        if not event.customer_id.startswith(self.prefix):
            return False
        enrollment = self._enrollment(event.reason.journey_id, event.customer_id)
        enrollment.advance("dispatched", channel=channel_name(event.channel))
        return True

    # -- views ------------------------------------------------------------------------

    def entered(self) -> list[Enrollment]:
        return [e for e in self.enrollments.values() if e.entered]

    def orphans(self) -> list[Enrollment]:
        """Outcomes whose enrollment never reported `journey.entered`."""
        return [e for e in self.enrollments.values() if not e.entered]

    def states(self, journey_id: str | None = None) -> Counter[State]:
        return Counter(
            e.state for e in self.entered() if journey_id is None or e.journey_id == journey_id
        )

    def by_journey(self) -> Counter[str]:
        return Counter(e.journey_id for e in self.entered())

    def sent_by_channel(self) -> Counter[str]:
        return Counter(e.channel for e in self.entered() if e.state == "sent")

    def reasons(self, state: State) -> Counter[str]:
        return Counter(e.reason or "-" for e in self.entered() if e.state == state)

    def pending(self) -> int:
        """Enrollments whose send is not decided yet, or dispatched without a receipt."""
        counts = self.states()
        return counts["waiting"] + counts["dispatched"]


class TallyReader:
    """Follows `touchpoints` and every `dispatch.<channel>` from their end at `start()`."""

    def __init__(self, bootstrap: str, tally: Tally) -> None:
        self.tally = tally
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Positions are resolved before this returns: nothing produced later is missed."""
        await self._consumer.start()
        names = [topics.TOUCHPOINTS, *(topics.dispatch(c) for c in topics.CHANNELS)]
        await self._consumer.topics()  # fetches metadata for every topic
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(self._consumer.partitions_for_topic(name) or ())
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for partition, records in batch.items():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        if partition.topic == topics.TOUCHPOINTS:
                            changed = self.tally.touchpoint(
                                touchpoint_pb2.Touchpoint.FromString(record.value)
                            )
                        else:
                            changed = self.tally.dispatch(
                                dispatch_pb2.DispatchEvent.FromString(record.value)
                            )
                    except DecodeError:  # a malformed record is the DLQ's business, not ours
                        continue
                    if changed:
                        self.tally.last_change = loop.time()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
