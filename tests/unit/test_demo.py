"""The demo's pure parts: the synthetic population and the accounting of enrollments."""

from __future__ import annotations

from datetime import UTC, datetime

from enishi.demo.population import population
from enishi.demo.summary import accounting_line, ledger_counts, problems
from enishi.demo.tally import Tally
from enishi.v1 import channel_pb2, dispatch_pb2, journey_pb2, touchpoint_pb2

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
PREFIX = "demo-run1-"


def test_population_is_reproducible_and_its_addresses_unique_in_a_run() -> None:
    first, again = population("run1", 500, NOW), population("run1", 500, NOW)
    assert first == again
    emails = [c.email for c in first]
    phones = [c.phone for c in first if c.phone]
    assert len(set(emails)) == len(emails) and len(set(phones)) == len(phones)
    assert all(
        c.line_user_id.startswith("U") and len(c.line_user_id) == 33
        for c in first
        if c.line_user_id
    )
    assert {c.segment for c in first} == {"newcomer", "first_order", "returning", "browsing"}


def test_imported_history_never_looks_live() -> None:
    for customer in population("run1", 300, NOW):
        assert all(e.occurred_at <= NOW for e in customer.history)
        if customer.segment != "newcomer":
            assert all(e.source == "legacy-import" for e in customer.history)
        assert customer.trigger is not None and customer.trigger.source != "legacy-import"


def _entered(customer: str, journey: str = "welcome-series") -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(customer_id=customer, name="journey.entered")
    tp.journey.CopyFrom(
        journey_pb2.JourneyEvent(
            journey_id=journey, version=1, transition=journey_pb2.JOURNEY_TRANSITION_ENTERED
        )
    )
    return tp


def _receipt(customer: str, journey: str = "welcome-series") -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(customer_id=customer, name="message.sent")
    tp.receipt.channel = channel_pb2.CHANNEL_LINE
    tp.receipt.reason.journey_id = journey
    return tp


def _skip(customer: str, name: str, reason: int) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(customer_id=customer, name=name)
    tp.skipped.skip_reason = reason  # type: ignore[assignment]
    tp.skipped.reason.journey_id = "welcome-series"
    return tp


def test_every_enrollment_is_counted_once_in_its_furthest_state() -> None:
    tally = Tally(prefix=PREFIX)
    for n in range(4):
        tally.touchpoint(_entered(f"{PREFIX}{n}"))
    tally.touchpoint(_skip(f"{PREFIX}0", "message.deferred", dispatch_pb2.SKIP_REASON_QUIET_HOURS))
    tally.touchpoint(_receipt(f"{PREFIX}1"))
    tally.touchpoint(_skip(f"{PREFIX}1", "message.deferred", dispatch_pb2.SKIP_REASON_QUIET_HOURS))
    tally.touchpoint(_skip(f"{PREFIX}2", "message.skipped", dispatch_pb2.SKIP_REASON_NO_CONSENT))
    tally.touchpoint(_entered("demo-other-1"))  # another run's customer
    states = tally.states()
    assert (states["deferred"], states["sent"], states["skipped"], states["waiting"]) == (
        1,
        1,
        1,
        1,
    )
    assert tally.reasons("skipped") == {"no_consent": 1}
    assert tally.sent_by_channel() == {"line": 1}
    assert accounting_line(tally).endswith("(adds up)")
    assert "4 enrollments = 1 sent" in accounting_line(tally)


def test_an_outcome_without_its_enrollment_and_a_missing_delivery_are_problems() -> None:
    tally = Tally(prefix=PREFIX)
    tally.touchpoint(_entered(f"{PREFIX}1"))
    tally.touchpoint(_receipt(f"{PREFIX}1"))
    tally.touchpoint(_receipt(f"{PREFIX}2"))  # no journey.entered for it
    ledger = ledger_counts([], addresses=set())
    found = problems(tally, {"welcome-series": 1}, ledger, {})
    assert any("belong to no seen enrollment" in p for p in found)
    assert any("line: 1 message.sent receipts but 0 deliveries" in p for p in found)


def test_the_ledger_counts_only_this_runs_addresses() -> None:
    entries = [
        {"provider": "smtp", "to": "a@example.jp", "duplicate": False},
        {"provider": "smtp", "to": "a@example.jp", "duplicate": True},
        {"provider": "fcm", "to": "token", "duplicate": False},
        {"provider": "line", "to": "U-someone-else", "duplicate": False},
    ]
    counts = ledger_counts(entries, {"a@example.jp", "token"})
    assert counts.delivered == {"email": 1, "push": 1}
    assert counts.duplicates == {"email": 1}
