"""Live progress of a demo run: the services' own metrics next to the demo's accounting.

Counters are scraped from each service's `/metrics` (names in enishi/metrics.py) and shown as
the change since the run began; the stack may be shared, so these are context, while the
accounting (enishi/demo/tally.py) counts only this run's customers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

from enishi.demo.feed import FeedCounts
from enishi.demo.stack import Stack
from enishi.demo.tally import Tally
from enishi.topics import CHANNELS

SCRAPED: Final = ("stream", *CHANNELS)
SCRAPE_TIMEOUT: Final = 2.0
Sample = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class MetricsDelta:
    """Counter values now minus at the start of the run, by (sample name, labels)."""

    baseline: dict[Sample, float] = field(default_factory=dict)
    current: dict[Sample, float] = field(default_factory=dict)

    def delta(self, name: str, **labels: str) -> float:
        """Sum of the matching samples' growth (labels not given match any value)."""
        total = 0.0
        for (sample, sample_labels), value in self.current.items():
            if sample != name:
                continue
            found = dict(sample_labels)
            if all(found.get(k) == v for k, v in labels.items()):
                total += value - self.baseline.get((sample, sample_labels), 0.0)
        return total

    def by_label(self, name: str, label: str, **labels: str) -> Counter[str]:
        values: Counter[str] = Counter()
        for sample, sample_labels in self.current:
            found = dict(sample_labels)
            if sample == name and label in found:
                grown = self.delta(name, **{**labels, label: found[label]})
                values[found[label]] = int(grown)
        return values


async def scrape(stack: Stack) -> dict[Sample, float]:
    """Every counter sample of the scraped services (a service that does not answer: none)."""
    samples: dict[Sample, float] = {}
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(service: str) -> str:
            try:
                async with session.get(stack.metrics_url(service)) as response:
                    return await response.text()
            except (aiohttp.ClientError, TimeoutError):
                return ""

        texts = await asyncio.gather(*(one(s) for s in SCRAPED))
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.type != "counter":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = tuple(sorted(sample.labels.items()))
                    key = (sample.name, labels)
                    samples[key] = samples.get(key, 0.0) + sample.value
    return samples


class Rate:
    """Items per second over the last few seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self._window = window
        self._points: list[tuple[float, int]] = []

    def update(self, total: int) -> float:
        now = time.monotonic()
        self._points.append((now, total))
        while len(self._points) > 2 and now - self._points[0][0] > self._window:
            self._points.pop(0)
        (t0, n0), (t1, n1) = self._points[0], self._points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _counts(values: Mapping[str, int]) -> str:
    shown = [f"{k} {v}" for k, v in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])) if v]
    return ", ".join(shown) or "-"


def live_view(
    *,
    run_id: str,
    elapsed: float,
    feed: FeedCounts,
    events_per_second: float,
    enrollments_per_second: float,
    tally: Tally,
    expected: Mapping[str, int],
    metrics: MetricsDelta,
) -> Group:
    """The table refreshed while the run goes on."""
    table = Table(title=f"enishi demo {run_id}: {elapsed:4.0f}s", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("now")
    table.add_column("source", style="dim")
    sent_total = feed.calls_and_events
    table.add_row(
        "sent to enishi",
        f"{feed.phase}: {sent_total} calls/events ({events_per_second:,.0f}/s); "
        f"{feed.identified} identified, {feed.history} history, {feed.live} live",
        "demo (gRPC)",
    )
    table.add_row(
        "stream processor",
        f"{metrics.delta('enishi_stream_records_total', outcome='applied'):.0f} applied, "
        f"{metrics.delta('enishi_temporal_calls_total'):.0f} Temporal calls",
        "stream /metrics",
    )
    decisions = metrics.by_label("enishi_trigger_decisions_total", "outcome")
    table.add_row("trigger decisions", _counts(decisions), "stream /metrics")
    entered = tally.by_journey()
    progress = ", ".join(f"{j} {entered[j]}/{n}" for j, n in sorted(expected.items()))
    table.add_row(
        "enrollments",
        f"{progress or '-'} ({enrollments_per_second:,.1f}/s)",
        "journey.entered",
    )
    table.add_row(
        "sent, by channel",
        _counts(tally.sent_by_channel()),
        "message.sent receipts",
    )
    delivered = metrics.by_label("enishi_channel_dispatches_total", "channel", outcome="sent")
    table.add_row("delivered, by channel", _counts(delivered), "channel services /metrics")
    table.add_row("deferred, by reason", _counts(tally.reasons("deferred")), "message.deferred")
    table.add_row("skipped, by reason", _counts(tally.reasons("skipped")), "message.skipped")
    states = tally.states()
    table.add_row(
        "still waiting",
        f"{states['waiting']} before their send, {states['dispatched']} dispatched, no receipt yet",
        "enrollments − outcomes",
    )
    return Group(table, Text(""))
