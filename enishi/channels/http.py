"""JSON over HTTP for the REST provider adapters (LINE, SMS, FCM), and what a reply means.

2xx is sent; 429 and 5xx (and 408) are transient, with the provider's Retry-After; any other
4xx is permanent, coded `http_<status>`. Network errors and timeouts propagate to the
framework, which counts them as transient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from enishi.channels.protocol import DeliveryOutcome

_ERROR_DETAIL_CHARS = 200


@dataclass(frozen=True)
class HttpReply:
    """A provider's answer: status, headers and the JSON body (None when not JSON)."""

    status: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: Any = None


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_detail(reply: HttpReply) -> str:
    """A short description of an error reply: the provider's `message` field when it has one.

    Providers' messages describe the request, not the recipient; still, keep them short.
    """
    body = reply.body
    message = ""
    if isinstance(body, dict):
        candidate = body.get("message")
        if candidate is None and isinstance(body.get("error"), dict):
            candidate = body["error"].get("message") or body["error"].get("status")
        message = str(candidate or "")
    return f"HTTP {reply.status}" + (f": {message[:_ERROR_DETAIL_CHARS]}" if message else "")


def outcome_for(reply: HttpReply, provider_message_id: str = "") -> DeliveryOutcome:
    """The DeliveryOutcome of a reply to a send request."""
    status = reply.status
    if 200 <= status < 300:
        return DeliveryOutcome.sent(provider_message_id)
    code = f"http_{status}"
    if status == 429 or status == 408 or status >= 500:
        return DeliveryOutcome.transient(
            code,
            error_detail(reply),
            retry_after=retry_after_seconds(reply.headers.get("Retry-After")),
        )
    return DeliveryOutcome.permanent(code, error_detail(reply))


class JsonClient:
    """One aiohttp session per adapter, opened on first use (inside the running loop)."""

    def __init__(self, *, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: Any, headers: dict[str, str]) -> HttpReply:
        """POST `body` as JSON; the reply, whatever its status."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json", **headers}
        ) as response:
            text = await response.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return HttpReply(response.status, response.headers, parsed)

    async def aclose(self) -> None:
        """Close the session (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
