"""The validator never crashes: random text and random structures give findings, not exceptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enishi.journeys import validate

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples" / "journeys" / "f2-second-purchase.yaml"
).read_text(encoding="utf-8")

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TOKENS = [*"abcxyz0189 -:{}[],\n\t\"'#&*!|>?.@%`~\\", "steps", "id: ", "- ", "send", "wait", "  "]
yaml_ish = st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join) | st.text(max_size=100)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "7d",
            "0",
            "-1d",
            "email",
            "preferred",
            "order.completed",
            "a",
            "10:00",
            "customer.x ==",
            "{{ x",
        ]
    )
)
keys = st.sampled_from(
    [
        "id",
        "name",
        "designer",
        "trigger",
        "event",
        "where",
        "steps",
        "send",
        "wait",
        "wait_for",
        "branch",
        "split",
        "update",
        "exit",
        "channel",
        "template",
        "templates",
        "for",
        "timeout",
        "next",
        "if",
        "then",
        "else",
        "weight",
        "holdout",
        "email",
        "ja",
        "en",
        "text",
        "subject",
        "on_event",
        "on_timeout",
        "at_local",
        "until_trait",
        "trait",
        "set",
        "tag",
        "x",
    ]
)
structures = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def _assert_findings_only(source: str) -> None:
    result = validate(source)
    assert all(d.code != "internal" for d in result.diagnostics), result.diagnostics
    assert (result.journey is None) == (not result.ok)


@_SETTINGS
@given(yaml_ish)
def test_random_text_never_crashes(text: str) -> None:
    _assert_findings_only(text)


@_SETTINGS
@given(structures)
def test_random_structures_never_crash(data: Any) -> None:
    _assert_findings_only(json.dumps(data, default=str))


@_SETTINGS
@given(st.data())
def test_mutated_example_never_crashes(data: st.DataObject) -> None:
    doc = yaml.safe_load(EXAMPLE)
    steps = doc["steps"]
    index = data.draw(st.integers(0, len(steps) - 1))
    step = steps[index]
    key = data.draw(st.sampled_from(sorted(step)))
    step[key] = data.draw(structures)
    if data.draw(st.booleans()):
        doc[data.draw(keys)] = data.draw(structures)
    _assert_findings_only(yaml.safe_dump(doc, allow_unicode=True))


@_SETTINGS
@given(st.integers(0, len(EXAMPLE)), st.text(max_size=5))
def test_example_with_text_spliced_in_never_crashes(at: int, insert: str) -> None:
    _assert_findings_only(EXAMPLE[:at] + insert + EXAMPLE[at:])
