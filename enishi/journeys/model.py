"""The journey language as frozen, typed models: what the validator checks, the interpreter walks.

A `Journey` is the designer's source after schema validation. Semantic rules that need the
whole journey (step references, reachability, loops, templates) live in
`enishi.journeys.validate`; `parse_journey` there is the way to get a journey that passed both.
The grammar is documented in docs/journeys.md and exported as docs/journey.schema.json.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PrivateAttr,
    Strict,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from enishi import topics
from enishi.journeys import clock, durations
from enishi.journeys.conditions import ConditionError, compile_condition

PREFERRED: Final = "preferred"
JOURNEY_ID_PATTERN: Final = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
NAME_PATTERN: Final = r"^[a-z][a-z0-9_]*$"
EVENT_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
LOCALE_PATTERN: Final = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$"
MAX_ID_CHARS: Final = 63
MAX_EVENT_NAME_CHARS: Final = 128
STEP_KINDS: Final = ("send", "wait", "wait_for", "branch", "split", "update", "exit")
TRIGGER_KINDS: Final = ("event", "condition", "schedule")


# --- scalar types: each failure has a stable code (the Diagnostic.code) -------------------


def _pattern_check(regex: str, code: str, what: str, max_chars: int) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if len(value) > max_chars:
            raise PydanticCustomError(code, f"{what} longer than {max_chars} characters")
        if not compiled.fullmatch(value):
            raise PydanticCustomError(code, f"{what} {value!r} must match {regex}")
        return value

    return check


def _duration(signed: bool) -> Callable[[Any], timedelta]:
    def parse(value: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError(
                "bad-duration",
                "a duration is text like '30m', '7d', '2w' or '1h30m', got {value}",
                {"value": repr(value)},
            )
        try:
            return durations.parse_duration(value, signed=signed)
        except durations.DurationError as exc:
            raise PydanticCustomError("bad-duration", str(exc)) from None

    return parse


def _check_expression(value: str) -> str:
    try:
        compile_condition(value)
    except ConditionError as exc:
        raise PydanticCustomError(
            "invalid-cel", exc.message, {"line": exc.line, "column": exc.column}
        ) from None
    return value


def _check_channel(value: str) -> str:
    if value not in topics.CHANNELS:
        raise PydanticCustomError(
            "unknown-channel",
            "unknown channel {value}; expected one of: {expected}",
            {"value": repr(value), "expected": ", ".join(topics.CHANNELS)},
        )
    return value


def _check_send_channel(value: str) -> str:
    return value if value == PREFERRED else _check_channel(value)


def _local_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "bad-time", "a local time is quoted 'HH:MM' text, got {value}", {"value": repr(value)}
        )
    try:
        return clock.parse_local_time(value)
    except ValueError as exc:
        raise PydanticCustomError("bad-time", str(exc)) from None


def _check_timezone(value: str) -> str:
    if not clock.is_timezone(value):
        raise PydanticCustomError(
            "unknown-timezone",
            "unknown time zone {value}; use an IANA name such as 'Asia/Tokyo'",
            {"value": repr(value)},
        )
    return value


def _check_calendar(value: str) -> str:
    if not clock.is_calendar(value):
        raise PydanticCustomError(
            "unknown-calendar",
            "unknown holiday calendar {value}; use a country code such as 'JP'",
            {"value": repr(value)},
        )
    return value


def _check_cron(value: str) -> str:
    try:
        clock.check_cron(value)
    except ValueError as exc:
        raise PydanticCustomError("bad-cron", str(exc)) from None
    return value


def _check_holdout(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "bad-holdout", "holdout is a number, e.g. 0.1, got {value}", {"value": repr(value)}
        )
    if not 0 <= value < 1:
        raise PydanticCustomError(
            "bad-holdout",
            "holdout {value} is out of range: 0 <= holdout < 1 (0.1 holds out 10%)",
            {"value": value},
        )
    return float(value)


def _check_weight(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PydanticCustomError(
            "bad-weight",
            "a split weight is a positive integer, got {value}",
            {"value": repr(value)},
        )
    return value


def _empty_mapping(value: Any) -> Any:
    return {} if value is None else value


_StrictStr = Annotated[str, Strict()]
Text = Annotated[str, Strict(), Field(min_length=1)]
JourneyId = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(JOURNEY_ID_PATTERN, "bad-id", "journey id", MAX_ID_CHARS)),
    WithJsonSchema({"type": "string", "pattern": JOURNEY_ID_PATTERN, "maxLength": MAX_ID_CHARS}),
]
StepId = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(NAME_PATTERN, "bad-id", "step id", MAX_ID_CHARS)),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_ID_CHARS}),
]
TemplateId = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(NAME_PATTERN, "bad-id", "template id", MAX_ID_CHARS)),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_ID_CHARS}),
]
TraitName = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(NAME_PATTERN, "bad-id", "trait name", MAX_ID_CHARS)),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_ID_CHARS}),
]
TagName = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(NAME_PATTERN, "bad-id", "tag", MAX_ID_CHARS)),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_ID_CHARS}),
]
EventName = Annotated[
    str,
    Strict(),
    AfterValidator(
        _pattern_check(
            EVENT_NAME_PATTERN,
            "bad-event-name",
            "event name (<domain>.<action>)",
            MAX_EVENT_NAME_CHARS,
        )
    ),
    WithJsonSchema(
        {"type": "string", "pattern": EVENT_NAME_PATTERN, "maxLength": MAX_EVENT_NAME_CHARS}
    ),
]
Locale = Annotated[
    str,
    Strict(),
    AfterValidator(_pattern_check(LOCALE_PATTERN, "bad-locale", "locale (BCP 47)", 16)),
    WithJsonSchema({"type": "string", "pattern": LOCALE_PATTERN}),
]
Expression = Annotated[
    str,
    Strict(),
    AfterValidator(_check_expression),
    WithJsonSchema({"type": "string", "minLength": 1, "description": "A CEL expression."}),
]
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration(signed=False)),
    PlainSerializer(durations.format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": durations.PATTERN.replace("^", "^(?!$)", 1),
            "description": "e.g. '30m', '7d', '2w', '1h30m'; 1s to 365d.",
        }
    ),
]
SignedDuration = Annotated[
    timedelta,
    BeforeValidator(_duration(signed=True)),
    PlainSerializer(durations.format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": durations.SIGNED_PATTERN.replace("^", "^(?!-?$)", 1),
            "description": "A duration, '-' in front for before, e.g. '-3d'.",
        }
    ),
]
Channel = Annotated[
    str,
    Strict(),
    AfterValidator(_check_channel),
    WithJsonSchema({"type": "string", "enum": list(topics.CHANNELS)}),
]
SendChannel = Annotated[
    str,
    Strict(),
    AfterValidator(_check_send_channel),
    WithJsonSchema({"type": "string", "enum": [*topics.CHANNELS, PREFERRED]}),
]
LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": clock.LOCAL_TIME_PATTERN}),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TimeZone = Annotated[
    str,
    Strict(),
    AfterValidator(_check_timezone),
    WithJsonSchema({"type": "string", "description": "IANA time zone, e.g. 'Asia/Tokyo'."}),
]
Calendar = Annotated[
    str,
    Strict(),
    AfterValidator(_check_calendar),
    WithJsonSchema(
        {"type": "string", "description": "Holiday calendar (country code), e.g. 'JP'."}
    ),
]
Cron = Annotated[
    str,
    Strict(),
    AfterValidator(_check_cron),
    WithJsonSchema({"type": "string", "description": "Five-field cron: m h dom mon dow."}),
]
Holdout = Annotated[
    float,
    BeforeValidator(_check_holdout),
    WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMaximum": 1}),
]
Weight = Annotated[
    int,
    BeforeValidator(_check_weight),
    WithJsonSchema({"type": "integer", "minimum": 1}),
]
TraitValue = (
    Annotated[str, Strict()]
    | Annotated[bool, Strict()]
    | Annotated[int, Strict()]
    | Annotated[float, Strict()]
    | None
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def _kind_of(kinds: tuple[str, ...]) -> Callable[[Any], str | None]:
    """A discriminator: the tag of a mapping is the first of `kinds` among its keys."""

    def which(value: Any) -> str | None:
        if isinstance(value, Mapping):
            for kind in kinds:
                if kind in value:
                    return _tag(kind, kinds)
            return None
        declared = getattr(value, "kind", None)
        return _tag(declared, kinds) if isinstance(declared, str) and declared in kinds else None

    return which


def _tag(kind: str, kinds: tuple[str, ...]) -> str:
    return f"{kind}-trigger" if kinds is TRIGGER_KINDS else f"{kind}-step"


# --- trigger, goal, exit, re-entry ---------------------------------------------------------


class EventTrigger(_Model):
    """Enroll a customer when an event arrives (and `where` holds)."""

    kind: ClassVar[str] = "event"
    event: EventName
    """The event that enrolls, `<domain>.<action>`."""
    where: Expression | None = None
    """CEL over `event` and `customer`; absent means every such event."""


class ConditionTrigger(_Model):
    """Enroll a customer when a CEL condition over their memory becomes true."""

    kind: ClassVar[str] = "condition"
    condition: Expression
    """CEL over `customer`, evaluated after each change to the memory; false → true enrolls."""


class Schedule(_Model):
    """When a scheduled trigger fires: daily at a customer-local time, or on a cron line."""

    at_local: LocalTime | None = None
    """Fire at this time of day in each customer's own time zone."""
    weekdays: tuple[Weekday, ...] | None = Field(default=None, min_length=1)
    """With `at_local`: only on these days (default every day)."""
    cron: Cron | None = None
    """Fire at these times in `timezone` (all customers at once)."""
    timezone: TimeZone | None = None
    """With `cron`: its time zone (default the journey's `timezone_fallback`)."""

    @model_validator(mode="after")
    def _one_form(self) -> Schedule:
        if (self.at_local is None) == (self.cron is None):
            raise PydanticCustomError("schema", "a schedule has exactly one of at_local, cron")
        if self.cron is not None and self.weekdays is not None:
            raise PydanticCustomError("schema", "weekdays go with at_local; cron has its own")
        if self.at_local is not None and self.timezone is not None:
            raise PydanticCustomError(
                "schema", "at_local is in each customer's time zone; timezone goes with cron"
            )
        return self


