"""Renders a journey template for one channel and locale in a Jinja2 sandbox.

The context is the customer's memory, the trigger and last awaited event, and the journey
(docs/sending.md, "Rendering"). Missing data renders empty (customer memory is sparse by
nature); unknown top-level names, unsafe attribute access and oversized output are errors,
raised as `RenderError` naming template, channel, locale and field.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
import jinja2.meta
from google.protobuf import json_format
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from enishi.journeys.context import customer_variables
from enishi.journeys.model import Journey
from enishi.memory import model
from enishi.v1 import customer_pb2

TEMPLATE_VARIABLES: Final = frozenset({"customer", "trigger", "event", "journey"})
MAX_FIELD_CHARS: Final = 100_000
# A template may repeat a string or list (`'=' * 20`), but not into megabytes.
_MAX_REPEAT_CHARS: Final = 10_000
_MAX_POWER_EXPONENT: Final = 64
ORDER_COMPLETED: Final = model.ORDER_COMPLETED
SUPPORT_PREFIX: Final = model.SUPPORT_DOMAIN


class RenderError(Exception):
    """A template that cannot be rendered for this customer: permanent, never retried."""

    def __init__(self, template_id: str, channel: str, locale: str, field: str, why: str) -> None:
        self.template_id, self.channel, self.locale, self.field = (
            template_id,
            channel,
            locale,
            field,
        )
        where = f"template {template_id!r}, channel {channel}, locale {locale or '-'}"
        super().__init__(f"{where}{f', field {field}' if field else ''}: {why}")


class _MissingData(jinja2.ChainableUndefined):
    """Missing customer data renders as empty and chains (`customer.traits.a.b`), and
    `| default('...')` applies; anything the sandbox refused raises instead."""

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_exception is not jinja2.UndefinedError:
            self._fail_with_undefined_error()
        return ""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, failing loudly on unsafe access and bounding `*` and `**`."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # lipsum(n) writes n paragraphs, hundreds of megabytes, before the size check runs.
        del self.globals["lipsum"]

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > _MAX_REPEAT_CHARS:
                    raise SecurityError("repetition too large")
            return operator.mul(left, right)
        if op == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_POWER_EXPONENT:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        return super().call_binop(context, op, left, right)


@dataclass(frozen=True)
class Rendered:
    """Rendered content of one channel: field name (`subject`, `text`, ...) -> text."""

    template_id: str
    channel: str
    locale: str
    fields: Mapping[str, str]


def resolve_locale(available: Sequence[str], wanted: Sequence[str], journey_first: str) -> str:
    """The content locale for a customer: the first of `wanted` that matches exactly, then
    by language (`ja-JP` <-> `ja`); else the journey's first locale; else the first available."""
    for locale in wanted:
        if locale and locale in available:
            return locale
    for locale in wanted:
        language = locale.split("-")[0].lower()
        for candidate in available:
            if language and candidate.split("-")[0].lower() == language:
                return candidate
    if journey_first in available:
        return journey_first
    return available[0]


