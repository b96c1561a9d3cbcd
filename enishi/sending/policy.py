"""Which channel a send may use: consent, reachability and the order channels are tried in.

Pure functions over the customer's 360 view (`customer_pb2.Customer`); docs/sending.md,
"Channel choice", states every rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from enishi import topics
from enishi.journeys.model import PREFERRED
from enishi.memory import model
from enishi.v1 import consent_pb2, customer_pb2, dispatch_pb2, identity_pb2

SkipReason = dispatch_pb2.SkipReason

E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")

# Channels where having no consent record means "not consented" (explicit opt-in needed):
# email and SMS by Japan's Act on Specified Electronic Mail, push by the app stores' rules.
# LINE is different: the customer adds the official account as a friend, which is the
# opt-in, and blocking it is the opt-out (a reachability record, `line.unfollow`).
OPT_IN_REQUIRED: Final = frozenset({"email", "sms", "push"})


@dataclass(frozen=True)
class Recipient:
    """An eligible channel and where to deliver on it."""

    channel: str
    address: str
    push_platform: identity_pb2.PushPlatform.ValueType = identity_pb2.PUSH_PLATFORM_UNSPECIFIED


@dataclass(frozen=True)
class Rejection:
    """A channel that was tried and why it cannot be used (detail: no personal data)."""

    channel: str
    reason: SkipReason.ValueType
    detail: str


@dataclass(frozen=True)
class Choice:
    """The channels tried in order: those that may be used, and those that may not."""

    eligible: tuple[Recipient, ...]
    rejected: tuple[Rejection, ...]

    def rejection(self, channel: str) -> Rejection | None:
        """Why `channel` was rejected, or None when it was not."""
        return next((r for r in self.rejected if r.channel == channel), None)

    def skip(self) -> Rejection:
        """Why nothing can be sent: unreachable when some channel had consent, else no consent."""
        for rejection in self.rejected:
            if rejection.reason == SkipReason.SKIP_REASON_UNREACHABLE:
                return Rejection(rejection.channel, rejection.reason, self._summary())
        if self.rejected:
            first = self.rejected[0]
            return Rejection(first.channel, SkipReason.SKIP_REASON_NO_CONSENT, self._summary())
        return Rejection("", SkipReason.SKIP_REASON_NO_CONSENT, "no channel to try")

    def _summary(self) -> str:
        return "; ".join(f"{r.channel}: {r.detail}" for r in self.rejected)


def candidate_channels(
    channel: str,
    fallback: Sequence[str],
    preferences: consent_pb2.Preferences,
    template_channels: Sequence[str],
) -> tuple[str, ...]:
    """The channels to try, in order, limited to those the template has content for.

    A fixed channel: it, then the step's fallback. `preferred`: the customer's preferred
    channel, the step's fallback, the customer's own fallback order, then the template's
    remaining channels (so a customer who chose nothing still hears on a channel they
    consented to).
    """
    if channel != PREFERRED:
        order: list[str] = [channel, *fallback]
    else:
        order = []
        if preferences.preferred_channel:
            order.append(model.channel_name(preferences.preferred_channel))
        order.extend(fallback)
        order.extend(model.channel_name(c) for c in preferences.fallback_channels if c)
        order.extend(template_channels)
    return _unique(c for c in order if c in topics.CHANNELS and c in template_channels)


def choose(
    customer: customer_pb2.Customer,
    channel: str,
    fallback: Sequence[str],
    template_channels: Sequence[str],
) -> Choice:
    """Every candidate channel, split into eligible (with the address) and rejected (why)."""
    eligible: list[Recipient] = []
    rejected: list[Rejection] = []
    candidates = candidate_channels(channel, fallback, customer.preferences, template_channels)
    for name in candidates:
        outcome = check(customer, name)
        if isinstance(outcome, Recipient):
            eligible.append(outcome)
        else:
            rejected.append(outcome)
    return Choice(tuple(eligible), tuple(rejected))


def check(customer: customer_pb2.Customer, channel: str) -> Recipient | Rejection:
    """Whether the customer may be sent to on `channel`: consent first, then reachability."""
    value = model.channel_value(channel)
    consent = next((c for c in customer.consents if c.channel == value), None)
    reach = next((r for r in customer.reachability if r.channel == value), None)
    status = consent.status if consent is not None else consent_pb2.CONSENT_STATUS_UNSPECIFIED
    recipient = _recipient(customer.identity, channel)
    if status == consent_pb2.CONSENT_STATUS_OPTED_OUT:
        return Rejection(channel, SkipReason.SKIP_REASON_NO_CONSENT, "opted out")
    if status != consent_pb2.CONSENT_STATUS_OPTED_IN:
        if channel in OPT_IN_REQUIRED:
            return Rejection(channel, SkipReason.SKIP_REASON_NO_CONSENT, "no opt-in")
        if recipient is None:  # LINE: no friend, no consent
            return Rejection(channel, SkipReason.SKIP_REASON_NO_CONSENT, "not a LINE friend")
    if reach is not None and not reach.reachable:
        why = reach.reason or "unreachable"
        return Rejection(channel, SkipReason.SKIP_REASON_UNREACHABLE, why)
    if recipient is None:
        return Rejection(channel, SkipReason.SKIP_REASON_UNREACHABLE, f"no {_ADDRESS[channel]}")
    return recipient


_ADDRESS: Final = {
    "email": "email address",
    "sms": "E.164 phone number",
    "line": "LINE user id",
    "push": "push token",
}


def _recipient(identity: identity_pb2.Identity, channel: str) -> Recipient | None:
    if channel == "email":
        return Recipient(channel, identity.email) if identity.email else None
    if channel == "sms":
        return Recipient(channel, identity.phone) if E164.fullmatch(identity.phone) else None
    if channel == "line":
        return Recipient(channel, identity.line_user_id) if identity.line_user_id else None
    if channel == "push":
        # The newest registration: the device the customer used last.
        token = next((t for t in identity.push_tokens if t.token), None)
        return Recipient(channel, token.token, token.platform) if token is not None else None
    raise ValueError(f"channel: unknown channel {channel!r}")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
