"""LINE Messaging API push (`POST /v2/bot/message/push`) with `X-Line-Retry-Key`.

LINE accepts a retry key only in UUID form, so it is a UUIDv5 of the dispatch id: the same
dispatch always carries the same key. A retried request LINE already accepted answers 409
with `X-Line-Accepted-Request-Id`: the message went out once, which counts as sent.
"""

from __future__ import annotations

import uuid
from typing import Final

from google.protobuf import json_format

from enishi.channels.http import JsonClient, outcome_for
from enishi.channels.protocol import DeliveryOutcome
from enishi.config import LineSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "line"
PUSH_PATH: Final = "/v2/bot/message/push"
RETRY_KEY_HEADER: Final = "X-Line-Retry-Key"
ACCEPTED_REQUEST_HEADER: Final = "X-Line-Accepted-Request-Id"
REQUEST_ID_HEADER: Final = "X-Line-Request-Id"
MAX_MESSAGES: Final = 5
# Fixed namespace for retry keys: changing it would re-send every in-flight dispatch.
RETRY_KEY_NAMESPACE: Final = uuid.UUID("6f1c2a4e-4b1d-5e0c-9a57-3d0c1e2b7a10")


def retry_key(dispatch_id: str) -> str:
    """The `X-Line-Retry-Key` of a dispatch: a UUID derived deterministically from its id."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, dispatch_id))


def push_body(dispatch: dispatch_pb2.DispatchEvent) -> dict[str, object]:
    """The JSON body of a push request."""
    return {
        "to": dispatch.address,
        "messages": [json_format.MessageToDict(m) for m in dispatch.line.messages],
        "notificationDisabled": dispatch.line.notification_disabled,
    }


class LinePushSender:
    """Pushes LINE dispatches to the Messaging API."""

    provider = PROVIDER

    def __init__(self, settings: LineSettings) -> None:
        self._url = settings.line_api_url.rstrip("/") + PUSH_PATH
        self._token = settings.line_channel_access_token
        self._client = JsonClient(timeout_seconds=settings.channel_send_timeout_seconds)

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        count = len(dispatch.line.messages)
        if not 1 <= count <= MAX_MESSAGES:
            return DeliveryOutcome.permanent(
                "invalid_content", f"line.messages: {count} messages, expected 1 to {MAX_MESSAGES}"
            )
        reply = await self._client.post(
            self._url,
            push_body(dispatch),
            {
                "Authorization": f"Bearer {self._token.get_secret_value()}",
                RETRY_KEY_HEADER: retry_key(dispatch.dispatch_id),
            },
        )
        if reply.status == 409 and ACCEPTED_REQUEST_HEADER in reply.headers:
            return DeliveryOutcome.sent(reply.headers[ACCEPTED_REQUEST_HEADER])
        return outcome_for(reply, reply.headers.get(REQUEST_ID_HEADER, ""))

    async def aclose(self) -> None:
        await self._client.aclose()
