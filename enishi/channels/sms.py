"""SMS through a generic REST provider, shaped like the common SMS APIs (docs/channels.md).

`POST <base>/v1/messages`, `Authorization: Bearer <api key>`, `Idempotency-Key: <dispatch
id>`, JSON `{"to": "+8190...", "from": "<sender>", "body": "<text>"}`; 200/201 with
`{"id": "<provider message id>", "status": "queued"}`. A replayed idempotency key answers
the first request's reply again, so a resend after a crash is one SMS.

An error reply may name a machine-readable `code`; `invalid_number` (no such number, or
one that cannot take SMS) is a dead address, and SMS becomes unreachable for the customer
(enishi/channels/feedback.py).
"""

from __future__ import annotations

from typing import Final

from enishi.channels import feedback
from enishi.channels.http import HttpReply, JsonClient, outcome_for
from enishi.channels.protocol import DeliveryOutcome
from enishi.config import SmsSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "sms-http"
MESSAGES_PATH: Final = "/v1/messages"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
INVALID_NUMBER_CODE: Final = "invalid_number"


def outcome_of(reply: HttpReply, provider_message_id: str = "") -> DeliveryOutcome:
    """What the provider's reply means: a 4xx `invalid_number` is a dead address."""
    body = reply.body
    code = body.get("code") if isinstance(body, dict) else None
    if 400 <= reply.status < 500 and code == INVALID_NUMBER_CODE:
        # Not the provider's message: it tends to quote the number.
        return DeliveryOutcome.permanent(
            feedback.INVALID_NUMBER, f"HTTP {reply.status}: {INVALID_NUMBER_CODE}"
        )
    return outcome_for(reply, provider_message_id)


class HttpSmsSender:
    """Sends SMS dispatches to a generic REST SMS provider."""

    provider = PROVIDER

    def __init__(self, settings: SmsSettings) -> None:
        self._url = settings.sms_api_url.rstrip("/") + MESSAGES_PATH
        self._key = settings.sms_api_key
        self._sender = settings.sms_sender
        self._client = JsonClient(timeout_seconds=settings.channel_send_timeout_seconds)

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        if not dispatch.sms.text:
            return DeliveryOutcome.permanent("invalid_content", "sms.text: empty")
        reply = await self._client.post(
            self._url,
            {
                "to": dispatch.address,
                "from": dispatch.sms.sender or self._sender,
                "body": dispatch.sms.text,
            },
            {
                "Authorization": f"Bearer {self._key.get_secret_value()}",
                IDEMPOTENCY_HEADER: dispatch.dispatch_id,
            },
        )
        message_id = reply.body.get("id", "") if isinstance(reply.body, dict) else ""
        return outcome_of(reply, str(message_id))

    async def aclose(self) -> None:
        await self._client.aclose()
