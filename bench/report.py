"""Figures of a benchmark run: samples, the best of them, ratios to raw limits, a table."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured quantity; each run adds a sample, the best sample is the figure.

    The box is shared and has two cores, so a run is slowed by whatever else runs: the
    best of several runs is the least disturbed one (design.md §8). For rates the best is
    the highest sample; for `lower_is_better` figures (latency, bytes) the lowest.
    """

    key: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    limit: str | None = None
    """Key of the raw figure this one is a ratio to."""
    goal_ratio: float | None = None
    goal_value: float | None = None
    """At least this much."""
    goal_max: float | None = None
    """At most this much."""
    lower_is_better: bool = False
    note: str = ""

    @property
    def best(self) -> float:
        if not self.samples:
            return 0.0
        return min(self.samples) if self.lower_is_better else max(self.samples)


def ratio(figure: Figure, figures: dict[str, Figure]) -> float | None:
    """`figure` over its raw limit, best against best."""
    if figure.limit is None or figure.limit not in figures:
        return None
    limit = figures[figure.limit].best
    return figure.best / limit if limit else None


def verdict(figure: Figure, figures: dict[str, Figure]) -> str:
    """`met` / `NOT met` against the figure's goal, empty when it has none."""
    if not figure.samples:
        return ""
    share = ratio(figure, figures)
    if figure.goal_ratio is not None and share is not None:
        return "met" if share >= figure.goal_ratio else "NOT met"
    if figure.goal_value is not None:
        return "met" if figure.best >= figure.goal_value else "NOT met"
    if figure.goal_max is not None:
        return "met" if figure.best <= figure.goal_max else "NOT met"
    return ""


def number(value: float) -> str:
    """Thousands separated; one decimal below 100 unless whole."""
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.2f}"


def _goal(figure: Figure, figures: dict[str, Figure]) -> str:
    if figure.goal_ratio is not None and figure.limit in figures:
        return f">= {figure.goal_ratio:g} x {figures[figure.limit].label}"
    if figure.goal_value is not None:
        return f">= {number(figure.goal_value)} {figure.unit}"
    if figure.goal_max is not None:
        return f"<= {number(figure.goal_max)} {figure.unit}"
    return ""


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table padded to its columns (it reads in a terminal too)."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = []
    for index, row in enumerate(lines):
        text.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def table(figures: dict[str, Figure]) -> str:
    """The figures as a Markdown table: best, unit, every run, ratio to the raw limit, goal."""
    header = ("figure", "best", "unit", "runs", "ratio", "to", "goal", "verdict", "note")
    rows = []
    for figure in figures.values():
        share = ratio(figure, figures)
        rows.append(
            (
                figure.label,
                number(figure.best) if figure.samples else "-",
                figure.unit,
                " / ".join(number(s) for s in figure.samples),
                "" if share is None else f"{share:.2f}",
                figures[figure.limit].label if share is not None and figure.limit else "",
                _goal(figure, figures),
                verdict(figure, figures),
                figure.note,
            )
        )
    return markdown(header, rows)


def as_json(figures: dict[str, Figure], details: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The run as JSON: context (machine, sizes), every figure with its ratio, the details."""
    return {
        **context,
        "figures": {
            key: {
                "label": f.label,
                "unit": f.unit,
                "best": round(f.best, 3),
                "samples": [round(s, 3) for s in f.samples],
                "limit": f.limit,
                "ratio": None if (r := ratio(f, figures)) is None else round(r, 3),
                "goal_ratio": f.goal_ratio,
                "goal_value": f.goal_value,
                "goal_max": f.goal_max,
                "verdict": verdict(f, figures) or None,
                "note": f.note or None,
            }
            for key, f in figures.items()
        },
        "details": details,
    }


BEGIN = "<!-- bench:run:begin (written by `python -m bench`; edit around it) -->"
END = "<!-- bench:run:end -->"


def refresh(document: Path, text: str) -> None:
    """Replace what stands between BEGIN and END in `document` with `text`."""
    source = document.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(source):
        raise ValueError(f"{document}: no {BEGIN} ... {END} block to refresh")
    document.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text.strip()}\n{END}", source))