class ScheduleTrigger(_Model):
    """Enroll the audience (`where`) on a schedule."""

    kind: ClassVar[str] = "schedule"
    schedule: Schedule
    where: Expression | None = None
    """CEL over `customer`: who is enrolled when the schedule fires."""


Trigger = Annotated[
    Annotated[EventTrigger, Tag("event-trigger")]
    | Annotated[ConditionTrigger, Tag("condition-trigger")]
    | Annotated[ScheduleTrigger, Tag("schedule-trigger")],
    Discriminator(
        _kind_of(TRIGGER_KINDS),
        custom_error_type="schema",
        custom_error_message="a trigger has one of: event, condition, schedule",
    ),
]
AnyTrigger = EventTrigger | ConditionTrigger | ScheduleTrigger


class Goal(_Model):
    """The event that counts as converted; reaching it ends the enrollment."""

    event: EventName
    where: Expression | None = None
    """CEL over `event`, `customer` and `trigger`."""
    within: Duration | None = None
    """Counts only this long after enrolling (default: while enrolled)."""


class ExitEvent(_Model):
    """An event that ends a running enrollment at once (e.g. an unsubscribe)."""

    event: EventName
    where: Expression | None = None
    """CEL over `event`, `customer` and `trigger`."""


class Reentry(_Model):
    """Whether a customer who was enrolled before may enroll again."""

    policy: Literal["never", "after", "always"] = "never"
    cooldown: Duration | None = None
    """With `after`: time since the previous enrollment ended."""

    @model_validator(mode="after")
    def _cooldown_with_after(self) -> Reentry:
        if self.policy == "after" and self.cooldown is None:
            raise PydanticCustomError("schema", "policy 'after' needs a cooldown, e.g. '30d'")
        if self.policy != "after" and self.cooldown is not None:
            raise PydanticCustomError("schema", "cooldown goes with policy 'after' only")
        return self


