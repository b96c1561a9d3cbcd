"""The send activity: one `send` step of one enrollment, sent with respect or not at all.

Holdout, channel choice (consent, reachability, fallback), quiet hours, frequency caps,
rendering, then the DispatchEvent on `dispatch.<channel>`; a send that does not go out is
recorded in the customer's timeline with its why. Every rule: docs/sending.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog
from aiokafka import AIOKafkaProducer
from google.protobuf import json_format
from redis.asyncio import Redis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from enishi import topics
from enishi.config import SendingPolicySettings
from enishi.journeys.model import Journey
from enishi.memory.reader import MAX_PAGE_SIZE, MemoryReader
from enishi.sending import dispatch, policy, quiet_hours
from enishi.sending.caps import CapLimits, Capped, FrequencyCaps
from enishi.sending.render import Renderer, RenderError, customer_context, event_context
from enishi.touchpoints import TouchpointPublisher
from enishi.v1 import customer_pb2, dispatch_pb2
from workflows.contract import EventSignal, SendOutcome, SendRequest

SkipReason = dispatch_pb2.SkipReason
log = structlog.get_logger(__name__)

TEMPLATE_ERROR: Final = "TemplateError"
"""ApplicationError type: the template cannot be rendered (non-retryable)."""
BAD_REQUEST: Final = "BadSendRequest"
"""ApplicationError type: the request or the journey cannot be sent as given (non-retryable)."""

SENT: Final = "sent"
SKIPPED: Final = "skipped"
DEFERRED: Final = "deferred"

JourneyLoader = Callable[[str, int], Awaitable[Journey]]


def reason_name(value: dispatch_pb2.SkipReason.ValueType) -> str:
    """`no_consent` for SKIP_REASON_NO_CONSENT: SendOutcome.reason."""
    return SkipReason.Name(value).removeprefix("SKIP_REASON_").lower()


class SendActivities:
    """Holds the clients a send needs; the worker builds one and registers `send`."""

    def __init__(
        self,
        redis: Redis,
        producer: AIOKafkaProducer,
        load_journey: JourneyLoader,
        settings: SendingPolicySettings,
    ) -> None:
        self._reader = MemoryReader(redis)
        self._caps = FrequencyCaps(
            redis,
            CapLimits(
                day=settings.sending_cap_day,
                week=settings.sending_cap_week,
                channel_day={c: settings.channel_day_cap(c) for c in topics.CHANNELS},
            ),
        )
        self._load_journey = load_journey
        self._settings = settings
        self._renderer = Renderer()
        self._dispatches = dispatch.DispatchPublisher(producer)
        self._touchpoints = TouchpointPublisher(producer)
        hours = settings.sending_dispatch_expiry_hours
        self._expiry = timedelta(hours=hours) if hours > 0 else None

    @activity.defn(name="send")
    async def send(self, req: SendRequest) -> SendOutcome:
        """Send one step's message, or say why not (skipped) or when to try again (deferred)."""
        now = _parse_now(req.now)
        if req.holdout:
            return await self._skip(req, now, SkipReason.SKIP_REASON_HOLDOUT, "holdout group")
        journey = await self._journey(req)
        if req.template_id not in journey.templates:
            raise ApplicationError(
                f"template_id: journey {req.journey_id!r} v{req.version} has no template "
                f"{req.template_id!r}",
                type=BAD_REQUEST,
                non_retryable=True,
            )
        template = journey.template(req.template_id)
        view = await self._reader.customer(req.customer_id, timeline_limit=0, now=now)
        customer = view or customer_pb2.Customer(customer_id=req.customer_id)
        choice = policy.choose(customer, req.channel, req.fallback, template.channels())
        if not choice.eligible:
            skip = choice.skip()
            return await self._skip(
                req, now, skip.reason, skip.detail, channel=skip.channel, journey=journey
            )

        zone = quiet_hours.customer_zone(
            customer.preferences.time_zone, journey, self._settings.sending_fallback_time_zone
        )
        window = quiet_hours.window_of(customer.preferences.quiet_hours)
        first = choice.eligible[0].channel
        if window is not None and quiet_hours.is_quiet(now, window, zone):
            detail = f"quiet hours {window.start:%H:%M}-{window.end:%H:%M} {zone}"
            why = SkipReason.SKIP_REASON_QUIET_HOURS
            if req.on_quiet_hours == "skip":
                return await self._skip(req, now, why, detail, channel=first, journey=journey)
            retry_at = quiet_hours.next_allowed(now, window, zone)
            return await self._defer(req, now, why, detail, retry_at, first, journey)

        channels = [r.channel for r in choice.eligible]
        reservation = await self._caps.reserve(
            req.customer_id, req.dispatch_id, channels, now, zone
        )
        if isinstance(reservation, Capped):
            # The window frees at local midnight; the customer's quiet hours may last longer.
            retry_at = quiet_hours.next_allowed(reservation.frees_at, window, zone)
            return await self._defer(
                req,
                now,
                SkipReason.SKIP_REASON_FREQUENCY_CAP,
                reservation.detail,
                retry_at,
                first,
                journey,
            )
        recipient = next((r for r in choice.eligible if r.channel == reservation.channel), None)
        if recipient is None:
            # An earlier attempt reserved a channel that is no longer eligible (consent or
            # reachability changed between retries): a dispatch id keeps its channel, so
            # give the slot back and skip rather than send the same id elsewhere.
            rejected = choice.rejection(reservation.channel)
            why = rejected.reason if rejected else SkipReason.SKIP_REASON_NO_CONSENT
            detail = rejected.detail if rejected else "the reserved channel is not allowed"
            await self._caps.release(
                req.customer_id, req.dispatch_id, reservation.channel, now, zone
            )
            return await self._skip(
                req, now, why, detail, channel=reservation.channel, journey=journey
            )

        context = await self._context(req, journey, customer, view, zone, now)
        wanted = [customer.preferences.locale, self._settings.sending_default_locale]
        try:
            rendered = self._renderer.render(
                journey, req.template_id, recipient.channel, wanted, context
            )
        except RenderError as exc:
            await self._caps.release(req.customer_id, req.dispatch_id, recipient.channel, now, zone)
            await self._skip(
                req,
                now,
                SkipReason.SKIP_REASON_RENDER_FAILED,
                str(exc),
                channel=recipient.channel,
                journey=journey,
            )
            raise ApplicationError(str(exc), type=TEMPLATE_ERROR, non_retryable=True) from None

        event = dispatch.build(
            req, recipient, rendered, now, designer=journey.designer, expiry=self._expiry
        )
        traceparent = req.trigger.traceparent if req.trigger is not None else ""
        await self._dispatches.publish(event, traceparent=traceparent)
        log.info(
            "send.dispatched",
            dispatch_id=req.dispatch_id,
            channel=recipient.channel,
            locale=rendered.locale,
            journey_id=req.journey_id,
            step_id=req.step_id,
            retried=reservation.earlier,
        )
        return SendOutcome(status=SENT, channel=recipient.channel)

    async def _journey(self, req: SendRequest) -> Journey:
        try:
            return await self._load_journey(req.journey_id, req.version)
        except LookupError as exc:
            raise ApplicationError(
                f"journey {req.journey_id!r} version {req.version}: not found ({exc})",
                type=BAD_REQUEST,
                non_retryable=True,
            ) from None

    async def _context(
        self,
        req: SendRequest,
        journey: Journey,
        customer: customer_pb2.Customer,
        view: customer_pb2.Customer | None,
        zone: ZoneInfo,
        now: datetime,
    ) -> dict[str, Any]:
        # The retained timeline (bounded by memory retention) holds the last order, the last
        # support contact and, when the workflow did not pass it, the trigger's props.
        page = await self._reader.timeline(req.customer_id, page_size=MAX_PAGE_SIZE)
        entries = page.entries
        locale = customer.preferences.locale or self._settings.sending_default_locale
        trigger = _event(req.trigger, zone)
        if trigger is None and req.trigger_event_id:
            found = next((e for e in entries if e.event_id == req.trigger_event_id), None)
            if found is not None:
                trigger = event_context(
                    found.event_id,
                    found.name,
                    found.occurred_at.ToDatetime(tzinfo=UTC),
                    json_format.MessageToDict(found.props),
                    zone,
                )
        trigger = trigger or {"id": req.trigger_event_id, "props": {}}
        return {
            "customer": customer_context(req.customer_id, view, entries, locale, zone),
            "trigger": trigger,
            "event": _event(req.event, zone) or trigger,
            "journey": {
                "id": journey.id,
                "name": journey.name,
                "version": req.version,
                "step": req.step_id,
                "template": req.template_id,
                "now": now.astimezone(zone),
            },
        }

    async def _skip(
        self,
        req: SendRequest,
        now: datetime,
        why: dispatch_pb2.SkipReason.ValueType,
        detail: str,
        *,
        channel: str = "",
        journey: Journey | None = None,
    ) -> SendOutcome:
        designer = journey.designer if journey is not None else ""
        touchpoint = dispatch.skip_touchpoint(
            req, why, detail, now, channel=channel, designer=designer
        )
        await self._touchpoints.publish([touchpoint])
        log.info(
            "send.skipped",
            dispatch_id=req.dispatch_id,
            reason=reason_name(why),
            channel=channel,
            journey_id=req.journey_id,
            step_id=req.step_id,
        )
        return SendOutcome(status=SKIPPED, channel=channel, reason=reason_name(why))

    async def _defer(
        self,
        req: SendRequest,
        now: datetime,
        why: dispatch_pb2.SkipReason.ValueType,
        detail: str,
        retry_at: datetime,
        channel: str,
        journey: Journey,
    ) -> SendOutcome:
        touchpoint = dispatch.skip_touchpoint(
            req,
            why,
            detail,
            now,
            channel=channel,
            deferred_until=retry_at,
            designer=journey.designer,
        )
        await self._touchpoints.publish([touchpoint])
        log.info(
            "send.deferred",
            dispatch_id=req.dispatch_id,
            reason=reason_name(why),
            retry_at=retry_at.isoformat(),
            journey_id=req.journey_id,
            step_id=req.step_id,
        )
        return SendOutcome(
            status=DEFERRED,
            channel=channel,
            reason=reason_name(why),
            retry_at=retry_at.astimezone(UTC).isoformat(),
        )


def _parse_now(value: str) -> datetime:
    try:
        now = datetime.fromisoformat(value)
    except ValueError:
        now = None
    if now is None or now.tzinfo is None:
        raise ApplicationError(
            f"now: expected ISO 8601 with a UTC offset (workflow time), got {value!r}",
            type=BAD_REQUEST,
            non_retryable=True,
        )
    return now


def _event(signal: EventSignal | None, zone: ZoneInfo) -> dict[str, Any] | None:
    if signal is None:
        return None
    try:
        occurred: datetime | None = datetime.fromisoformat(signal.occurred_at)
    except ValueError:
        occurred = None
    if occurred is not None and occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return event_context(signal.event_id, signal.name, occurred, signal.props, zone)
