"""What every provider adapter implements: `deliver(dispatch) -> DeliveryOutcome`.

The framework (enishi/channels/consumer.py) owns dedupe, rate limits, retries, receipts and
dead letters; an adapter only speaks its provider's protocol once and says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from enishi.v1 import dispatch_pb2

OutcomeKind = Literal["sent", "transient", "permanent"]


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one provider call came to.

    `sent`: the provider accepted the message (or had already accepted it under the same
    idempotency key). `transient`: worth retrying (5xx, 429, timeouts), after `retry_after`
    seconds when the provider said so. `permanent`: retrying cannot help (4xx, bad address).
    `error_code` is machine-readable (`http_503`, `smtp_550`, `timeout`); `error_message`
    carries no personal data.
    """

    kind: OutcomeKind
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    retry_after: float | None = None

    @classmethod
    def sent(cls, provider_message_id: str = "") -> DeliveryOutcome:
        """The provider accepted the message."""
        return cls("sent", provider_message_id=provider_message_id)

    @classmethod
    def transient(
        cls, error_code: str, error_message: str = "", *, retry_after: float | None = None
    ) -> DeliveryOutcome:
        """A failure worth retrying, after `retry_after` seconds when given."""
        return cls(
            "transient", error_code=error_code, error_message=error_message, retry_after=retry_after
        )

    @classmethod
    def permanent(cls, error_code: str, error_message: str = "") -> DeliveryOutcome:
        """A failure retrying cannot help."""
        return cls("permanent", error_code=error_code, error_message=error_message)


class ChannelSender(Protocol):
    """A provider adapter for one channel.

    `deliver` makes one attempt and must pass `dispatch.dispatch_id` (or a value derived
    from it) to the provider as its idempotency key: the framework calls it again with the
    same dispatch after a crash mid-send, and only the provider can tell it already went.
    It may raise on network errors and timeouts; the framework counts those as transient.
    """

    @property
    def provider(self) -> str:
        """The adapter's name in receipts and rate-limit buckets, e.g. "smtp", "line"."""
        ...

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        """One delivery attempt."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the service stops."""
        ...