# --- templates -----------------------------------------------------------------------------


class EmailContent(_Model):
    """An email in one locale (Jinja2 text)."""

    subject: Text
    text: Text
    """The plain-text body."""
    html: Text | None = None


class LineContent(_Model):
    """A LINE text message in one locale."""

    text: Text


class SmsContent(_Model):
    """An SMS in one locale."""

    text: Text


class PushContent(_Model):
    """An app push notification in one locale."""

    title: Text
    body: Text


ChannelContent = EmailContent | LineContent | SmsContent | PushContent


class Template(_Model):
    """A message: content per channel, per locale. Channels it lacks cannot send it."""

    email: Mapping[Locale, EmailContent] | None = None
    line: Mapping[Locale, LineContent] | None = None
    sms: Mapping[Locale, SmsContent] | None = None
    push: Mapping[Locale, PushContent] | None = None

    @model_validator(mode="after")
    def _some_channel(self) -> Template:
        if not self.channels():
            raise PydanticCustomError(
                "schema", "a template has content for at least one of: email, line, sms, push"
            )
        return self

    def channels(self) -> tuple[str, ...]:
        """The channels with content, in `topics.CHANNELS` order."""
        return tuple(c for c in topics.CHANNELS if self.content(c) is not None)

    def content(self, channel: str) -> Mapping[str, ChannelContent] | None:
        """Locale → content for `channel`, or None when the template lacks the channel."""
        value: Mapping[str, ChannelContent] | None = getattr(self, channel, None)
        return value


