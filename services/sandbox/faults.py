"""Faults the sandbox injects on request, configured through its admin API.

A rule matches a provider (or `*`) and optionally one recipient, hits a fraction `rate` of
matching requests, `times` times (0: forever). Kinds: `status` answers an error (HTTP status,
or an SMTP reply code) with an optional Retry-After; `timeout` hangs `seconds` before a 504;
`delay` adds latency and lets the request through; `lost_reply` accepts the message, then
hangs, so the client times out on a message that did go out (the idempotency key's job);
`unreachable` says the address is dead, as each provider does: SMTP `550 5.1.1` at RCPT TO
(a bounce), FCM 404 `UNREGISTERED`, SMS 400 with code `invalid_number`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["status", "timeout", "delay", "lost_reply", "unreachable"]
KINDS: tuple[FaultKind, ...] = ("status", "timeout", "delay", "lost_reply", "unreachable")
PROVIDERS = ("smtp", "line", "sms", "fcm", "*")
# A dead address has a provider's own way of saying so; LINE says it with an unfollow event.
UNREACHABLE_PROVIDERS = ("smtp", "sms", "fcm")


@dataclass
class Fault:
    """One fault rule and how often it has hit."""

    provider: str
    kind: FaultKind = "status"
    status: int = 503
    times: int = 1
    rate: float = 1.0
    retry_after: float | None = None
    seconds: float = 30.0
    to: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    hits: int = 0
    last_hit_at: float = 0.0  # unix time of the newest hit (tests measure backoff with it)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Fault:
        """A rule from the admin API's JSON; ValueError naming the bad field."""
        provider = str(data.get("provider", ""))
        if provider not in PROVIDERS:
            raise ValueError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
        kind = str(data.get("kind", "status"))
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        fault = cls(provider=provider, kind=kind)
        try:
            fault.status = int(data.get("status", fault.status))
            fault.times = int(data.get("times", fault.times))
            fault.rate = float(data.get("rate", fault.rate))
            retry_after = data.get("retry_after")
            fault.retry_after = None if retry_after is None else float(retry_after)
            fault.seconds = float(data.get("seconds", fault.seconds))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a number field: {exc}") from None
        fault.to = str(data.get("to", ""))
        if not 100 <= fault.status <= 599:
            raise ValueError(f"status: expected 100-599, got {fault.status}")
        if not 0 <= fault.rate <= 1:
            raise ValueError(f"rate: expected 0-1, got {fault.rate}")
        if fault.times < 0:
            raise ValueError("times: must be >= 0 (0: forever)")
        if fault.kind == "unreachable" and provider not in UNREACHABLE_PROVIDERS:
            raise ValueError(
                f"provider: kind unreachable is for {', '.join(UNREACHABLE_PROVIDERS)}, got "
                f"{provider!r} (LINE: post an unfollow event to /sandbox/inbound/line)"
            )
        return fault

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """The rules, in the order they were added; the first that hits a request applies."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._rules.append(fault)
        return fault

    def clear(self) -> None:
        self._rules.clear()

    def rules(self) -> list[Fault]:
        return list(self._rules)

    def hit(self, provider: str, to: str, kinds: Container[str] = KINDS) -> list[Fault]:
        """The rules of `kinds` that apply to one request: every `delay` that hits, then at
        most one other rule (counted as a hit)."""
        applied: list[Fault] = []
        for rule in self._rules:
            if rule.provider not in ("*", provider) or (rule.to and rule.to != to):
                continue
            if rule.kind not in kinds:
                continue
            if rule.times and rule.hits >= rule.times:
                continue
            if rule.rate < 1 and random.random() >= rule.rate:
                continue
            rule.hits += 1
            rule.last_hit_at = time.time()
            applied.append(rule)
            if rule.kind != "delay":
                break
        return applied