class Renderer:
    """Compiles (once, cached) and renders template fields."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._text = _Sandbox(undefined=_MissingData, autoescape=False)
        self._html = _Sandbox(undefined=_MissingData, autoescape=True)
        self._compile = functools.lru_cache(maxsize=cache_size)(self._compile_uncached)

    def render(
        self,
        journey: Journey,
        template_id: str,
        channel: str,
        wanted_locales: Sequence[str],
        context: Mapping[str, Any],
    ) -> Rendered:
        """Render `template_id` for `channel` in the customer's best locale."""
        try:
            template = journey.template(template_id)
        except KeyError:
            raise RenderError(template_id, channel, "", "", "no such template") from None
        contents = template.content(channel)
        if not contents:
            raise RenderError(template_id, channel, "", "", f"the template has no {channel}")
        locale = resolve_locale(list(contents), wanted_locales, journey.locales[0])
        content = contents[locale]
        fields: dict[str, str] = {}
        for field, source in content.model_dump(exclude_none=True).items():
            try:
                compiled = self._compile(field == "html", source)
                text = compiled.render(context)
            except RenderError:
                raise
            except jinja2.TemplateSyntaxError as exc:
                why = f"syntax error on line {exc.lineno}: {exc.message}"
                raise RenderError(template_id, channel, locale, field, why) from None
            except SecurityError as exc:
                raise RenderError(template_id, channel, locale, field, f"unsafe: {exc}") from None
            except _UnknownName as exc:
                raise RenderError(template_id, channel, locale, field, str(exc)) from None
            except Exception as exc:  # anything a filter or a call can raise
                why = f"{type(exc).__name__}: {exc}"
                raise RenderError(template_id, channel, locale, field, why) from None
            if len(text) > MAX_FIELD_CHARS:
                why = f"rendered {len(text)} characters, more than {MAX_FIELD_CHARS}"
                raise RenderError(template_id, channel, locale, field, why)
            fields[field] = text
        return Rendered(template_id, channel, locale, fields)

    def _compile_uncached(self, html: bool, source: str) -> jinja2.Template:
        env = self._html if html else self._text
        unknown = jinja2.meta.find_undeclared_variables(env.parse(source)) - TEMPLATE_VARIABLES
        if unknown:
            raise _UnknownName(
                f"unknown variable {sorted(unknown)[0]!r}; templates see "
                f"{', '.join(sorted(TEMPLATE_VARIABLES))}"
            )
        return env.from_string(source)


class _UnknownName(Exception):
    """A top-level name outside TEMPLATE_VARIABLES: a typo, never customer data."""


# --- the context ---------------------------------------------------------------------------


def customer_context(
    customer_id: str,
    view: customer_pb2.Customer | None,
    timeline: Sequence[customer_pb2.TimelineEntry],
    locale: str,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """`customer` in templates: what CEL conditions see (`customer_variables`), plus `name`,
    `first_name`, `last_name`, `last_order` and `last_contact`.

    Times are datetimes in the customer's zone; absent values are left out, so they render
    empty and `| default(...)` applies. Addresses (email, phone, ids) are not in the context.
    """
    variables = customer_variables(customer_id, view)
    result: dict[str, Any] = {}
    for key, value in variables.items():
        if isinstance(value, datetime):
            result[key] = value.astimezone(zone)
        elif value is not None:
            result[key] = value
    traits: Mapping[str, Any] = variables["traits"]
    for key in ("first_name", "last_name"):
        if isinstance(traits.get(key), str):
            result[key] = traits[key]
    name = display_name(traits, locale)
    if name:
        result["name"] = name
    result["time_zone"] = str(zone)
    last_order = next((e for e in timeline if e.name == ORDER_COMPLETED), None)
    if last_order is not None:
        result["last_order"] = _entry(last_order, zone)
    last_contact = next((e for e in timeline if e.name.startswith(SUPPORT_PREFIX)), None)
    if last_contact is not None:
        result["last_contact"] = _entry(last_contact, zone)
    return result


def display_name(traits: Mapping[str, Any], locale: str) -> str:
    """`traits.name`, else family and given name in the locale's order (ja: 山田 太郎)."""
    if isinstance(traits.get("name"), str) and traits["name"].strip():
        return str(traits["name"]).strip()
    first = traits.get("first_name") if isinstance(traits.get("first_name"), str) else ""
    last = traits.get("last_name") if isinstance(traits.get("last_name"), str) else ""
    parts = (last, first) if locale.split("-")[0].lower() in ("ja", "zh", "ko") else (first, last)
    return " ".join(p.strip() for p in parts if p and p.strip())


def event_context(
    event_id: str, name: str, occurred_at: datetime | None, props: Mapping[str, Any], zone: ZoneInfo
) -> dict[str, Any]:
    """`trigger` / `event` in templates: id, name, occurred_at (local), props."""
    result: dict[str, Any] = {"id": event_id, "name": name, "props": dict(props)}
    if occurred_at is not None:
        result["occurred_at"] = occurred_at.astimezone(zone)
    return result


def _entry(entry: customer_pb2.TimelineEntry, zone: ZoneInfo) -> dict[str, Any]:
    props: dict[str, Any] = json_format.MessageToDict(entry.props)
    return {
        **props,
        "props": props,
        "name": entry.name,
        "event_id": entry.event_id,
        "at": entry.occurred_at.ToDatetime(tzinfo=UTC).astimezone(zone),
    }