# --- steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """An edge of the step graph: `label` names the field, `target` None ends the journey."""

    label: str
    target: str | None
    path: tuple[str | int, ...]
    """Where the target is written, relative to the step; () when it is the implicit next."""


class _Step(_Model):
    id: StepId
    """Unique within the journey; the interpreter, analytics and migrations use it."""
    description: str | None = None
    """Why this step exists, for people."""


class _FlowStep(_Step):
    next: StepId | None = None
    """The step after this one; default: the following step in the list (or the end)."""


class Send(_Model):
    """Send a template on a channel, respecting consent, caps and quiet hours."""

    channel: SendChannel
    """A channel, or `preferred`: the customer's preferred channel."""
    fallback: tuple[Channel, ...] = ()
    """Tried in order when the channel is not allowed or reachable (for `preferred`,
    default the customer's own fallback order)."""
    template: TemplateId
    on_quiet_hours: Literal["defer", "skip"] = "defer"
    """During the customer's quiet hours: wait until they end (defer) or skip the send."""


class SendStep(_FlowStep):
    kind: ClassVar[str] = "send"
    send: Send


class TraitDate(_Model):
    """A date held in a customer trait (ISO `YYYY-MM-DD` or `MM-DD`), e.g. a birthday."""

    trait: TraitName
    offset: SignedDuration | None = None
    """Added to the date, e.g. '-3d' for three days before."""
    yearly: Annotated[bool, Strict()] = False
    """The next anniversary of the date (birthdays), not the date itself."""


