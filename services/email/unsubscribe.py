"""The unsubscribe endpoint: `/u/<token>` from a List-Unsubscribe link → the customer opts out.

`POST /u/<token>` (RFC 8058 one-click: a mailbox provider posts `List-Unsubscribe=One-Click`;
our confirmation page's form posts the same) verifies the token in constant time and
publishes a `consent.changed` touchpoint opting the customer out of the token's channel,
the path every consent change takes (the stream processor applies it to memory). It answers
200 only once Kafka has it; Kafka down is 503, so the mailbox provider retries.
`GET /u/<token>` changes nothing (link scanners and prefetchers follow links): it shows a
page with a button that posts. A token that is malformed, forged or tampered with is 404,
the same answer for every kind of wrong, naming nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from enishi.channels import feedback
from enishi.channels.consumer import Companion
from enishi.channels.http_companion import http_companion
from enishi.channels.unsubscribe import Unsubscribe, UnsubscribeTokens
from enishi.config import EmailSettings
from enishi.memory import model
from enishi.metrics import UNSUBSCRIBE_REQUESTS
from enishi.touchpoints import TouchpointPublisher, new_event_id

PATH: Final = "/u/{token}"
# The token sits in the URL: no referrer may carry it elsewhere, no cache may keep the page.
HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}

log = structlog.get_logger(__name__)

_PAGE: Final = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}
button{{font-size:1em;padding:.6em 1.2em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=title, body=body),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=HEADERS,
    )


def confirmation_page(token: str) -> web.Response:
    """The GET answer: what a click will do, and a button that posts the one-click body."""
    action = html.escape(f"/u/{token}", quote=True)
    return _page(
        "配信停止 / Unsubscribe",
        "<p>このメールの配信を停止しますか？<br>Stop receiving these emails?</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">配信を停止する / Unsubscribe</button></form>',
    )


def done_page() -> web.Response:
    """The POST answer."""
    return _page(
        "配信を停止しました / Unsubscribed",
        "<p>今後このメールはお送りしません。<br>You will not receive these emails any more.</p>",
    )


def not_found_page() -> web.Response:
    """Every invalid token gets this, whatever was wrong with it."""
    return _page(
        "見つかりません / Not found",
        "<p>このリンクは無効です。<br>This link is not valid.</p>",
        status=404,
    )


class UnsubscribeEndpoint:
    """Turns verified one-click requests into `consent.changed` touchpoints."""

    def __init__(
        self,
        tokens: UnsubscribeTokens,
        producer: AIOKafkaProducer,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tokens = tokens
        self._publisher = TouchpointPublisher(producer)
        self._now = now

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4096)
        app.router.add_get(PATH, self.show)
        app.router.add_post(PATH, self.unsubscribe)
        return app

    def _verify(self, request: web.Request) -> Unsubscribe | None:
        found = self._tokens.verify(request.match_info["token"])
        if found is None:
            UNSUBSCRIBE_REQUESTS.labels("invalid").inc()
            log.warning("email.unsubscribe_invalid_token", method=request.method)
        return found

    async def show(self, request: web.Request) -> web.Response:
        if self._verify(request) is None:
            return not_found_page()
        UNSUBSCRIBE_REQUESTS.labels("shown").inc()
        return confirmation_page(request.match_info["token"])

    async def unsubscribe(self, request: web.Request) -> web.Response:
        found = self._verify(request)
        if found is None:
            return not_found_page()
        # Every click is its own event: one that opts out again after a re-subscription must
        # not be dropped as a duplicate of the first. Repeats are harmless (the same state).
        touchpoint = feedback.unsubscribe_touchpoint(
            event_id=new_event_id(),
            customer_id=found.customer_id,
            channel=model.channel_value(found.channel),  # type: ignore[arg-type]
            at=self._now(),
            dispatch_id=found.dispatch_id,
        )
        try:
            await self._publisher.publish([touchpoint])
        except KafkaError as exc:
            UNSUBSCRIBE_REQUESTS.labels("unavailable").inc()
            log.error("email.unsubscribe_unavailable", error=type(exc).__name__)
            return web.Response(status=503, text="try again later", headers=HEADERS)
        UNSUBSCRIBE_REQUESTS.labels("unsubscribed").inc()
        log.info(
            "email.unsubscribed",
            customer_id=found.customer_id,
            channel=found.channel,
            dispatch_id=found.dispatch_id,
        )
        return done_page()


def unsubscribe_companion(
    settings: EmailSettings, on_port: Callable[[int], None] | None = None
) -> Companion:
    """The endpoint as a companion of the email consumer. Port 0 turns it off, unless
    `on_port` is given: then it binds a free port and reports it (tests do)."""
    tokens = UnsubscribeTokens(settings.unsubscribe_secret.get_secret_value())
    return http_companion(
        lambda _redis, producer: UnsubscribeEndpoint(tokens, producer).app(),
        host=settings.email_unsubscribe_host,
        port=settings.email_unsubscribe_port,
        what="email unsubscribe endpoint",
        env_var="ENISHI_EMAIL_UNSUBSCRIBE_PORT",
        on_port=on_port,
    )
