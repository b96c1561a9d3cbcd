"""Rendering: ja and en with locale fallback, the customer as context, a sandbox that holds."""

from __future__ import annotations

import zoneinfo
from typing import Any

import pytest

from enishi.journeys import Journey
from enishi.journeys.model import LineContent, Template
from enishi.sending.render import (
    Renderer,
    RenderError,
    customer_context,
    display_name,
    resolve_locale,
)
from enishi.v1 import customer_pb2
from tests.sending_support import customer, journey

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


def _context(view: customer_pb2.Customer, locale: str = "ja", **extra: Any) -> dict[str, Any]:
    order = customer_pb2.TimelineEntry(name="order.completed", event_id="o1")
    order.props.update({"order_id": "A-100", "amount": 3200})
    order.occurred_at.FromSeconds(1_741_500_000)
    context: dict[str, Any] = {
        "customer": customer_context(view.customer_id, view, [order], locale, TOKYO),
        "trigger": {"id": "ev1", "props": {"product": "急須", "note": "<b>gift</b>"}},
        "journey": {"id": "sending-test", "version": 1, "step": "thanks"},
    }
    context["event"] = context["trigger"]
    context.update(extra)
    return context


def _journey_with(text: str) -> Journey:
    """The test journey with `line_only` replaced, bypassing the validator (which would
    itself evaluate constant expressions such as `9 ** 999999`)."""
    base = journey()
    templates = dict(base.templates)
    line = {"ja": LineContent(text=text), "en": LineContent(text=text)}
    templates["line_only"] = Template(line=line)
    return base.model_copy(update={"templates": templates})


def test_japanese_line_message_uses_the_family_name_first() -> None:
    view = customer(traits={"first_name": "太郎", "last_name": "山田"})
    rendered = Renderer().render(journey(), "thanks", "line", ["ja-JP"], _context(view))
    assert rendered.locale == "ja"
    assert rendered.fields["text"] == "山田 太郎様、急須のご購入ありがとうございます！"


def test_english_email_uses_the_last_order_and_given_name_first() -> None:
    view = customer(traits={"first_name": "Taro", "last_name": "Yamada"})
    rendered = Renderer().render(
        journey(), "thanks", "email", ["en-US"], _context(view, locale="en-US")
    )
    assert rendered.locale == "en"
    assert rendered.fields["subject"] == "Thank you, Taro Yamada"
    assert rendered.fields["text"] == "We received order A-100."


def test_an_unknown_locale_falls_back_to_the_journey_first_locale() -> None:
    assert resolve_locale(["ja", "en"], ["fr-FR", ""], "ja") == "ja"
    assert resolve_locale(["ja", "en"], ["", "en"], "ja") == "en"  # platform default
    assert resolve_locale(["ja-JP", "en"], ["ja"], "en") == "ja-JP"


def test_missing_customer_data_renders_empty_and_default_applies() -> None:
    rendered = Renderer().render(journey(), "thanks", "email", ["ja"], _context(customer()))
    assert rendered.fields["subject"] == "お客様様、ご注文ありがとうございます"


def test_email_html_is_autoescaped_but_text_is_not() -> None:
    view = customer(traits={"name": "<script>x</script>"})
    rendered = Renderer().render(journey(), "thanks", "email", ["ja"], _context(view))
    assert "&lt;script&gt;" in rendered.fields["html"]
    assert "&lt;b&gt;gift&lt;/b&gt;" in rendered.fields["html"]
    assert rendered.fields["subject"].startswith("<script>x</script>")


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ customer.__class__ }}",
        "{{ journey.id.__class__.__base__ }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 999999 }}",
        # Jinja's own globals and the template reference lead back to Python modules.
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ self.__init__.__globals__ }}",
        # The same walks spelled through filters, subscripts, format strings, bound methods.
        "{{ ''|attr('__class__') }}",
        "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
        "{{ trigger.props['__class__'] }}",
        "{{ '{0.__class__.__mro__}'.format('') }}",
        "{{ '{x.__class__}'.format_map({'x': ''}) }}",
        "{{ [].__class__.__base__.__subclasses__() }}",
        "{% set f = ''.join %}{{ f.__self__.__class__ }}",
        "{{ trigger.props.clear() }}",
        "{{ range(10 ** 9) | list }}",
    ],
)
def test_sandbox_escapes_fail_with_a_render_error(text: str) -> None:
    with pytest.raises(RenderError) as caught:
        Renderer().render(_journey_with(text), "line_only", "line", ["ja"], _context(customer()))
    assert "template 'line_only', channel line, locale ja, field text" in str(caught.value)


def test_lipsum_is_not_offered_so_no_template_writes_megabytes_before_the_size_check() -> None:
    with pytest.raises(RenderError, match="unknown variable 'lipsum'"):
        Renderer().render(
            _journey_with("{{ lipsum(1000000) }}"),
            "line_only",
            "line",
            ["ja"],
            _context(customer()),
        )


def test_an_unknown_top_level_variable_is_an_error_naming_it() -> None:
    with pytest.raises(RenderError, match="unknown variable 'custmer'"):
        Renderer().render(
            _journey_with("{{ custmer.name }}"), "line_only", "line", ["ja"], _context(customer())
        )


def test_a_failing_filter_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        Renderer().render(
            _journey_with("{{ 1 / 0 }}"), "line_only", "line", ["ja"], _context(customer())
        )


def test_a_channel_the_template_lacks_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="has no email"):
        Renderer().render(journey(), "line_only", "email", ["ja"], _context(customer()))


def test_display_name_prefers_the_name_trait() -> None:
    assert display_name({"name": "Hanako", "first_name": "X"}, "ja") == "Hanako"
    assert display_name({"first_name": "Hanako"}, "en") == "Hanako"
    assert display_name({}, "en") == ""


def test_customer_context_holds_times_in_the_customer_zone_and_no_addresses() -> None:
    view = customer(email="a@example.jp", traits={"first_name": "太郎"})
    view.counters.orders_count = 2
    view.counters.last_order_at.FromSeconds(1_741_500_000)
    context = customer_context(view.customer_id, view, [], "ja", TOKYO)
    assert context["orders_count"] == 2
    assert context["last_order_at"].utcoffset().total_seconds() == 9 * 3600
    assert "a@example.jp" not in repr(context)
    assert "last_contact" not in context