class Wait(_Model):
    """Wait a duration, until a trait date, and/or to the next allowed local time."""

    for_: Duration | None = Field(default=None, alias="for")
    """Wait this long first."""
    until_trait: TraitDate | None = None
    """Wait until this date (00:00 local) instead."""
    at_local: LocalTime | None = None
    """Then on to the next time of day in the customer's time zone."""
    weekdays: tuple[Weekday, ...] | None = Field(default=None, min_length=1)
    """With `at_local`: only on these days."""
    skip_holidays: Annotated[bool, Strict()] = False
    """With `at_local`: not on holidays of `calendar`."""
    calendar: Calendar | None = None
    """The holiday calendar (default the journey's)."""
    on_missing: StepId | None = None
    """With `until_trait`: where to go when the trait is absent or not a date (default: end)."""

    @model_validator(mode="after")
    def _consistent(self) -> Wait:
        if self.for_ is None and self.until_trait is None and self.at_local is None:
            raise PydanticCustomError("schema", "a wait needs for, until_trait or at_local")
        if self.for_ is not None and self.until_trait is not None:
            raise PydanticCustomError("schema", "a wait has for or until_trait, not both")
        if self.at_local is None and (self.weekdays is not None or self.skip_holidays):
            raise PydanticCustomError("schema", "weekdays and skip_holidays need at_local")
        if self.on_missing is not None and self.until_trait is None:
            raise PydanticCustomError("schema", "on_missing goes with until_trait")
        return self


class WaitStep(_FlowStep):
    kind: ClassVar[str] = "wait"
    wait: Wait


class WaitFor(_Model):
    """Wait for an event (matching `where`) or the timeout, whichever comes first."""

    event: EventName
    where: Expression | None = None
    """CEL over `event`, `customer` and `trigger`."""
    timeout: Duration
    on_event: StepId | None = None
    """Where to go when the event comes (default: next)."""
    on_timeout: StepId | None = None
    """Where to go on timeout (default: next)."""


class WaitForStep(_FlowStep):
    kind: ClassVar[str] = "wait_for"
    wait_for: WaitFor


class BranchIf(_Model):
    """A case: when the condition holds, go to `then`."""

    if_: Expression = Field(alias="if")
    """CEL over `customer`, `event` (the last event waited for, else the trigger) and `trigger`."""
    then: StepId


class BranchElse(_Model):
    """The last case: where to go when no condition holds (default: next)."""

    else_: StepId = Field(alias="else")


BranchCase = Annotated[
    Annotated[BranchIf, Tag("if-case")] | Annotated[BranchElse, Tag("else-case")],
    Discriminator(
        lambda v: (
            ("if-case" if "if" in v else "else-case" if "else" in v else None)
            if isinstance(v, Mapping)
            else ("if-case" if isinstance(v, BranchIf) else "else-case")
        ),
        custom_error_type="schema",
        custom_error_message="a branch case is {if: <CEL>, then: <step>} or {else: <step>}",
    ),
]


class BranchStep(_FlowStep):
    kind: ClassVar[str] = "branch"
    branch: tuple[BranchCase, ...] = Field(min_length=1)
    """Cases tried in order; the first that holds wins."""


class SplitVariant(_Model):
    """One arm of an A/B/n split."""

    weight: Weight
    next: StepId
    name: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_ID_CHARS)] | None = None
    """Shown in the dispatch's why; default `v<index>` (from 0)."""


class SplitStep(_FlowStep):
    kind: ClassVar[str] = "split"
    split: tuple[SplitVariant, ...] = Field(min_length=2)

    def choose(self, journey_id: str, customer_id: str) -> SplitVariant:
        """The customer's variant: stable across versions and replays (docs: "Splits")."""
        total = sum(v.weight for v in self.split)
        point = _hash64(journey_id, self.id, customer_id) % total
        for variant in self.split:
            if point < variant.weight:
                return variant
            point -= variant.weight
        raise AssertionError("unreachable: point < total")

    def variant_name(self, index: int) -> str:
        return self.split[index].name or f"v{index}"


