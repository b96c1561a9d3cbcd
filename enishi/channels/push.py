"""App push in the FCM HTTP v1 request shape: `POST /v1/projects/{project}/messages:send`.

FCM has no idempotency key. The dispatch id travels as `data.enishi_dispatch_id` (apps can
drop a copy) and, hashed, as the Android `collapse_key` and the APNs `apns-collapse-id`, so
a copy resent after a crash mid-send replaces the first notification instead of adding one.

A token FCM no longer knows (404 `UNREGISTERED`: the app was removed) or that is no token
(400 `INVALID_ARGUMENT` about `message.token`) is a dead address: `unregistered` /
`invalid_token`, and push becomes unreachable for the customer (enishi/channels/feedback.py).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from enishi.channels import feedback
from enishi.channels.http import HttpReply, JsonClient, error_detail, outcome_for
from enishi.channels.protocol import DeliveryOutcome
from enishi.config import PushSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "fcm"
DISPATCH_ID_DATA_KEY: Final = "enishi_dispatch_id"
FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE: Final = "type.googleapis.com/google.rpc.BadRequest"
TOKEN_FIELD: Final = "message.token"


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


def dead_token(reply: HttpReply) -> str:
    """`unregistered` or `invalid_token` when FCM's error is about the token; else "".

    FCM v1 errors carry `error.details`: an `FcmError` with `errorCode`, and for bad request
    values a `BadRequest` naming the fields. `INVALID_ARGUMENT` is about the token when the
    BadRequest names `message.token`, or when there is no BadRequest at all (FCM's answer to
    a malformed registration token).
    """
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if reply.status not in (400, 404) or not isinstance(details, list):
        return ""
    codes, fields = set(), set()
    for detail in details:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE:
            codes.add(str(detail.get("errorCode", "")))
        elif detail.get("@type") == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations")
            for violation in violations if isinstance(violations, list) else ():
                if isinstance(violation, dict):
                    fields.add(str(violation.get("field", "")))
    if "UNREGISTERED" in codes:
        return feedback.UNREGISTERED
    if TOKEN_FIELD in fields or ("INVALID_ARGUMENT" in codes and not fields):
        return feedback.INVALID_TOKEN
    return ""


def outcome_of(reply: HttpReply, provider_message_id: str = "") -> DeliveryOutcome:
    """What FCM's reply means: a dead token is permanent and says so; the rest as any HTTP."""
    dead = dead_token(reply)
    if dead:
        return DeliveryOutcome.permanent(dead, error_detail(reply))
    return outcome_for(reply, provider_message_id)


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
        return outcome_of(reply, str(name))

    async def aclose(self) -> None:
        await self._client.aclose()
