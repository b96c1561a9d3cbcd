"""The examples validate clean, the JSON Schema is fresh and agrees, the model is walkable."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # no stubs; pyproject is not ours to change
import pytest
import yaml

from enishi.journeys import parse_journey, validate
from enishi.journeys import schema as journey_schema
from enishi.journeys.model import SplitStep, Template, WaitForStep
from enishi.topics import CHANNELS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "journeys").glob("*.yaml"))


def test_the_six_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {
        "welcome-series",
        "f2-second-purchase",
        "ask-after-a-month",
        "cart-abandonment",
        "lapsing-reengagement",
        "birthday",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_without_findings(path: Path) -> None:
    result = validate(path.read_text(encoding="utf-8"))
    assert result.diagnostics == ()
    assert result.journey is not None and result.journey.id == path.stem


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_satisfies_the_published_json_schema(path: Path) -> None:
    schema = json.loads(journey_schema.SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text("utf-8")))


def test_schema_file_is_fresh() -> None:
    assert journey_schema.SCHEMA_FILE.read_text(encoding="utf-8") == journey_schema.render(), (
        "docs/journey.schema.json is stale: run python -m enishi.journeys.schema"
    )


def test_json_schema_rejects_a_step_with_two_kinds() -> None:
    schema = json.loads(journey_schema.SCHEMA_FILE.read_text(encoding="utf-8"))
    doc = yaml.safe_load(EXAMPLES[0].read_text("utf-8"))
    send = next(step for step in doc["steps"] if "send" in step)
    send["wait"] = {"for": "1d"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_templates_have_one_field_per_channel() -> None:
    assert set(Template.model_fields) == set(CHANNELS)


def _example(name: str) -> str:
    return next(p for p in EXAMPLES if p.stem == name).read_text(encoding="utf-8")


def test_model_resolves_every_step_and_its_edges() -> None:
    journey = parse_journey(_example("ask-after-a-month"))
    assert journey.first_step.id == "wait_month"
    assert journey.next_of("ask") == "reply"
    reply = journey.step("reply")
    assert isinstance(reply, WaitForStep)
    edges = {e.label: e.target for e in journey.transitions("reply")}
    assert edges == {"on_event": "listen", "on_timeout": "done"}
    assert [e.target for e in journey.transitions("listen")] == [
        "flag_support",
        "ask_review",
        "done",
    ]
    assert journey.transitions("done") == ()


def test_awaited_and_trigger_events() -> None:
    journey = parse_journey(_example("cart-abandonment"))
    assert journey.trigger_events() == {"cart.updated"}
    assert journey.awaited_events() == {"order.completed", "cart.emptied", "account.deleted"}
    assert journey.awaited_events_at("remind") == {
        "order.completed",
        "cart.emptied",
        "account.deleted",
    }
    condition = parse_journey(_example("lapsing-reengagement"))
    assert condition.trigger_events() == frozenset()
    assert "message.clicked" in condition.awaited_events()


def test_split_is_deterministic_and_roughly_weighted() -> None:
    journey = parse_journey(_example("f2-second-purchase"))
    split = journey.step("offer")
    assert isinstance(split, SplitStep)
    picks = [split.choose(journey.id, f"c{i}").name for i in range(2000)]
    assert picks == [split.choose(journey.id, f"c{i}").name for i in range(2000)]
    assert 850 < picks.count("discount") < 1150


def test_holdout_is_deterministic_and_near_its_share() -> None:
    journey = parse_journey(_example("f2-second-purchase"))
    held = [journey.in_holdout(f"c{i}") for i in range(5000)]
    assert held == [journey.in_holdout(f"c{i}") for i in range(5000)]
    assert 350 < sum(held) < 650  # holdout 0.1
