"""`enishi journey simulate`: every example journey, run by the real JourneyWorkflow on the
time-skipping server over a customer fixture and scripted events, with the real channel
choice, quiet hours, cap windows and rendering (workflows/simulation.py)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from enishi.cli.main import app
from enishi.journeys import parse_journey, waits
from enishi.journeys.model import WaitStep
from enishi.sending import quiet_hours
from workflows.contract import JourneyOutcome
from workflows.simulation import (
    CustomerFixture,
    EventScript,
    SimulationError,
    SimulationReport,
    load_customer,
    load_script,
    simulate,
    start_instant,
)

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Imports passed through the sandbox mid-run (holidays calendars) warn; they are intended.
warnings.filterwarnings("ignore", message="Module .* was imported after initial workflow load")


def journey(name: str) -> str:
    return (EXAMPLES / "journeys" / f"{name}.yaml").read_text(encoding="utf-8")


def customer(name: str) -> CustomerFixture:
    return load_customer((EXAMPLES / "customers" / f"{name}.yaml").read_text(encoding="utf-8"))


def script(name: str) -> EventScript:
    return load_script((EXAMPLES / "events" / f"{name}.yaml").read_text(encoding="utf-8"))


async def start_of(
    env: WorkflowEnvironment, events: EventScript, fixture: CustomerFixture
) -> datetime:
    """The instant the simulation will start at (computed as `simulate` does)."""
    zone = quiet_hours.zone_for(fixture.preferences.time_zone, None, "Asia/Tokyo")
    return start_instant(await env.get_current_time(), events.start, zone)


def local_times(report: SimulationReport) -> list[tuple[str, str, str]]:
    """(step, channel, local HH:MM) of every message that would be sent."""
    return [(s.step_id, s.channel, f"{report.local(s.at):%H:%M}") for s in report.sent()]


async def test_f2_thanks_at_once_on_line_and_a_second_order_converts(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("f2-second-purchase"),
        customer("hanako"),
        script("f2-second-order"),
        env=time_skipping,
    )

    assert report.enrolled and not report.holdout
    first, *later = report.sent()
    assert (first.step_id, first.channel, first.locale) == ("thanks", "line", "ja")
    assert first.at - report.start < timedelta(minutes=1)
    assert f"{report.local(first.at):%a %H:%M}" == "Mon 12:00"
    assert first.fields["text"] == "はじめてのご注文ありがとうございます！"
    assert first.why["designer"] == "crm-team@shop.example"
    assert first.why["trigger_event_id"] == "sim-trigger"
    # A week later at 10:00 local (a JP holiday moves it on), then the second order on day 10
    # ends the journey as converted: no offer is sent.
    assert [(s.step_id, f"{report.local(s.at):%H:%M}") for s in later] == [("how_to_use", "10:00")]
    assert timedelta(days=7) < later[0].at - report.start < timedelta(days=10)
    assert report.outcome == JourneyOutcome("converted", "order.completed", "wait_offer")
    assert all(s.at < report.start + timedelta(days=10) for s in report.sends)


async def test_f2_inside_quiet_hours_defers_to_their_end_then_sends_the_offer(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("f2-second-purchase"),
        customer("hanako"),
        script("f2-no-second-order"),
        env=time_skipping,
    )

    deferred = report.sends[0]
    assert (deferred.step_id, deferred.status, deferred.reason) == (
        "thanks",
        "deferred",
        "quiet_hours",
    )
    assert f"{report.local(deferred.at):%H:%M}" == "22:30"
    assert deferred.retry_at is not None
    assert f"{report.local(deferred.retry_at):%H:%M}" == "08:00"
    assert local_times(report) == [
        ("thanks", "line", "08:00"),
        ("how_to_use", "line", "10:00"),
        ("offer_gift", "email", "19:00"),  # hanako's arm of the split, stable per customer
    ]
    assert report.sent()[-1].why["variant"] == "gift"
    assert report.outcome == JourneyOutcome("completed", "offers_sent", "done")


async def test_first_order_thanks_on_line_then_asks_a_week_later_at_ten(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("first-order-thanks"),
        customer("hanako"),
        script("f2-second-order"),
        env=time_skipping,
    )

    assert local_times(report) == [("thanks", "line", "12:00"), ("how_is_it", "line", "10:00")]
    thanks, how_is_it = report.sent()
    assert (
        thanks.fields["text"]
        == "はじめてのご注文ありがとうございます！南部鉄器の急須をお届けします。"
    )
    assert timedelta(days=7) < how_is_it.at - report.start < timedelta(days=8)
    assert report.outcome == JourneyOutcome("completed", "thanked", "done")


async def test_welcome_series_skips_the_help_for_a_customer_who_ordered(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("welcome-series"), customer("hanako"), script("welcome"), env=time_skipping
    )

    assert local_times(report) == [("welcome", "line", "12:00"), ("tips", "email", "10:00")]
    tips = report.sent()[1]
    assert tips.fields["subject"] == "はじめてのお買い物ガイド"
    steps = [(s.step_id, s.outcome) for s in report.steps]
    assert ("ordered_already", "branch:0") in steps  # orders_count > 0 → done
    assert report.outcome == JourneyOutcome("completed", "welcomed", "done")


async def test_cart_reminder_falls_back_to_email_and_the_order_converts(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("cart-abandonment"),
        customer("hanako"),
        script("cart-abandoned"),
        env=time_skipping,
    )

    [reminder] = report.sent()
    assert (reminder.step_id, reminder.channel) == ("remind", "email")
    assert "push: no opt-in" in reminder.detail
    assert f"{report.local(reminder.at):%H:%M}" == "13:00"
    assert report.outcome == JourneyOutcome("converted", "order.completed", "second_chance")


async def test_ask_after_a_month_routes_a_negative_reply_to_support(
    time_skipping: WorkflowEnvironment,
) -> None:
    source, fixture = journey("ask-after-a-month"), customer("hanako")
    events = script("ask-after-a-month")
    start = await start_of(time_skipping, events, fixture)
    wait = parse_journey(source).step("wait_month")
    assert isinstance(wait, WaitStep)
    ask = waits.wake_at(wait.wait, start, tz=waits.zone("Asia/Tokyo"), calendar="JP", traits={})
    assert isinstance(ask, datetime)
    hours = int((ask - start + timedelta(days=2)).total_seconds() // 3600)
    reply = events.events[0].model_copy(update={"at": f"+{hours}h"})  # two days after the ask
    events = events.model_copy(update={"events": (reply,)})

    report = await simulate(source, fixture, events, env=time_skipping)

    # The reply comes two days after the ask (11:00); the apology goes out at once.
    assert local_times(report) == [("ask", "line", "11:00"), ("sorry", "email", "11:00")]
    assert abs(report.sent()[1].at - report.sent()[0].at - timedelta(days=2)) < timedelta(seconds=1)
    ask_text = report.sent()[0].fields["text"]
    assert "南部鉄器の急須" in ask_text
    assert report.local(report.sent()[0].at).weekday() < 5
    outcomes = [(s.step_id, s.outcome) for s in report.steps]
    assert ("reply", "event:message.replied") in outcomes
    assert ("listen", "branch:0") in outcomes
    assert ("flag_support", "updated") in outcomes
    assert report.outcome == JourneyOutcome("completed", "", "done")


async def test_lapsing_customer_hears_by_email_then_by_sms_when_she_does_not_click(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("lapsing-reengagement"), customer("emma"), script("lapsing"), env=time_skipping
    )

    assert report.enrolled, report.not_enrolled_why
    assert local_times(report) == [("miss_you", "email", "10:00"), ("offer", "sms", "10:00")]
    miss_you, offer = report.sent()
    assert miss_you.locale == "en"
    assert "cast-iron kettle" in miss_you.fields["text"]
    assert offer.fields["text"] == "Free shipping on your next order."
    assert "line: not a LINE friend" in offer.detail
    assert abs(offer.at - miss_you.at - timedelta(days=7)) < timedelta(seconds=1)
    assert report.outcome == JourneyOutcome("completed", "", "done")


async def test_lapsing_does_not_enroll_a_customer_the_condition_does_not_hold_for(
    time_skipping: WorkflowEnvironment,
) -> None:
    fixture = customer("emma").model_copy(
        update={"counters": customer("emma").counters.model_copy(update={"orders_count": 1})}
    )

    report = await simulate(
        journey("lapsing-reengagement"), fixture, script("lapsing"), env=time_skipping
    )

    assert not report.enrolled
    assert "does not hold" in report.not_enrolled_why
    assert report.sends == ()


async def test_weekend_note_from_its_schedule_goes_out_at_ten_local_on_saturday(
    time_skipping: WorkflowEnvironment,
) -> None:
    report = await simulate(
        journey("weekend-note"), customer("hanako"), script("weekend-note"), env=time_skipping
    )

    assert report.enrolled, report.not_enrolled_why
    (note,) = report.sent()
    assert (note.step_id, note.channel) == ("note", "line")
    assert f"{report.local(note.at):%a %H:%M}" == "Sat 10:00"
    assert "南部鉄器の急須" in note.fields["text"]
    assert report.outcome == JourneyOutcome("completed", "noted", "done")


async def test_birthday_greets_at_nine_local_on_the_birthday_and_waits_for_the_next(
    time_skipping: WorkflowEnvironment,
) -> None:
    hanako, events = customer("hanako"), script("birthday")
    start = await start_of(time_skipping, events, hanako)
    birthday = (start + timedelta(days=12)).astimezone(waits.zone("Asia/Tokyo")).date()
    fixture = hanako.model_copy(
        update={"traits": {**hanako.traits, "birthday": f"1990-{birthday:%m-%d}"}}
    )
    events = events.model_copy(update={"horizon": "30d"})

    report = await simulate(journey("birthday"), fixture, events, env=time_skipping)

    [greeting] = report.sent()
    local = report.local(greeting.at)
    assert (local.date(), f"{local:%H:%M}") == (birthday, "09:00")
    assert greeting.channel == "line"
    assert report.outcome is None and report.still_at == "until_birthday"


async def test_a_script_with_a_bad_offset_names_the_field(
    time_skipping: WorkflowEnvironment,
) -> None:
    events = load_script("events: [{at: soon, name: order.completed}]")
    with pytest.raises(SimulationError, match=r"events\[0\]\.at"):
        await simulate(journey("f2-second-purchase"), customer("hanako"), events, env=time_skipping)
    with pytest.raises(SimulationError, match="consents.email"):
        load_customer("customer_id: x\nconsents: {email: maybe}")


def test_the_cli_prints_what_would_be_sent_and_why() -> None:
    result = CliRunner().invoke(
        app,
        [
            "journey",
            "simulate",
            str(EXAMPLES / "journeys" / "f2-second-purchase.yaml"),
            "--customer",
            str(EXAMPLES / "customers" / "hanako.yaml"),
            "--events",
            str(EXAMPLES / "events" / "f2-no-second-order.yaml"),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "deferred:quiet_hours (line)" in result.output
    assert "sent:line (ja)" in result.output
    assert "はじめてのご注文ありがとうございます！" in result.output
    assert "designer crm-team@shop.example" in result.output
    assert "ended: completed (offers_sent) at step done" in result.output
    assert "3 message(s) would be sent" in result.output
