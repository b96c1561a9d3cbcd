"""The sandbox's ledger: every request a fake provider accepted (or recognised as a repeat).

Entries are JSON in one Redis LIST (keys.SANDBOX_LEDGER), so tests, the CLI and a restarted
sandbox see the same history. Dedupe is per provider and idempotency key, the way the real
providers do it: the first request is delivered, a repeat is recorded as a duplicate and
answered with the first one's message id.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from redis.asyncio import Redis

from enishi import keys

IDEMPOTENCY_TTL_SECONDS: Final = 24 * 3600


@dataclass(frozen=True)
class Accepted:
    """What the ledger made of a request: the provider message id, and whether it repeats one."""

    message_id: str
    duplicate: bool


class Ledger:
    """Records deliveries in Redis and dedupes idempotency keys."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def accept(
        self, provider: str, to: str, idempotency_key: str, request: dict[str, Any]
    ) -> Accepted:
        """Record a delivery to `to`; an already seen `idempotency_key` is a duplicate."""
        message_id = uuid.uuid4().hex
        duplicate = False
        if idempotency_key:
            key = keys.sandbox_idempotency(provider, idempotency_key)
            created = await self._redis.set(key, message_id, nx=True, ex=IDEMPOTENCY_TTL_SECONDS)
            if not created:
                first = await self._redis.get(key)
                message_id = first.decode() if isinstance(first, bytes) else str(first)
                duplicate = True
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "provider": provider,
            "to": to,
            "idempotency_key": idempotency_key,
            "message_id": message_id,
            "duplicate": duplicate,
            "request": request,
        }
        await self._redis.rpush(keys.SANDBOX_LEDGER, json.dumps(entry, ensure_ascii=False))
        return Accepted(message_id, duplicate)

    async def entries(
        self,
        *,
        provider: str = "",
        to: str = "",
        limit: int = 0,
        duplicates: bool = True,
    ) -> list[dict[str, Any]]:
        """Ledger entries, oldest first, filtered; `limit` keeps the newest that many."""
        raw = await self._redis.lrange(keys.SANDBOX_LEDGER, 0, -1)
        found = []
        for item in raw:
            entry = json.loads(item)
            if provider and entry["provider"] != provider:
                continue
            if to and entry["to"] != to:
                continue
            if not duplicates and entry["duplicate"]:
                continue
            found.append(entry)
        return found[-limit:] if limit else found

    async def clear(self) -> None:
        """Forget every entry (idempotency keys expire on their own)."""
        await self._redis.delete(keys.SANDBOX_LEDGER)
