"""Each rule of the journey language: a journey breaking it gets a finding at the exact spot.

Sources mark the expected position with `@@`; the helper removes the marker and asserts a
diagnostic with the rule's code sits at that line and column, with the expected path.
"""

from __future__ import annotations

import pytest

from enishi.journeys import Severity, parse_journey, validate
from enishi.journeys.diagnostics import Diagnostic
from enishi.journeys.validate import JourneyInvalid

MARK = "@@"

HEAD = """\
id: demo
name: Demo
designer: tester
trigger: {event: order.completed}
templates:
  hello:
    email:
      ja: {subject: こんにちは, text: "{{ customer.traits.name }}様"}
      en: {subject: Hello, text: "Dear {{ customer.traits.name }}"}
"""


def expect(source: str, code: str, path: str, severity: Severity = Severity.ERROR) -> Diagnostic:
    """The diagnostic `code` found at the `@@` marker of `source`, with `path`."""
    offset = source.index(MARK)
    before = source[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    found = validate(source.replace(MARK, "", 1)).diagnostics
    matching = [d for d in found if d.code == code]
    assert matching, f"no {code!r} among {found}"
    at = [d for d in matching if (d.line, d.column) == (line, column)]
    assert at, f"{code!r} expected at {line}:{column}, found {matching}"
    assert at[0].path == path
    assert at[0].severity is severity
    return at[0]


def codes(source: str) -> list[str]:
    return [d.code for d in validate(source).diagnostics]


def test_a_clean_journey_has_no_findings() -> None:
    source = HEAD + "steps:\n  - id: hi\n    send: {channel: email, template: hello}\n"
    result = validate(source)
    assert result.diagnostics == ()
    assert result.journey is not None and result.ok


def test_yaml_syntax_error_points_at_the_problem() -> None:
    expect("id: demo\nsteps: [\n  {id: a, send: {}\n@@", "yaml", "")


def test_json_sources_are_read_with_positions() -> None:
    source = (
        "{\n\t"
        '"id": "demo",\n\t'
        '"name": "Demo",\n\t'
        '"designer": "t",\n\t'
        '"trigger": {"event": @@"bad"},\n\t'
        '"steps": [{"id": "e", "exit": {}}]\n}'
    )
    expect(source, "bad-event-name", "trigger.event")


def test_missing_field_points_at_the_mapping() -> None:
    d = expect(
        HEAD + "steps:\n  - id: hi\n    send: @@{channel: email}\n",
        "schema",
        "steps[0].send.template",
    )
    assert d.message == "missing field 'template'"


def test_wrong_type_is_a_schema_error_at_the_value() -> None:
    d = expect(
        HEAD.replace("demo", "demo\nenrollment_cap: @@many", 1) + "steps: [{id: x, exit: {}}]\n",
        "schema",
        "enrollment_cap",
    )
    assert "integer" in d.message


def test_unknown_field_points_at_the_key_and_suggests() -> None:
    d = expect(
        HEAD + "steps:\n  - id: hi\n    send: {@@chanel: email, channel: email, template: hello}\n",
        "schema",
        "steps[0].send.chanel",
    )
    assert "did you mean 'channel'" in d.message


def test_a_step_with_two_kinds_is_told_to_split() -> None:
    d = expect(
        HEAD + "steps:\n"
        "  - id: hi\n    send: {channel: email, template: hello}\n    @@wait: {for: 1d}\n",
        "schema",
        "steps[0].wait",
    )
    assert "does one thing" in d.message


def test_unknown_step_reference() -> None:
    d = expect(
        HEAD + "steps:\n"
        "  - id: hi\n    send: {channel: email, template: hello}\n    next: @@hii\n"
        "  - id: bye\n    exit: {}\n",
        "unknown-step",
        "steps[0].next",
    )
    assert "did you mean 'hi'" in d.message


def test_unknown_wait_for_target() -> None:
    expect(
        HEAD + "steps:\n"
        "  - id: w\n    wait_for: {event: message.replied, timeout: 1d, on_timeout: @@nudge2}\n",
        "unknown-step",
        "steps[0].wait_for.on_timeout",
    )


def test_duplicate_step_id() -> None:
    expect(
        HEAD + "steps:\n  - id: a\n    wait: {for: 1d}\n  - id: @@a\n    exit: {}\n",
        "duplicate-step",
        "steps[1].id",
    )


def test_unreachable_step_is_a_warning() -> None:
    expect(
        HEAD + "steps:\n  - id: a\n    exit: {}\n  - id: @@b\n    wait: {for: 1d}\n",
        "unreachable-step",
        "steps[1].id",
        Severity.WARNING,
    )


def test_loop_without_wait() -> None:
    d = expect(
        HEAD + "steps:\n"
        "  - id: @@a\n    send: {channel: email, template: hello}\n"
        "  - id: b\n    update: {tag: [x]}\n    next: a\n",
        "loop-without-wait",
        "steps[0].id",
    )
    assert "a → b → a" in d.message


def test_loop_with_a_wait_is_fine() -> None:
    source = (
        HEAD + "steps:\n"
        "  - id: a\n    send: {channel: email, template: hello}\n"
        "  - id: b\n    wait: {for: 30d}\n    next: a\n"
    )
    assert "loop-without-wait" not in codes(source)


def test_unknown_template() -> None:
    expect(
        HEAD + "steps:\n  - id: a\n    send: {channel: email, template: @@helo}\n",
        "unknown-template",
        "steps[0].send.template",
    )


def test_unknown_channel() -> None:
    expect(
        HEAD + "steps:\n  - id: a\n    send: {channel: @@fax, template: hello}\n",
        "unknown-channel",
        "steps[0].send.channel",
    )


def test_template_without_content_for_the_channel() -> None:
    expect(
        HEAD
        + "steps:\n  - id: a\n    send: {channel: email, fallback: [@@sms], template: hello}\n",
        "template-missing-channel",
        "steps[0].send.fallback[0]",
    )


def test_template_missing_a_declared_locale() -> None:
    source = HEAD.replace("    email:\n", "    @@email:\n").replace(
        '      en: {subject: Hello, text: "Dear {{ customer.traits.name }}"}\n', ""
    )
    d = expect(
        source + "steps:\n  - id: a\n    send: {channel: email, template: hello}\n",
        "missing-locale",
        "templates.hello.email",
    )
    assert "'en'" in d.message


def test_template_syntax() -> None:
    source = HEAD.replace('text: "Dear {{ customer.traits.name }}"', '@@text: "Dear {{ name"')
    source = source.replace("@@text: ", "text: @@")
    expect(
        source + "steps:\n  - id: a\n    send: {channel: email, template: hello}\n",
        "template-syntax",
        "templates.hello.email.en.text",
    )


def test_lipsum_is_an_unknown_template_variable_as_it_is_when_rendering() -> None:
    source = HEAD.replace('"Dear {{ customer.traits.name }}"', '"{{ lipsum(1000000) }}"')
    found = validate(source + "steps:\n  - id: a\n    send: {channel: email, template: hello}\n")
    assert [d.message for d in found.diagnostics if "lipsum" in d.message] == [
        "unknown template variable 'lipsum'; templates see customer, event, journey, trigger"
    ]


@pytest.mark.parametrize("value", ["0", "-1d", "7 days", "400d", "1d1d"])
def test_bad_duration(value: str) -> None:
    expect(
        HEAD + f"steps:\n  - id: w\n    wait_for: {{event: message.replied, timeout: @@{value}}}\n",
        "bad-duration",
        "steps[0].wait_for.timeout",
    )


def test_invalid_cel_points_inside_the_expression() -> None:
    source = HEAD.replace(
        "trigger: {event: order.completed}",
        'trigger: {event: order.completed, where: "customer.x == @@)"}',
    )
    d = expect(source + "steps: [{id: x, exit: {}}]\n", "invalid-cel", "trigger.where")
    assert "invalid CEL" in d.message


def test_unknown_cel_variable() -> None:
    source = (
        HEAD + "steps:\n"
        "  - id: b\n    branch:\n      - if: @@\"cust.phase == 'new'\"\n        then: x\n"
        "  - id: x\n    exit: {}\n"
    )
    d = expect(source, "unknown-variable", "steps[0].branch[0].if")
    assert "'cust'" in d.message


def test_comprehension_variables_are_not_unknown() -> None:
    source = (
        HEAD + "steps:\n"
        "  - id: b\n    branch:\n"
        "      - if: \"customer.tags.exists(t, t == 'vip')\"\n        then: x\n"
        "  - id: x\n    exit: {}\n"
    )
    assert "unknown-variable" not in codes(source)


def test_event_name_grammar() -> None:
    expect(
        HEAD.replace("order.completed", "@@Order Completed") + "steps: [{id: x, exit: {}}]\n",
        "bad-event-name",
        "trigger.event",
    )


@pytest.mark.parametrize("weight", ["0", "-5", "1.5", "true"])
def test_split_weights_must_be_positive_integers(weight: str) -> None:
    source = (
        HEAD + f"steps:\n"
        f"  - id: s\n    split:\n      - {{weight: @@{weight}, next: x}}\n"
        "      - {weight: 1, next: x}\n"
        f"  - id: x\n    exit: {{}}\n"
    )
    expect(source, "bad-weight", "steps[0].split[0].weight")


@pytest.mark.parametrize("holdout", ["1", "-0.1", "1.5", "'10%'"])
def test_holdout_out_of_range(holdout: str) -> None:
    source = HEAD.replace("designer: tester\n", f"designer: tester\nholdout: @@{holdout}\n")
    expect(source + "steps: [{id: x, exit: {}}]\n", "bad-holdout", "holdout")


def test_skip_holidays_needs_a_calendar() -> None:
    expect(
        HEAD + 'steps:\n  - id: w\n    wait: {at_local: "09:00", skip_holidays: @@true}\n',
        "no-calendar",
        "steps[0].wait.skip_holidays",
    )


def test_unquoted_local_time_is_not_sexagesimal() -> None:
    # YAML 1.1 reads 09:00 as the number 540; the core schema keeps it text, so it works.
    source = HEAD + "steps:\n  - id: w\n    wait: {at_local: 09:00}\n"
    assert validate(source).ok


def test_bad_local_time() -> None:
    expect(
        HEAD + 'steps:\n  - id: w\n    wait: {at_local: @@"25:00"}\n',
        "bad-time",
        "steps[0].wait.at_local",
    )


def test_unknown_timezone_and_calendar() -> None:
    source = HEAD.replace(
        "designer: tester\n", "designer: tester\ntimezone_fallback: @@Mars/Olympus\ncalendar: XX\n"
    )
    expect(source + "steps: [{id: x, exit: {}}]\n", "unknown-timezone", "timezone_fallback")
    assert "unknown-calendar" in codes(source.replace(MARK, ""))


def test_reentry_after_needs_a_cooldown() -> None:
    source = HEAD.replace("designer: tester\n", "designer: tester\nreentry: @@{policy: after}\n")
    d = expect(source + "steps: [{id: x, exit: {}}]\n", "schema", "reentry")
    assert "cooldown" in d.message


def test_else_must_be_last() -> None:
    source = (
        HEAD + "steps:\n"
        '  - id: b\n    branch:\n      - @@else: x\n      - {if: "true", then: x}\n'
        "  - id: x\n    exit: {}\n"
    )
    expect(source, "else-not-last", "steps[0].branch[0]")


def test_unused_template_is_a_warning() -> None:
    source = HEAD.replace("  hello:\n", "  @@hello:\n")
    expect(
        source + "steps: [{id: x, exit: {}}]\n",
        "unused-template",
        "templates.hello",
        Severity.WARNING,
    )


def test_duplicate_keys_are_errors() -> None:
    expect(HEAD + "@@name: Again\nsteps: [{id: x, exit: {}}]\n", "duplicate-key", "name")


def test_every_mistake_is_reported_not_just_the_first() -> None:
    source = HEAD + (
        "steps:\n  - id: a\n    send: {channel: fax, template: nope}\n"
        "  - id: b\n    wait: {for: 0d}\n  - id: c\n    wait_for: {event: x, timeout: 1d}\n"
    )
    found = set(codes(source))
    assert {"unknown-channel", "bad-duration", "bad-event-name"} <= found


def test_parse_journey_raises_with_all_errors() -> None:
    with pytest.raises(JourneyInvalid) as info:
        parse_journey(HEAD + "steps:\n  - id: a\n    send: {channel: email, template: nope}\n")
    errors = [d.code for d in info.value.diagnostics if d.severity is Severity.ERROR]
    assert errors == ["unknown-template"]
    assert "steps[0].send.template" in str(info.value)


def test_diagnostic_maps_onto_the_proto() -> None:
    source = HEAD + "steps:\n  - id: a\n    send: {channel: email, template: nope}\n"
    d = next(d for d in validate(source).diagnostics if d.severity is Severity.ERROR)
    proto = d.to_proto()
    assert (proto.code, proto.path, proto.line, proto.column) == (d.code, d.path, d.line, d.column)
    assert proto.severity == 1  # DIAGNOSTIC_SEVERITY_ERROR