class Update(_Model):
    """Change the customer's memory: set traits, add or remove tags."""

    set_: Mapping[TraitName, TraitValue] | None = Field(default=None, alias="set")
    tag: tuple[TagName, ...] = ()
    untag: tuple[TagName, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> Update:
        if not self.set_ and not self.tag and not self.untag:
            raise PydanticCustomError("schema", "an update needs set, tag or untag")
        return self


class UpdateStep(_FlowStep):
    kind: ClassVar[str] = "update"
    update: Update


class ExitSpec(_Model):
    """End the enrollment here (completed, with the reason)."""

    reason: Annotated[str, Strict(), Field(min_length=1)] | None = None


class ExitStep(_Step):
    kind: ClassVar[str] = "exit"
    exit: Annotated[ExitSpec, BeforeValidator(_empty_mapping)]


Step = Annotated[
    Annotated[SendStep, Tag("send-step")]
    | Annotated[WaitStep, Tag("wait-step")]
    | Annotated[WaitForStep, Tag("wait_for-step")]
    | Annotated[BranchStep, Tag("branch-step")]
    | Annotated[SplitStep, Tag("split-step")]
    | Annotated[UpdateStep, Tag("update-step")]
    | Annotated[ExitStep, Tag("exit-step")],
    Discriminator(
        _kind_of(STEP_KINDS),
        custom_error_type="schema",
        custom_error_message="a step has an id and one of: " + ", ".join(STEP_KINDS),
    ),
]
AnyStep = SendStep | WaitStep | WaitForStep | BranchStep | SplitStep | UpdateStep | ExitStep
# Tags pydantic puts in error locations; they are not keys of the source.
UNION_TAGS: Final = frozenset(
    {
        *(f"{k}-step" for k in STEP_KINDS),
        *(f"{k}-trigger" for k in TRIGGER_KINDS),
        "if-case",
        "else-case",
    }
)


def step_transitions(step: AnyStep, default_next: str | None) -> tuple[Transition, ...]:
    """Every edge out of `step`, given where its implicit next leads."""
    if isinstance(step, ExitStep):
        return ()
    nxt = step.next if step.next is not None else default_next
    nxt_path: tuple[str | int, ...] = ("next",) if step.next is not None else ()
    fall = Transition("next", nxt, nxt_path)
    if isinstance(step, WaitForStep):
        w = step.wait_for
        return (
            _or_next("on_event", w.on_event, ("wait_for", "on_event"), fall),
            _or_next("on_timeout", w.on_timeout, ("wait_for", "on_timeout"), fall),
        )
    if isinstance(step, BranchStep):
        edges: list[Transition] = []
        has_else = False
        for i, case in enumerate(step.branch):
            if isinstance(case, BranchIf):
                edges.append(Transition(f"branch[{i}].then", case.then, ("branch", i, "then")))
            else:
                has_else = True
                edges.append(Transition("else", case.else_, ("branch", i, "else")))
        if not has_else:
            edges.append(Transition("else", fall.target, fall.path))
        return tuple(edges)
    if isinstance(step, SplitStep):
        return tuple(
            Transition(step.variant_name(i), v.next, ("split", i, "next"))
            for i, v in enumerate(step.split)
        )
    if isinstance(step, WaitStep) and step.wait.on_missing is not None:
        return (fall, Transition("on_missing", step.wait.on_missing, ("wait", "on_missing")))
    return (fall,)


def _or_next(
    label: str, target: str | None, path: tuple[str | int, ...], fall: Transition
) -> Transition:
    return (
        Transition(label, target, path)
        if target is not None
        else Transition(label, fall.target, fall.path)
    )


# --- the journey ---------------------------------------------------------------------------


class Journey(_Model):
    """A journey definition: who enters, what happens to them, and when it ends."""

    id: JourneyId
    """Slug, e.g. 'f2-second-purchase'; the workflow id is `journey:{id}:{customer_id}`."""
    name: Text
    description: str | None = None
    designer: Text
    """Who designed it (shown in every message's why)."""
    trigger: Trigger
    goal: Goal | None = None
    exit: tuple[ExitEvent, ...] = ()
    """Events that end a running enrollment (exited)."""
    reentry: Reentry = Reentry()
    holdout: Holdout = 0.0
    """Share of enrollments that get no messages, to measure lift: 0 <= holdout < 1."""
    enrollment_cap: Annotated[int, Strict(), Field(ge=1)] | None = None
    """At most this many enrollments in total (all versions); later triggers are ignored."""
    timezone_fallback: TimeZone = clock.DEFAULT_TIMEZONE
    """The time zone of customers who have none."""
    calendar: Calendar | None = None
    """Default holiday calendar of `skip_holidays` waits."""
    locales: tuple[Locale, ...] = Field(default=("ja", "en"), min_length=1)
    """Locales every template must cover; the first is for customers in any other locale."""
    templates: Mapping[TemplateId, Template] = {}
    steps: tuple[Step, ...] = Field(min_length=1)
    """Run in order from the first; a step's `next` (or a branch, split or wait_for target)
    jumps."""

    _by_id: dict[str, AnyStep] = PrivateAttr(default_factory=dict)
    _default_next: dict[str, str | None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        for index, step in enumerate(self.steps):
            self._by_id.setdefault(step.id, step)
            following = self.steps[index + 1].id if index + 1 < len(self.steps) else None
            self._default_next.setdefault(step.id, following)

    @property
    def first_step(self) -> AnyStep:
        """Where every enrollment starts."""
        return self.steps[0]

    @property
    def steps_by_id(self) -> Mapping[str, AnyStep]:
        """Step id → step (the first, should ids repeat in an invalid journey)."""
        return self._by_id

    def step(self, step_id: str) -> AnyStep:
        """The step called `step_id`; KeyError when there is none."""
        return self._by_id[step_id]

    def next_of(self, step_id: str) -> str | None:
        """Where `step_id` goes by default: its `next`, else the following step; None ends."""
        step = self._by_id[step_id]
        if isinstance(step, ExitStep):
            return None
        return step.next if step.next is not None else self._default_next[step_id]

    def transitions(self, step_id: str) -> tuple[Transition, ...]:
        """Every edge out of `step_id`, with implicit targets resolved."""
        return step_transitions(self._by_id[step_id], self._default_next[step_id])

    def trigger_events(self) -> frozenset[str]:
        """Events that may enroll a customer (empty for condition and schedule triggers)."""
        trigger: AnyTrigger = self.trigger
        return frozenset({trigger.event}) if isinstance(trigger, EventTrigger) else frozenset()

    def lifetime_events(self) -> frozenset[str]:
        """Events a running enrollment listens for at every step: exit events and the goal."""
        names = {e.event for e in self.exit}
        if self.goal is not None:
            names.add(self.goal.event)
        return frozenset(names)

    def awaited_events(self) -> frozenset[str]:
        """Every event a running enrollment may need: exits, goal and any `wait_for` event.

        The stream processor routes to Temporal only these (and `trigger_events()`).
        """
        waited = {s.wait_for.event for s in self.steps if isinstance(s, WaitForStep)}
        return self.lifetime_events() | waited

    def awaited_events_at(self, step_id: str) -> frozenset[str]:
        """What an enrollment sitting at `step_id` waits for now."""
        step = self._by_id[step_id]
        if isinstance(step, WaitForStep):
            return self.lifetime_events() | {step.wait_for.event}
        return self.lifetime_events()

    def template(self, template_id: str) -> Template:
        """The declared template; KeyError when undeclared."""
        return self.templates[template_id]

    def in_holdout(self, customer_id: str) -> bool:
        """Whether the customer is in the holdout group (stable across versions)."""
        return in_holdout(self.id, self.holdout, customer_id)


def in_holdout(journey_id: str, holdout: float, customer_id: str) -> bool:
    """Whether `customer_id` is in the `holdout` share of `journey_id`: the one hashing rule.

    The stream processor calls it with the share from the trigger index (it has no `Journey`).
    """
    if holdout <= 0:
        return False
    return _hash64(journey_id, "holdout", customer_id) < holdout * 2**64


def _hash64(*parts: str) -> int:
    """First 8 bytes, big-endian, of SHA-256 over the parts joined by U+001F."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")
