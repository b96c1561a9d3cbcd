"""Email over SMTP (aiosmtplib): MIME multipart/alternative, text and HTML, List-Unsubscribe.

The dispatch id becomes the Message-ID (`<dispatch_id@sender-domain>`) and the
`X-Enishi-Dispatch-Id` header. SMTP has no idempotency protocol: a copy sent again after a
crash mid-send carries the same Message-ID, which relays that dedupe (and the sandbox) drop
and mail clients thread as one message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Final

import aiosmtplib

from enishi.channels.protocol import DeliveryOutcome
from enishi.config import EmailSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "smtp"
DISPATCH_ID_HEADER: Final = "X-Enishi-Dispatch-Id"
ONE_CLICK: Final = "List-Unsubscribe=One-Click"


def build_message(
    dispatch: dispatch_pb2.DispatchEvent,
    *,
    default_from: str,
    default_list_unsubscribe: str = "",
    now: datetime | None = None,
) -> EmailMessage:
    """The MIME message of an email dispatch: text/plain, plus text/html when there is HTML."""
    content = dispatch.email
    sender = content.from_address or default_from
    domain = parseaddr(sender)[1].rpartition("@")[2] or "enishi.localhost"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = dispatch.address
    message["Subject"] = content.subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = f"<{dispatch.dispatch_id}@{domain}>"
    message[DISPATCH_ID_HEADER] = dispatch.dispatch_id
    if content.reply_to:
        message["Reply-To"] = content.reply_to
    unsubscribe = content.list_unsubscribe or default_list_unsubscribe.replace(
        "{dispatch_id}", dispatch.dispatch_id
    )
    if unsubscribe:
        message["List-Unsubscribe"] = unsubscribe
        if content.list_unsubscribe_one_click:
            message["List-Unsubscribe-Post"] = ONE_CLICK
    message.set_content(content.text)
    if content.html:
        message.add_alternative(content.html, subtype="html")
    return message


def outcome_of(exc: aiosmtplib.SMTPException) -> DeliveryOutcome:
    """4xx replies are transient, 5xx permanent (RFC 5321); connection trouble is transient."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = f"smtp_{exc.code}"
        # The reply text may echo the address: keep only the code and the exception type.
        detail = f"{type(exc).__name__} {exc.code}"
        if 500 <= exc.code < 600:
            return DeliveryOutcome.permanent(code, detail)
        return DeliveryOutcome.transient(code, detail)
    return DeliveryOutcome.transient("smtp_connection", type(exc).__name__)


class SmtpSender:
    """Sends email dispatches through one SMTP relay, a connection per message."""

    provider = PROVIDER

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        settings = self._settings
        message = build_message(
            dispatch,
            default_from=settings.email_from,
            default_list_unsubscribe=settings.email_list_unsubscribe,
        )
        password = settings.email_smtp_password.get_secret_value()
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.email_smtp_host,
                port=settings.email_smtp_port,
                username=settings.email_smtp_username or None,
                password=password if settings.email_smtp_username else None,
                use_tls=settings.email_smtp_tls == "tls",
                start_tls=settings.email_smtp_tls == "starttls",
                timeout=settings.channel_send_timeout_seconds,
            )
        except aiosmtplib.SMTPException as exc:
            return outcome_of(exc)
        return DeliveryOutcome.sent(str(message["Message-ID"]))

    async def aclose(self) -> None:
        return None
