"""App push in the FCM HTTP v1 request shape: `POST /v1/projects/{project}/messages:send`.

FCM has no idempotency key. The dispatch id travels as `data.enishi_dispatch_id` (apps can
drop a copy) and, hashed, as the Android `collapse_key` and the APNs `apns-collapse-id`, so
a copy resent after a crash mid-send replaces the first notification instead of adding one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from enishi.channels.http import JsonClient, outcome_for
from enishi.channels.protocol import DeliveryOutcome
from enishi.config import PushSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "fcm"
DISPATCH_ID_DATA_KEY: Final = "enishi_dispatch_id"


def collapse_id(dispatch_id: str) -> str:
    """A collapse key for both platforms (apns-collapse-id allows 64 bytes)."""
    return hashlib.sha256(dispatch_id.encode()).hexdigest()[:32]


def message_body(dispatch: dispatch_pb2.DispatchEvent) -> dict[str, Any]:
    """The JSON body of an FCM v1 send request."""
    content = dispatch.push
    notification: dict[str, str] = {"title": content.title, "body": content.body}
    if content.image_url:
        notification["image"] = content.image_url
    collapse = collapse_id(dispatch.dispatch_id)
    return {
        "message": {
            "token": dispatch.address,
            "notification": notification,
            "data": {**content.data, DISPATCH_ID_DATA_KEY: dispatch.dispatch_id},
            "android": {"collapse_key": collapse},
            "apns": {"headers": {"apns-collapse-id": collapse}},
        }
    }


class FcmSender:
    """Sends push dispatches in the FCM HTTP v1 shape."""

    provider = PROVIDER

    def __init__(self, settings: PushSettings) -> None:
        self._url = (
            f"{settings.push_api_url.rstrip('/')}/v1/projects/{settings.push_project_id}"
            "/messages:send"
        )
        self._token = settings.push_access_token
        self._client = JsonClient(timeout_seconds=settings.channel_send_timeout_seconds)

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        reply = await self._client.post(
            self._url,
            message_body(dispatch),
            {"Authorization": f"Bearer {self._token.get_secret_value()}"},
        )
        name = reply.body.get("name", "") if isinstance(reply.body, dict) else ""
        return outcome_for(reply, str(name))

    async def aclose(self) -> None:
        await self._client.aclose()
