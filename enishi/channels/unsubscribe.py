"""Unsubscribe tokens: the signed value in a List-Unsubscribe link (RFC 8058 one-click).

A token names who and what (`customer id`, `channel`, the `dispatch id` the link came in)
and carries an HMAC-SHA256 over them with `ENISHI_UNSUBSCRIBE_SECRET`, so only links we
minted unsubscribe anyone. No personal data is in it (no address; customer ids are
pseudonymous). Format: `base64url(customer id \\x1f channel \\x1f dispatch id) "." base64url(mac)`.

Tokens do not expire: a link in a mail read months later must still work, and the law
(Japan's Act on Specified Electronic Mail) requires honouring it. Changing the secret
invalidates every link already sent; rotate only with that in mind (docs/channels.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from enishi import topics
from enishi.errors import ConfigurationError

SECRET_ENV: Final = "ENISHI_UNSUBSCRIBE_SECRET"
MIN_SECRET_CHARS: Final = 32
# Longer than any token we mint (ids are bounded); anything longer is not looked at.
MAX_TOKEN_CHARS: Final = 1024
# Separates the signed material of this use from any other HMAC made with the same secret.
_PURPOSE: Final = b"enishi.unsubscribe.v1\x00"
_SEPARATOR: Final = "\x1f"
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Unsubscribe:
    """What a valid token asks: opt `customer_id` out of `channel` (link of `dispatch_id`)."""

    customer_id: str
    channel: str
    dispatch_id: str = ""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    """Strict: only the canonical encoding (unused trailing bits zero), so a token has exactly
    one spelling and no character can change without the token failing."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if _encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


class UnsubscribeTokens:
    """Signs and verifies unsubscribe tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                SECRET_ENV,
                f"{SECRET_ENV}: required, at least {MIN_SECRET_CHARS} characters "
                "(e.g. `openssl rand -hex 32`); it signs the List-Unsubscribe links",
            )
        self._key = secret.encode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _PURPOSE + payload, hashlib.sha256).digest()

    def sign(self, request: Unsubscribe) -> str:
        """The token for `request`."""
        if request.channel not in topics.CHANNELS:
            raise ValueError(f"channel: unknown channel {request.channel!r}")
        fields = (request.customer_id, request.channel, request.dispatch_id)
        if not request.customer_id or any(_SEPARATOR in f for f in fields):
            raise ValueError("customer_id: required, without control characters")
        payload = _SEPARATOR.join(fields).encode()
        return f"{_encode(payload)}.{_encode(self._mac(payload))}"

    def verify(self, token: str) -> Unsubscribe | None:
        """What `token` asks, or None for anything that is not a token we signed.

        The MAC is compared in constant time; every failure looks the same to the caller.
        """
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            return None
        encoded_payload, encoded_mac = token.split(".")
        try:
            payload, mac = _decode(encoded_payload), _decode(encoded_mac)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            customer_id, channel, dispatch_id = payload.decode().split(_SEPARATOR)
        except (UnicodeDecodeError, ValueError):
            return None
        if not customer_id or channel not in topics.CHANNELS:
            return None
        return Unsubscribe(customer_id, channel, dispatch_id)


def link(base_url: str, token: str) -> str:
    """The one-click URL of `token` under the unsubscribe endpoint's public base URL."""
    return f"{base_url.rstrip('/')}/u/{token}"
