"""bench/report.py: the best sample, ratios, verdicts against each kind of goal, the docs block."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import BEGIN, END, Figure, as_json, number, ratio, refresh, table, verdict


def _figures() -> dict[str, Figure]:
    return {
        "raw": Figure("raw", "raw thing", "/s", samples=[100.0, 80.0]),
        "project": Figure("project", "project thing", "/s", [40.0, 60.0], "raw", goal_ratio=0.5),
        "latency": Figure(
            "latency", "p99", "ms", [700.0, 400.0], goal_max=500, lower_is_better=True
        ),
        "floor": Figure("floor", "floor", "/s", [9_000.0], goal_value=10_000),
    }


def test_best_is_the_highest_rate_and_the_lowest_of_a_lower_is_better_figure() -> None:
    figures = _figures()
    assert figures["raw"].best == 100.0
    assert figures["latency"].best == 400.0
    assert Figure("empty", "empty", "/s").best == 0.0


def test_ratio_is_best_over_best_and_verdicts_follow_each_kind_of_goal() -> None:
    figures = _figures()
    assert ratio(figures["project"], figures) == pytest.approx(0.6)
    assert ratio(figures["raw"], figures) is None
    assert verdict(figures["project"], figures) == "met"
    assert verdict(figures["latency"], figures) == "met"
    assert verdict(figures["floor"], figures) == "NOT met"
    assert verdict(figures["raw"], figures) == ""
    figures["latency"].samples = [501.0]
    assert verdict(figures["latency"], figures) == "NOT met"


def test_table_and_json_carry_every_figure_with_its_ratio() -> None:
    figures = _figures()
    text = table(figures)
    assert "| project thing " in text and "| 0.60 " in text and ">= 0.5 x raw thing" in text
    document = as_json(figures, {"extra": 1}, mode="quick")
    assert document["figures"]["project"]["ratio"] == 0.6
    assert document["figures"]["latency"]["best"] == 400.0
    assert document["details"] == {"extra": 1} and document["mode"] == "quick"


def test_number_keeps_small_figures_readable() -> None:
    assert number(12_345.6) == "12,346"
    assert number(11.14) == "11.1"
    assert number(0.5) == "0.50"
    assert number(3.0) == "3"


def test_refresh_replaces_only_the_block(tmp_path: Path) -> None:
    document = tmp_path / "benchmarks.md"
    document.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold run\n{END}\n\nafter\n")
    refresh(document, "new run\n")
    assert document.read_text() == f"# Title\n\nbefore\n\n{BEGIN}\nnew run\n{END}\n\nafter\n"


def test_refresh_refuses_a_document_without_the_block(tmp_path: Path) -> None:
    document = tmp_path / "benchmarks.md"
    document.write_text("# Title\n")
    with pytest.raises(ValueError, match="no .* block"):
        refresh(document, "new run")
    assert document.read_text() == "# Title\n"
