"""Figures of a benchmark run: samples, the best of them, ratios to raw limits, a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured rate; each run adds a sample, the best sample is the figure.

    The box is shared and has two cores, so a run is slowed by whatever else runs: the
    best of several runs is the least disturbed one (design.md §8).
    """

    key: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    limit: str | None = None
    """Key of the raw figure this one is a ratio to."""
    goal_ratio: float | None = None
    goal_value: float | None = None
    note: str = ""

    @property
    def best(self) -> float:
        return max(self.samples) if self.samples else 0.0


def ratio(figure: Figure, figures: dict[str, Figure]) -> float | None:
    """`figure` over its raw limit, best against best."""
    if figure.limit is None or figure.limit not in figures:
        return None
    limit = figures[figure.limit].best
    return figure.best / limit if limit else None


def verdict(figure: Figure, figures: dict[str, Figure]) -> str:
    """`met` / `NOT met` against the figure's goal, empty when it has none."""
    share = ratio(figure, figures)
    if figure.goal_ratio is not None and share is not None:
        return "met" if share >= figure.goal_ratio else "NOT met"
    if figure.goal_value is not None:
        return "met" if figure.best >= figure.goal_value else "NOT met"
    return ""


def _goal(figure: Figure, figures: dict[str, Figure]) -> str:
    if figure.goal_ratio is not None and figure.limit in figures:
        return f">= {figure.goal_ratio:g} x {figures[figure.limit].label}"
    if figure.goal_value is not None:
        return f">= {figure.goal_value:,.0f} {figure.unit}"
    return ""


def table(figures: dict[str, Figure]) -> str:
    """The figures as a Markdown table (it reads in a terminal too)."""
    header = ("figure", "best", "unit", "runs", "ratio", "to", "goal", "verdict")
    rows = [header]
    for figure in figures.values():
        share = ratio(figure, figures)
        rows.append(
            (
                figure.label,
                f"{figure.best:,.0f}",
                figure.unit,
                " / ".join(f"{s:,.0f}" for s in figure.samples),
                "" if share is None else f"{share:.2f}",
                figures[figure.limit].label if share is not None and figure.limit else "",
                _goal(figure, figures),
                verdict(figure, figures),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def as_json(figures: dict[str, Figure], **context: Any) -> dict[str, Any]:
    """The run as JSON: context (machine, sizes) and every figure with its ratio."""
    return {
        **context,
        "figures": {
            key: {
                "label": f.label,
                "unit": f.unit,
                "best": round(f.best, 1),
                "samples": [round(s, 1) for s in f.samples],
                "limit": f.limit,
                "ratio": None if (r := ratio(f, figures)) is None else round(r, 3),
                "goal_ratio": f.goal_ratio,
                "goal_value": f.goal_value,
                "verdict": verdict(f, figures) or None,
                "note": f.note or None,
            }
            for key, f in figures.items()
        },
    }
