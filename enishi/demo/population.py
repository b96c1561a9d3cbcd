"""Synthetic customers with believable histories, for `enishi demo`. Pure: no I/O.

Four kinds of customer, each with a live event (docs/demo.md): newcomers sign up now
(`account.created`: the welcome series), first-time buyers browsed for weeks and order now
(`order.completed`, their first: first-order thanks), returning customers have imported
orders and order again (the thanks journey's `where` filters them out), and browsers just look
around (no journey cares, so no Temporal call). Most of a shop's customers on a given day are
browsers; the share that enrolls is what the local Temporal server has to carry. Channels,
consents, locales, time zones and quiet hours vary the way a real list does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

Segment = Literal["newcomer", "first_order", "returning", "browsing"]
Consent = Literal["opted_in", "opted_out"]

IMPORT_SOURCE: Final = "legacy-import"
"""Source of imported history; `first-order-thanks` enrolls no one on it."""

WELCOME: Final = "welcome-series"
FIRST_ORDER: Final = "first-order-thanks"
JOURNEY_OF: Final[dict[Segment, str | None]] = {
    "newcomer": WELCOME,
    "first_order": FIRST_ORDER,
    "returning": None,
    "browsing": None,
}
SEGMENT_WEIGHTS: Final[dict[Segment, int]] = {
    "newcomer": 12,
    "first_order": 16,
    "returning": 22,
    "browsing": 50,
}

_FAMILY = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤")
_FAMILY_ROMAJI = (
    "sato",
    "suzuki",
    "takahashi",
    "tanaka",
    "ito",
    "watanabe",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
)
_GIVEN = ("花子", "太郎", "陽菜", "蓮", "結衣", "湊", "美咲", "大翔", "さくら", "健")
_GIVEN_ROMAJI = (
    "hanako",
    "taro",
    "hina",
    "ren",
    "yui",
    "minato",
    "misaki",
    "hiroto",
    "sakura",
    "ken",
)
_EN_FIRST = ("Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Ethan", "Chloe", "Leo")
_EN_LAST = ("Smith", "Brown", "Wilson", "Taylor", "Clark", "Lewis", "Walker", "Hall", "Young")
_ZONES: Final = (  # zone, mobile prefix, digits after it
    ("America/Los_Angeles", "+1415", 7),
    ("Europe/London", "+447700", 6),
    ("Asia/Singapore", "+658", 7),
    ("Australia/Sydney", "+61412", 6),
)
PRODUCTS: Final = (
    ("p-101", "有田焼のマグカップ", 3200),
    ("p-102", "今治タオル", 2400),
    ("p-103", "南部鉄器の急須", 12800),
    ("p-104", "ほうじ茶セット", 1800),
    ("p-105", "檜のまな板", 5400),
    ("p-106", "信楽焼の小皿", 2800),
)
_PAGES = ("/", "/new", "/ranking", "/guide/gift", "/campaign/spring", "/faq")
_SUPPORT = ("delivery_date", "size", "gift_wrapping", "return", "payment")


@dataclass(frozen=True)
class Event:
    """One touchpoint to send through ingest."""

    name: str
    occurred_at: datetime
    source: str
    channel: str
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoCustomer:
    """Everything the demo tells enishi about one customer, in the order it tells it."""

    customer_id: str
    segment: Segment
    first_name: str
    last_name: str
    email: str
    phone: str = ""
    line_user_id: str = ""
    push_token: str = ""
    push_platform: Literal["ios", "android", ""] = ""
    locale: str = "ja-JP"
    time_zone: str = "Asia/Tokyo"
    consents: dict[str, Consent] = field(default_factory=dict)
    preferred: str = ""
    fallback: tuple[str, ...] = ()
    quiet_hours: tuple[str, str] | None = None
    history: tuple[Event, ...] = ()
    trigger: Event | None = None

    @property
    def journey(self) -> str | None:
        """The journey the live event should enroll the customer in (None: none)."""
        return JOURNEY_OF[self.segment]

    def traits(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "name": f"{self.last_name} {self.first_name}"
            if self.locale.startswith("ja")
            else f"{self.first_name} {self.last_name}",
        }

    def addresses(self) -> set[str]:
        """Every address a provider may be given for this customer (to match the ledger)."""
        return {a for a in (self.email, self.phone, self.line_user_id, self.push_token) if a}


def population(run_id: str, count: int, now: datetime) -> list[DemoCustomer]:
    """`count` customers, ids `demo-<run_id>-00001`..., the same for the same arguments."""
    rng = random.Random(f"enishi-demo:{run_id}")
    segments: list[Segment] = list(SEGMENT_WEIGHTS)
    weights = list(SEGMENT_WEIGHTS.values())
    return [
        _customer(rng, f"demo-{run_id}-{n:05d}", rng.choices(segments, weights)[0], now)
        for n in range(1, count + 1)
    ]


def _customer(
    rng: random.Random, customer_id: str, segment: Segment, now: datetime
) -> DemoCustomer:
    _, run_tag, number = customer_id.rsplit("-", 2)
    abroad = rng.random() < 0.15
    zone, dial, digits = rng.choice(_ZONES) if abroad else ("Asia/Tokyo", "+8190", 8)
    english = rng.random() < (0.85 if abroad else 0.08)
    if english:
        first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
        email = f"{first.lower()}.{last.lower()}+{run_tag}-{number}@example.com"
        locale = "en"
    else:
        f, g = rng.randrange(len(_FAMILY)), rng.randrange(len(_GIVEN))
        first, last = _GIVEN[g], _FAMILY[f]
        email = f"{_GIVEN_ROMAJI[g]}.{_FAMILY_ROMAJI[f]}+{run_tag}-{number}@example.jp"
        locale = "ja-JP"
    # Unique in the run (the customer's number in the last digits); another run's customer
    # may have it too, which ingest refuses (feed.py drops the phone then, as for a family
    # sharing one).
    phone = dial + f"{rng.randrange(10**digits) // 100000}{number}"[-digits:].rjust(digits, "0")
    has_phone = rng.random() < 0.6
    has_line = not abroad and rng.random() < 0.65
    has_app = rng.random() < 0.35
    consents: dict[str, Consent] = {}
    roll = rng.random()
    if roll < 0.05:  # unsubscribed from everything
        consents = {"email": "opted_out", "line": "opted_out", "sms": "opted_out"}
        if has_app:
            consents["push"] = "opted_out"
    elif roll < 0.08:  # said yes to app push, then removed the app, and nothing else
        consents = {"push": "opted_in", "email": "opted_out"}
        has_app, has_line = False, False
    else:
        email_roll = rng.random()
        if email_roll < 0.7:
            consents["email"] = "opted_in"
        elif email_roll < 0.8:
            consents["email"] = "opted_out"
        if has_phone and rng.random() < 0.35:
            consents["sms"] = "opted_in"
        if has_app and rng.random() < 0.8:
            consents["push"] = "opted_in"
    reachable = [c for c in ("email", "sms", "push") if consents.get(c) == "opted_in"]
    if has_line and consents.get("line") != "opted_out":
        reachable.append("line")
    preferred = ""
    if reachable and rng.random() < 0.9:
        weights = {"line": 45, "email": 35, "push": 12, "sms": 8}
        preferred = rng.choices(reachable, [weights[c] for c in reachable])[0]
    others = [c for c in reachable if c != preferred]
    rng.shuffle(others)
    fallback = tuple(others) if rng.random() < 0.7 else ()
    quiet = _quiet_hours(rng, now.astimezone(ZoneInfo(zone)))
    platform: Literal["ios", "android"] = "ios" if rng.random() < 0.55 else "android"
    return DemoCustomer(
        customer_id=customer_id,
        segment=segment,
        first_name=first,
        last_name=last,
        email=email,
        phone=phone if has_phone else "",
        line_user_id="U" + rng.randbytes(16).hex() if has_line else "",
        push_token=rng.randbytes(32).hex() if has_app else "",
        push_platform=platform if has_app else "",
        locale=locale,
        time_zone=zone,
        consents=consents,
        preferred=preferred,
        fallback=fallback,
        quiet_hours=quiet,
        history=_history(rng, segment, now),
        trigger=_trigger(rng, segment, now, has_app),
    )


def _quiet_hours(rng: random.Random, local_now: datetime) -> tuple[str, str] | None:
    roll = rng.random()
    if roll < 0.25:
        return ("22:00", "08:00")
    if roll < 0.33:
        # Night-shift sleepers: a window around the customer's present moment, so every run
        # shows deferrals whatever the time of day it starts.
        start = (local_now.hour - 1) % 24
        return (f"{start:02d}:00", f"{(start + 5) % 24:02d}:00")
    return None


def _history(rng: random.Random, segment: Segment, now: datetime) -> tuple[Event, ...]:
    if segment == "newcomer":
        # Browsing just before signing up, live from the shop.
        return tuple(
            Event(
                "page.viewed",
                now - timedelta(minutes=rng.randrange(5, 40)),
                "shop-web",
                "web",
                {"path": rng.choice(_PAGES)},
            )
            for _ in range(rng.randrange(1, 4))
        )
    start = now - timedelta(days=rng.randrange(30, 180))
    events: list[Event] = []
    moments = sorted(start + (now - start) * rng.random() for _ in range(rng.randrange(4, 12)))
    for moment in moments:
        product_id, product, price = rng.choice(PRODUCTS)
        kind = rng.choices(("page", "product", "cart"), (50, 35, 15))[0]
        if kind == "page":
            event = Event("page.viewed", moment, IMPORT_SOURCE, "web", {"path": rng.choice(_PAGES)})
        elif kind == "product":
            props = {"product_id": product_id, "product_name": product, "price": price}
            event = Event("product.viewed", moment, IMPORT_SOURCE, "web", props)
        else:
            props = {"item_count": rng.randrange(1, 4), "total": price}
            event = Event("cart.updated", moment, IMPORT_SOURCE, "web", props)
        events.append(event)
    if segment in ("returning", "browsing") and (segment == "returning" or rng.random() < 0.5):
        orders = sorted(start + (now - start) * rng.random() for _ in range(rng.randrange(1, 6)))
        for n, moment in enumerate(orders):
            product_id, product, price = rng.choice(PRODUCTS)
            props = {
                "order_id": f"L{rng.randrange(10**7):07d}-{n}",
                "product_id": product_id,
                "product_name": product,
                "total": price,
                "currency": "JPY",
            }
            events.append(Event("order.completed", moment, IMPORT_SOURCE, "store", props))
    if rng.random() < 0.15:
        moment = start + (now - start) * rng.random()
        props = {"topic": rng.choice(_SUPPORT)}
        events.append(Event("support.contacted", moment, IMPORT_SOURCE, "call_center", props))
    return tuple(sorted(events, key=lambda e: e.occurred_at))


def _trigger(rng: random.Random, segment: Segment, now: datetime, app: bool) -> Event:
    source, channel = ("shop-app", "app") if app and rng.random() < 0.5 else ("shop-web", "web")
    moment = now - timedelta(seconds=rng.randrange(1, 30))
    if segment == "newcomer":
        return Event("account.created", moment, source, channel, {"signup_channel": channel})
    if segment == "browsing":
        if rng.random() < 0.6:
            return Event("page.viewed", moment, source, channel, {"path": rng.choice(_PAGES)})
        product_id, product, price = rng.choice(PRODUCTS)
        props = {"product_id": product_id, "product_name": product, "price": price}
        return Event("product.viewed", moment, source, channel, props)
    product_id, product, price = rng.choice(PRODUCTS)
    props = {
        "order_id": f"W{rng.randrange(10**8):08d}",
        "product_id": product_id,
        "product_name": product,
        "total": price,
        "currency": "JPY",
    }
    return Event("order.completed", moment, source, channel, props)
