"""The sandbox's SMTP server (aiosmtpd): every message lands in the ledger, one entry per
recipient, deduped on Message-ID (the idempotency key enishi's email adapter sets).

An `unreachable` fault refuses its recipient at RCPT TO with `550 5.1.1`, as a server with
no such mailbox does (a hard bounce); every other fault answers at DATA."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.exceptions import RedisError

from services.sandbox.faults import KINDS, Faults
from services.sandbox.ledger import Ledger

log = structlog.get_logger(__name__)

PROVIDER = "smtp"
BOUNCE = "550 5.1.1 mailbox unavailable (sandbox fault)"
AT_DATA = tuple(kind for kind in KINDS if kind != "unreachable")


def summary(message: EmailMessage) -> dict[str, Any]:
    """What the ledger keeps of an email: headers that matter and every MIME part."""
    parts = []
    text = html = ""
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        parts.append(content_type)
        if content_type == "text/plain" and not text:
            text = str(part.get_content())
        elif content_type == "text/html" and not html:
            html = str(part.get_content())
    return {
        "from": str(message.get("From", "")),
        "subject": str(message.get("Subject", "")),
        "message_id": str(message.get("Message-ID", "")),
        "dispatch_id": str(message.get("X-Enishi-Dispatch-Id", "")),
        "content_type": message.get_content_type(),
        "list_unsubscribe": str(message.get("List-Unsubscribe", "")),
        "list_unsubscribe_post": str(message.get("List-Unsubscribe-Post", "")),
        "parts": parts,
        "text": text,
        "html": html,
    }


class SandboxSmtpHandler:
    """aiosmtpd handler: faults first, then the ledger."""

    def __init__(self, ledger: Ledger, faults: Faults) -> None:
        self._ledger = ledger
        self._faults = faults

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._faults.hit(PROVIDER, address, kinds=("unreachable",)):
            return BOUNCE
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        content = raw.encode() if isinstance(raw, str) else raw
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        recipients = list(envelope.rcpt_tos)
        lost_reply = 0.0
        for fault in self._faults.hit(PROVIDER, recipients[0] if recipients else "", AT_DATA):
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                return f"{fault.status} sandbox fault {fault.id}"
            elif fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
                return "451 sandbox timeout"
            else:
                lost_reply = fault.seconds
        details = summary(message)
        message_id = details["message_id"]
        try:
            for recipient in recipients:
                await self._ledger.accept(PROVIDER, recipient, message_id, details)
        except RedisError as exc:
            # A relay with a local problem says "try again later" (4xx), as real ones do;
            # aiosmtpd's default, 500, would fail a message nothing was wrong with for good.
            log.warning("sandbox.smtp_ledger_unavailable", error=type(exc).__name__)
            return "451 4.3.0 sandbox ledger unavailable, try again later"
        if lost_reply:
            await asyncio.sleep(lost_reply)
        return "250 OK queued"


def smtp_factory(handler: SandboxSmtpHandler) -> SMTP:
    """One SMTP protocol instance per connection."""
    return SMTP(handler, hostname="sandbox.enishi.localhost", ident="enishi sandbox")
