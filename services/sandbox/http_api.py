"""The sandbox's HTTP side: the LINE, SMS and FCM request shapes, and the `/sandbox` admin API.

Provider routes check requests as the real APIs do (bearer token present, recipient format,
UUID retry keys), apply configured faults, and record accepted deliveries in the ledger.
Admin routes: `GET/DELETE /sandbox/ledger`, `GET/POST/DELETE /sandbox/faults`,
`POST /sandbox/inbound/line` (a signed LINE webhook event to the LINE service) and
`POST /sandbox/inbound/email` (an open or click receipt onto `touchpoints`, or the RFC 8058
one-click unsubscribe POST a mailbox provider makes to a delivered email's link).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi.channels.consumer import DeliveryRecords
from enishi.channels.push import FCM_ERROR_TYPE
from enishi.channels.receipts import receipt_touchpoint
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import dispatch_pb2
from services.sandbox.faults import Fault, Faults
from services.sandbox.ledger import Ledger

LINE_USER_ID: Final = re.compile(r"U[0-9a-f]{32}")
E164: Final = re.compile(r"\+[1-9][0-9]{7,14}")
INBOUND_EMAIL_KINDS: Final = {
    "open": dispatch_pb2.DELIVERY_STATUS_OPENED,
    "click": dispatch_pb2.DELIVERY_STATUS_CLICKED,
}
LINE_INBOUND_KINDS: Final = ("message", "follow", "unfollow")
UNSUBSCRIBE: Final = "unsubscribe"
ONE_CLICK: Final = "List-Unsubscribe=One-Click"
LINK: Final = re.compile(r"<(https?://[^>]+)>")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


def _bearer(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and len(header) > len("Bearer ")


class SandboxApi:
    """The aiohttp application of the sandbox."""

    def __init__(
        self,
        ledger: Ledger,
        faults: Faults,
        *,
        redis: Redis,
        producer: AIOKafkaProducer | None,
        line_webhook_url: str,
        line_channel_secret: str,
    ) -> None:
        self._ledger = ledger
        self._faults = faults
        self._redis = redis
        self._producer = producer
        self._line_webhook_url = line_webhook_url
        self._line_secret = line_channel_secret

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/line/v2/bot/message/push", self.line_push)
        app.router.add_post("/sms/v1/messages", self.sms_send)
        app.router.add_post("/fcm/v1/projects/{project}/messages:send", self.fcm_send)
        app.router.add_get("/sandbox/ledger", self.get_ledger)
        app.router.add_delete("/sandbox/ledger", self.clear_ledger)
        app.router.add_get("/sandbox/faults", self.get_faults)
        app.router.add_post("/sandbox/faults", self.add_fault)
        app.router.add_delete("/sandbox/faults", self.clear_faults)
        app.router.add_post("/sandbox/inbound/line", self.inbound_line)
        app.router.add_post("/sandbox/inbound/email", self.inbound_email)
        return app

    # -- provider shapes --------------------------------------------------------------

    async def _faulted(self, provider: str, to: str) -> tuple[web.Response | None, float]:
        """An error reply when a fault hits, and how long to hang after accepting."""
        lost_reply = 0.0
        for fault in self._faults.hit(provider, to):
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                return _error(fault.status, f"sandbox fault {fault.id}", headers), 0.0
            elif fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
                return _error(504, "sandbox timeout"), 0.0
            elif fault.kind == "unreachable":
                return _dead_address(provider), 0.0
            else:
                lost_reply = fault.seconds
        return None, lost_reply

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def line_push(self, request: web.Request) -> web.Response:
        if not _bearer(request):
            return _error(401, "Authentication failed. Confirm that the access token is valid.")
        body = await self._json(request)
        if body is None:
            return _error(400, "The request body has 1 error(s)")
        to = str(body.get("to", ""))
        retry_key = request.headers.get("X-Line-Retry-Key", "")
        if retry_key:
            try:
                uuid.UUID(retry_key)
            except ValueError:
                return _error(400, "The retry key must be a UUID (X-Line-Retry-Key)")
        if not LINE_USER_ID.fullmatch(to):
            return _error(400, "The property, 'to', in the request body is invalid")
        messages = body.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            return _error(400, "The property, 'messages', must have 1 to 5 elements")
        failure, lost_reply = await self._faulted("line", to)
        if failure is not None:
            return failure
        accepted = await self._ledger.accept("line", to, retry_key, body)
        if lost_reply:
            await asyncio.sleep(lost_reply)
        if accepted.duplicate:
            return web.json_response(
                {"message": "The retry key is already accepted"},
                status=409,
                headers={"X-Line-Accepted-Request-Id": accepted.message_id},
            )
        sent = [{"id": accepted.message_id, "quoteToken": uuid.uuid4().hex}]
        return web.json_response(
            {"sentMessages": sent}, headers={"X-Line-Request-Id": accepted.message_id}
        )

    async def sms_send(self, request: web.Request) -> web.Response:
        if not _bearer(request):
            return _error(401, "missing API key")
        body = await self._json(request)
        if body is None:
            return _error(400, "body: not a JSON object")
        to = str(body.get("to", ""))
        if not E164.fullmatch(to):
            return _error(400, "to: not an E.164 number")
        if not body.get("body"):
            return _error(400, "body: required")
        failure, lost_reply = await self._faulted("sms", to)
        if failure is not None:
            return failure
        accepted = await self._ledger.accept(
            "sms", to, request.headers.get("Idempotency-Key", ""), body
        )
        if lost_reply:
            await asyncio.sleep(lost_reply)
        headers = {"Idempotent-Replayed": "true"} if accepted.duplicate else {}
        return web.json_response(
            {"id": accepted.message_id, "status": "queued"}, status=201, headers=headers
        )

    async def fcm_send(self, request: web.Request) -> web.Response:
        project = request.match_info["project"]
        if not _bearer(request):
            return _fcm_error(401, "UNAUTHENTICATED", "Request is missing required credentials.")
        body = await self._json(request)
        message = body.get("message") if body else None
        if not isinstance(message, dict) or not message.get("token"):
            return _fcm_error(400, "INVALID_ARGUMENT", "message.token: required")
        to = str(message["token"])
        failure, lost_reply = await self._faulted("fcm", to)
        if failure is not None:
            return failure
        # FCM has no idempotency key: every accepted request is a notification.
        accepted = await self._ledger.accept("fcm", to, "", message)
        if lost_reply:
            await asyncio.sleep(lost_reply)
        return web.json_response({"name": f"projects/{project}/messages/{accepted.message_id}"})

    # -- admin ------------------------------------------------------------------------

    async def get_ledger(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "0"))
        except ValueError:
            return _error(400, "limit: not a number")
        entries = await self._ledger.entries(
            provider=query.get("provider", ""),
            to=query.get("to", ""),
            limit=limit,
            duplicates=query.get("duplicates", "true") != "false",
        )
        return web.json_response({"entries": entries})

    async def clear_ledger(self, _request: web.Request) -> web.Response:
        await self._ledger.clear()
        return web.json_response({"cleared": True})

    async def get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.as_dict() for f in self._faults.rules()]})

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is None:
            return _error(400, "body: not a JSON object")
        try:
            fault = self._faults.add(Fault.parse(body))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(fault.as_dict(), status=201)

    async def clear_faults(self, _request: web.Request) -> web.Response:
        self._faults.clear()
        return web.json_response({"cleared": True})

    async def inbound_line(self, request: web.Request) -> web.Response:
        """Post a signed LINE webhook event, as the LINE platform would, to the LINE service."""
        body = await self._json(request)
        if body is None:
            return _error(400, "body: not a JSON object")
        user_id = str(body.get("user_id", ""))
        kind = str(body.get("type", "message"))
        if not LINE_USER_ID.fullmatch(user_id):
            return _error(400, "user_id: not a LINE user id (U + 32 hex digits)")
        if kind not in LINE_INBOUND_KINDS:
            return _error(400, f"type: expected one of {', '.join(LINE_INBOUND_KINDS)}")
        event: dict[str, Any] = {
            "type": kind,
            "mode": "active",
            "timestamp": int(time.time() * 1000),
            "source": {"type": "user", "userId": user_id},
            "webhookEventId": uuid.uuid4().hex.upper()[:26],
            "deliveryContext": {"isRedelivery": False},
        }
        if kind in ("message", "follow"):
            event["replyToken"] = uuid.uuid4().hex
        if kind == "message":
            event["message"] = {
                "type": "text",
                "id": str(int(time.time() * 1000)),
                "text": str(body.get("text", "")),
            }
        payload = json.dumps({"destination": "U" + "0" * 32, "events": [event]}).encode()
        signature = base64.b64encode(
            hmac.new(self._line_secret.encode(), payload, hashlib.sha256).digest()
        ).decode()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(
                    self._line_webhook_url,
                    data=payload,
                    headers={"Content-Type": "application/json", "X-Line-Signature": signature},
                ) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"LINE webhook unreachable: {type(exc).__name__}")
        return web.json_response({"webhook_status": status, "event": event})

    async def inbound_email(self, request: web.Request) -> web.Response:
        """An email open or click, as an ESP webhook would report it: a RECEIPT touchpoint;
        or an unsubscribe, as a mailbox provider does it: a POST to the email's one-click link."""
        body = await self._json(request)
        if body is None:
            return _error(400, "body: not a JSON object")
        kind = str(body.get("type", ""))
        dispatch_id = str(body.get("dispatch_id", ""))
        if kind == UNSUBSCRIBE:
            return await self._one_click(dispatch_id)
        status = INBOUND_EMAIL_KINDS.get(kind)
        if status is None:
            kinds = ", ".join([*INBOUND_EMAIL_KINDS, UNSUBSCRIBE])
            return _error(400, f"type: expected one of {kinds}")
        if self._producer is None:
            return _error(503, "no Kafka producer: inbound events are off")
        sent = await DeliveryRecords(self._redis, "email", ttl_seconds=1).get(dispatch_id)
        if sent is None or sent.receipt.name != "message.sent":
            return _error(404, "dispatch_id: no sent email with this dispatch id")
        url = str(body.get("url", ""))
        first = sent.receipt
        receipt = receipt_touchpoint(
            dispatch_id=dispatch_id,
            customer_id=first.customer_id,
            channel=first.receipt.channel,
            status=status,
            provider=first.receipt.provider,
            at=datetime.now(UTC),
            reason=first.receipt.reason,
            provider_message_id=first.receipt.provider_message_id,
            props={"url": url} if url else None,
            discriminator=url,
        )
        await TouchpointPublisher(self._producer).publish([receipt])
        return web.json_response({"event_id": receipt.event_id, "name": receipt.name})

    async def _one_click(self, dispatch_id: str) -> web.Response:
        """POST `List-Unsubscribe=One-Click` to the https link of the email `dispatch_id`
        (RFC 8058), read from the headers the ledger kept."""
        sent = [
            entry["request"]
            for entry in await self._ledger.entries(provider="smtp", duplicates=False)
            if dispatch_id and entry["request"].get("dispatch_id") == dispatch_id
        ]
        if not sent:
            return _error(404, "dispatch_id: no email with this dispatch id in the ledger")
        links = LINK.findall(sent[-1].get("list_unsubscribe", ""))
        if not links or sent[-1].get("list_unsubscribe_post") != ONE_CLICK:
            return _error(409, "the email offers no one-click List-Unsubscribe link")
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(
                    links[0],
                    data=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"unsubscribe link unreachable: {type(exc).__name__}")
        return web.json_response({"unsubscribe_status": status, "url": links[0]})


def _dead_address(provider: str) -> web.Response:
    """How each provider says an address is dead (an `unreachable` fault)."""
    if provider == "fcm":
        return _fcm_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}],
        )
    return web.json_response(
        {"code": "invalid_number", "message": "to: the number cannot receive SMS"}, status=400
    )


def _fcm_error(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)
