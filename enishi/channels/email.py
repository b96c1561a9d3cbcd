"""Email over SMTP (aiosmtplib): MIME multipart/alternative, text and HTML, List-Unsubscribe.

The dispatch id becomes the Message-ID (`<dispatch_id@sender-domain>`) and the
`X-Enishi-Dispatch-Id` header. SMTP has no idempotency protocol: a copy sent again after a
crash mid-send carries the same Message-ID, which relays that dedupe (and the sandbox) drop
and mail clients thread as one message.

Every message offers one-click unsubscribe (RFC 8058): `List-Unsubscribe: <url/u/token>`
with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, the token signed
(enishi/channels/unsubscribe.py) and honoured by the email service's endpoint. A recipient
refused at RCPT TO with a "no such mailbox" reply is a bounce (`bounced`): the address is
dead and the customer's email becomes unreachable (enishi/channels/feedback.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Final

import aiosmtplib

from enishi.channels import feedback
from enishi.channels.protocol import DeliveryOutcome
from enishi.channels.unsubscribe import Unsubscribe, UnsubscribeTokens, link
from enishi.config import EmailSettings
from enishi.v1 import dispatch_pb2

PROVIDER: Final = "smtp"
DISPATCH_ID_HEADER: Final = "X-Enishi-Dispatch-Id"
ONE_CLICK: Final = "List-Unsubscribe=One-Click"
# RFC 3463: class.subject.detail at the start of a reply's text, e.g. "5.1.1 no such user".
ENHANCED_STATUS: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")


def list_unsubscribe(
    dispatch: dispatch_pb2.DispatchEvent,
    tokens: UnsubscribeTokens,
    *,
    base_url: str,
    mailto: str = "",
) -> str:
    """Our List-Unsubscribe value: the one-click link, then a mailto when one is configured."""
    token = tokens.sign(
        Unsubscribe(dispatch.customer_id, "email", dispatch_id=dispatch.dispatch_id)
    )
    value = f"<{link(base_url, token)}>"
    if mailto:
        value += f", <mailto:{mailto}?subject=unsubscribe%20{token}>"
    return value


def build_message(
    dispatch: dispatch_pb2.DispatchEvent,
    *,
    default_from: str,
    list_unsubscribe: str = "",
    now: datetime | None = None,
) -> EmailMessage:
    """The MIME message of an email dispatch: text/plain, plus text/html when there is HTML.

    The dispatch's own List-Unsubscribe (with its one-click flag) wins over ours,
    `list_unsubscribe`, which always offers one-click.
    """
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
    if content.list_unsubscribe:
        message["List-Unsubscribe"] = content.list_unsubscribe
        if content.list_unsubscribe_one_click:
            message["List-Unsubscribe-Post"] = ONE_CLICK
    elif list_unsubscribe:
        message["List-Unsubscribe"] = list_unsubscribe
        message["List-Unsubscribe-Post"] = ONE_CLICK
    message.set_content(content.text)
    if content.html:
        message.add_alternative(content.html, subtype="html")
    return message


def is_bounce(code: int, text: str) -> bool:
    """Whether a refusal at RCPT TO says the mailbox is dead, not "not now" or "not you".

    With an enhanced status code (RFC 3463): 5.1.x (bad mailbox, bad domain, moved; but
    5.1.7/5.1.8 are about our sender) and 5.2.1 (mailbox disabled); 5.7.x is a policy block
    of our mail and 5.2.2 a full mailbox, the address is fine. Without one: 550, 551 and 553
    (RFC 5321).
    """
    if not 500 <= code < 600:
        return False
    enhanced = ENHANCED_STATUS.match(text.strip())
    if enhanced is None:
        return code in (550, 551, 553)
    status = (int(enhanced[1]), int(enhanced[2]), int(enhanced[3]))
    return (status[:2] == (5, 1) and status[2] not in (7, 8)) or status == (5, 2, 1)


def outcome_of(exc: aiosmtplib.SMTPException) -> DeliveryOutcome:
    """4xx replies are transient, 5xx permanent (RFC 5321); connection trouble is transient.

    A 5xx for the recipient at RCPT TO that says the mailbox is dead is `bounced`.
    """
    at_rcpt = isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and bool(exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = f"smtp_{exc.code}"
        # The reply text may echo the address: keep only the code and the exception type.
        detail = f"{type(exc).__name__} {exc.code}"
        if at_rcpt and is_bounce(exc.code, exc.message):
            return DeliveryOutcome.permanent(feedback.BOUNCED, f"{detail} at RCPT TO")
        if 500 <= exc.code < 600:
            return DeliveryOutcome.permanent(code, detail)
        return DeliveryOutcome.transient(code, detail)
    return DeliveryOutcome.transient("smtp_connection", type(exc).__name__)


class SmtpSender:
    """Sends email dispatches through one SMTP relay, a connection per message."""

    provider = PROVIDER

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._tokens = UnsubscribeTokens(settings.unsubscribe_secret.get_secret_value())

    async def deliver(self, dispatch: dispatch_pb2.DispatchEvent) -> DeliveryOutcome:
        settings = self._settings
        message = build_message(
            dispatch,
            default_from=settings.email_from,
            list_unsubscribe=list_unsubscribe(
                dispatch,
                self._tokens,
                base_url=settings.email_unsubscribe_url,
                mailto=settings.email_unsubscribe_mailto,
            ),
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
