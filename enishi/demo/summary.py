"""The end of a demo run: the accounting table, the cross-checks, and whom to show.

Every enrollment of the run is sent, failed, deferred, skipped (with a reason) or still
waiting; each number names its source. The sandbox ledger and the channel services' metrics
check the sends from the outside.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich.table import Table

from enishi.demo.population import DemoCustomer
from enishi.demo.tally import STATES, Tally

PROVIDER_CHANNEL: Final = {"smtp": "email", "line": "line", "sms": "sms", "fcm": "push"}
_SOURCES: Final = {
    "sent": "message.sent receipts (channel services)",
    "failed": "message.failed receipts (channel services)",
    "deferred": "message.deferred (send activity)",
    "skipped": "message.skipped (send activity, holdout: workflow)",
    "dispatched": "dispatch.<channel>, no receipt yet",
    "waiting": "journey.entered, no send outcome yet",
}


@dataclass(frozen=True)
class LedgerCounts:
    """The sandbox ledger's deliveries to this run's addresses, by channel."""

    delivered: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)


def ledger_counts(entries: Iterable[Mapping[str, Any]], addresses: set[str]) -> LedgerCounts:
    counts = LedgerCounts()
    for entry in entries:
        if entry.get("to") not in addresses:
            continue
        channel = PROVIDER_CHANNEL.get(str(entry.get("provider")), str(entry.get("provider")))
        (counts.duplicates if entry.get("duplicate") else counts.delivered)[channel] += 1
    return counts


def accounting_table(tally: Tally, expected: Mapping[str, int]) -> Table:
    """One row per journey and a total: enrollments and what became of each."""
    table = Table(title="What became of every enrollment", title_justify="left")
    table.add_column("journey")
    table.add_column("expected", justify="right")
    table.add_column("enrolled", justify="right")
    for state in STATES:
        table.add_column(state, justify="right")
    by_journey = tally.by_journey()
    journeys = sorted(set(expected) | set(by_journey))
    for journey_id in journeys:
        states = tally.states(journey_id)
        table.add_row(
            journey_id,
            str(expected.get(journey_id, 0)),
            str(by_journey[journey_id]),
            *(str(states[s]) for s in STATES),
        )
    totals = tally.states()
    table.add_row(
        "[bold]total[/bold]",
        str(sum(expected.values())),
        str(sum(by_journey.values())),
        *(str(totals[s]) for s in STATES),
        end_section=True,
    )
    return table


def reasons_table(tally: Tally) -> Table:
    table = Table(title="Why not sent (yet)", title_justify="left")
    for column in ("outcome", "reason", "enrollments", "source"):
        table.add_column(column)
    for state in ("deferred", "skipped", "failed"):
        for reason, count in tally.reasons(state).most_common():
            table.add_row(state, reason, str(count), _SOURCES[state])
    return table


def channels_table(
    tally: Tally, ledger: LedgerCounts | None, delivered_metric: Mapping[str, int]
) -> Table:
    table = Table(title="Sends by channel, three ways", title_justify="left")
    table.add_column("channel")
    table.add_column("message.sent receipts", justify="right")
    table.add_column("sandbox ledger", justify="right")
    table.add_column("channel /metrics (whole stack)", justify="right")
    sent = tally.sent_by_channel()
    for channel in ("email", "line", "sms", "push"):
        table.add_row(
            channel,
            str(sent[channel]),
            "?" if ledger is None else str(ledger.delivered[channel]),
            str(delivered_metric.get(channel, 0)),
        )
    return table


def accounting_line(tally: Tally) -> str:
    """`accounting: N enrollments = a sent + b failed + ... (adds up)`."""
    states = tally.states()
    enrolled = len(tally.entered())
    parts = " + ".join(f"{states[s]} {s}" for s in STATES)
    verdict = "adds up" if sum(states.values()) == enrolled else "DOES NOT add up"
    return f"accounting: {enrolled} enrollments = {parts} ({verdict})"


def problems(
    tally: Tally,
    expected: Mapping[str, int],
    ledger: LedgerCounts | None,
    decisions: Mapping[str, int],
) -> list[str]:
    """Why the run does not add up; empty when it does."""
    found = []
    entered = tally.entered()
    if not entered:
        found.append(
            "no enrollment was seen (no journey.entered touchpoint for this run's customers); "
            f"trigger decisions on the stream processor: {dict(decisions) or 'none'}. Look at "
            "`enishi dev status` and .enishi/logs/stream.log, worker.log"
        )
    orphans = tally.orphans()
    if orphans:
        sample = orphans[0]
        found.append(
            f"{len(orphans)} send outcome(s) belong to no seen enrollment, e.g. "
            f"{sample.journey_id} for {sample.customer_id} ({sample.state})"
        )
    by_journey = tally.by_journey()
    for journey_id, count in sorted(expected.items()):
        if by_journey[journey_id] < count:
            found.append(
                f"{journey_id}: {count - by_journey[journey_id]} of {count} triggering events "
                "did not enroll before the timeout (is the journey active? are the stream "
                "processor and the worker keeping up?)"
            )
    states = tally.states()
    if entered and not states["sent"] and not states["deferred"] + states["skipped"]:
        found.append("no enrollment reached a send decision: is the worker running?")
    if ledger is not None:
        sent = tally.sent_by_channel()
        for channel in ("email", "line", "sms", "push"):
            if ledger.delivered[channel] != sent[channel]:
                found.append(
                    f"{channel}: {sent[channel]} message.sent receipts but "
                    f"{ledger.delivered[channel]} deliveries in the sandbox ledger"
                )
    return found


def interesting_customer(tally: Tally, customers: Sequence[DemoCustomer]) -> str | None:
    """A first-time buyer who got their thanks, with the richest history; else anyone sent."""
    sent = {e.customer_id: e for e in tally.entered() if e.state == "sent"}
    candidates = [c for c in customers if c.customer_id in sent]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda c: (
            c.segment == "first_order",
            any(e.name == "support.contacted" for e in c.history),
            len(c.history),
        ),
    ).customer_id
