"""The LINE webhook: follow/unfollow → REACHABILITY touchpoints, text replies → `message.replied`.

Every request must carry `X-Line-Signature`, the base64 HMAC-SHA256 of the raw body with
the channel secret; anything else is refused with 401. The LINE user id is resolved to the
customer through the identity index (a user nobody identified yet is skipped: following the
account does not tell us who they are). A reply is linked to the newest dispatch pushed to
that user. The request is answered 200 only once Kafka has the touchpoints, so LINE's
redelivery covers a failure; event ids come from `webhookEventId`, so a redelivery is one
event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi import identity, keys
from enishi.channels import feedback
from enishi.channels.consumer import Companion, DeliveryRecords, SentHook
from enishi.channels.http_companion import http_companion
from enishi.channels.receipts import receipt_touchpoint
from enishi.config import LineSettings
from enishi.identity import IdentityResolver, Ref
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import channel_pb2, dispatch_pb2, touchpoint_pb2

PATH: Final = "/line/webhook"
SIGNATURE_HEADER: Final = "X-Line-Signature"
LAST_DISPATCH_TTL: Final = timedelta(days=7)

log = structlog.get_logger(__name__)


def signature(secret: str, body: bytes) -> str:
    """The X-Line-Signature of `body`."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def remember_last_dispatch(redis: Redis) -> SentHook:
    """After a push: the user's newest dispatch, so a reply can be linked to it."""

    async def hook(dispatch: dispatch_pb2.DispatchEvent) -> None:
        await redis.set(
            keys.line_last_dispatch(dispatch.address),
            dispatch.dispatch_id,
            ex=int(LAST_DISPATCH_TTL.total_seconds()),
        )

    return hook


def _at(event: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]) / 1000, UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def reachability_touchpoint(
    customer_id: str, event: dict[str, Any], reachable: bool
) -> touchpoint_pb2.Touchpoint:
    """`channel.reachability_changed` for LINE from a follow (reachable) or unfollow event."""
    return feedback.reachability_touchpoint(
        event_id=f"line-{event.get('webhookEventId') or event.get('timestamp')}-{event['type']}",
        customer_id=customer_id,
        channel=channel_pb2.CHANNEL_LINE,
        reachable=reachable,
        reason=f"line.{event['type']}",
        at=_at(event),
        received_at=datetime.now(UTC),
    )


class LineWebhook:
    """Turns verified webhook events into touchpoints."""

    def __init__(self, redis: Redis, producer: AIOKafkaProducer, secret: str) -> None:
        self._redis = redis
        self._publisher = TouchpointPublisher(producer)
        self._resolver = IdentityResolver(redis)
        self._records = DeliveryRecords(redis, "line", ttl_seconds=1)
        self._secret = secret

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given.encode(), signature(self._secret, body).encode()):
            log.warning("line.webhook_bad_signature")
            return web.json_response({"message": "X-Line-Signature: invalid"}, status=401)
        try:
            events = json.loads(body).get("events", [])
        except (ValueError, AttributeError):
            return web.json_response({"message": "body: not a webhook payload"}, status=400)
        touchpoints = []
        for event in events if isinstance(events, list) else []:
            touchpoint = await self._touchpoint(event)
            if touchpoint is not None:
                touchpoints.append(touchpoint)
        await self._publisher.publish(touchpoints)
        return web.json_response({"touchpoints": [t.event_id for t in touchpoints]})

    async def _touchpoint(self, event: Any) -> touchpoint_pb2.Touchpoint | None:
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        user_id = str((event.get("source") or {}).get("userId", ""))
        if kind not in ("follow", "unfollow", "message") or not user_id:
            return None
        try:
            ref = Ref(identity.LINE_USER_ID, identity.normalize(identity.LINE_USER_ID, user_id))
        except identity.InvalidIdentity:
            return None
        if kind == "message":
            return await self._reply(event, user_id)
        customer_id = await self._resolver.lookup(ref)
        if customer_id is None:
            log.info("line.webhook_unknown_user", event_type=kind)
            return None
        return reachability_touchpoint(customer_id, event, reachable=kind == "follow")

    async def _reply(self, event: dict[str, Any], user_id: str) -> touchpoint_pb2.Touchpoint | None:
        message = event.get("message") or {}
        if message.get("type") != "text":
            return None
        last = await self._redis.get(keys.line_last_dispatch(user_id))
        if last is None:
            log.info("line.webhook_reply_without_dispatch")
            return None
        dispatch_id = last.decode() if isinstance(last, bytes) else str(last)
        sent = await self._records.get(dispatch_id)
        if sent is None:
            return None
        first = sent.receipt
        return receipt_touchpoint(
            dispatch_id=dispatch_id,
            customer_id=first.customer_id,
            channel=channel_pb2.CHANNEL_LINE,
            status=dispatch_pb2.DELIVERY_STATUS_REPLIED,
            provider=first.receipt.provider,
            at=_at(event),
            reason=first.receipt.reason,
            provider_message_id=str(message.get("id", "")),
            props={"text": str(message.get("text", ""))},
            discriminator=str(message.get("id", "")),
        )


def webhook_companion(
    settings: LineSettings, on_port: Callable[[int], None] | None = None
) -> Companion:
    """The webhook server as a companion of the LINE consumer. Port 0 turns it off, unless
    `on_port` is given: then it binds a free port and reports it (tests do)."""
    secret = settings.line_channel_secret.get_secret_value()

    def app(redis: Redis, producer: AIOKafkaProducer) -> web.Application:
        application = web.Application()
        application.router.add_post(PATH, LineWebhook(redis, producer, secret).handle)
        return application

    return http_companion(
        app,
        host=settings.line_webhook_host,
        port=settings.line_webhook_port,
        what="LINE webhook",
        env_var="ENISHI_LINE_WEBHOOK_PORT",
        on_port=on_port,
    )
