"""Trigger evaluation in the stream processor, with fakes: the index, re-entry, routing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from enishi import keys
from enishi.enrollment import records as enrollments
from enishi.enrollment.index import TriggerEntry, TriggerIndexCache, parse_index
from enishi.enrollment.records import Enrollment, Outcome, decide, enrolled
from enishi.journeys.model import in_holdout
from enishi.memory import model
from enishi.metrics import TRIGGER_DECISIONS
from enishi.v1 import touchpoint_pb2
from services.stream.hooks import AppliedBatch
from services.stream.triggers import JourneyTriggers, event_signal
from workflows import contract

NOW_MS = 1_700_000_000_000
DAY_MS = 86_400_000


def _entry(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "journey_id": "f2",
        "version": 3,
        "where": None,
        "reentry": "never",
        "cooldown_seconds": 0,
        "holdout": 0.0,
        "enrollment_cap": None,
    }
    value.update(overrides)
    return value


def _index(fields: dict[str, list[Any]]) -> dict[bytes, bytes]:
    return {name.encode(): json.dumps(entries).encode() for name, entries in fields.items()}


def _trigger(**overrides: Any) -> TriggerEntry:
    index = parse_index(_index({"order.completed": [_entry(**overrides)]}), b"1")
    (entry,) = index.entries("order.completed")
    return entry


def _event(customer_id: str, name: str, event_id: str, **props: Any) -> touchpoint_pb2.Touchpoint:
    tp = touchpoint_pb2.Touchpoint(
        event_id=event_id,
        customer_id=customer_id,
        name=name,
        kind=touchpoint_pb2.TOUCHPOINT_KIND_EVENT,
    )
    tp.occurred_at.CopyFrom(model.from_ms(NOW_MS))
    if props:
        tp.props.update(props)
    return tp


# -- the index -------------------------------------------------------------------------------


def test_index_entries_are_read_under_their_event_name_with_where_compiled() -> None:
    index = parse_index(
        _index(
            {
                "order.completed": [
                    _entry(where="customer.orders_count == 1", holdout=0.1, enrollment_cap=5),
                    _entry(journey_id="thanks", where="event.props.amount > 100"),
                ],
                "@condition": [_entry(journey_id="lapsing", where="customer.phase == 'lapsing'")],
                "@schedule": [_entry(journey_id="monthly", schedule={"cron": "0 9 1 * *"})],
            }
        ),
        b"7",
    )
    f2, thanks = index.entries("order.completed")
    assert (f2.journey_id, f2.version, f2.holdout, f2.enrollment_cap) == ("f2", 3, 0.1, 5)
    assert f2.uses_customer and not thanks.uses_customer
    assert [e.journey_id for e in index.conditions] == ["lapsing"]
    assert index.entries("@schedule") == ()
    assert index.entries("page.viewed") == ()
    assert index.revision == b"7"


def test_a_bad_entry_is_skipped_and_the_rest_of_the_index_still_enrolls() -> None:
    index = parse_index(
        {
            b"order.completed": json.dumps(
                [
                    _entry(journey_id="broken", where="customer.orders_count =="),
                    _entry(journey_id="no-version", version=0),
                    _entry(journey_id="weird", reentry="sometimes"),
                    {"version": 1},
                    "not an object",
                    _entry(journey_id="fine"),
                ]
            ).encode(),
            b"cart.updated": b"{not json",
        },
        b"1",
    )
    assert [e.journey_id for e in index.entries("order.completed")] == ["fine"]
    assert index.entries("cart.updated") == ()


def test_cooldown_is_read_in_seconds_and_kept_in_ms() -> None:
    assert _trigger(reentry="after", cooldown_seconds=3600).cooldown_ms == 3_600_000


# -- re-entry rules --------------------------------------------------------------------------


def test_a_customer_never_enrolled_enrolls() -> None:
    assert decide(None, _trigger(), "e1", NOW_MS) is Outcome.ENROLLED


def test_an_active_enrollment_blocks_a_second_one_whatever_the_policy() -> None:
    record = {"count": 1, "last_at": NOW_MS, "active": True, "event_id": "e1"}
    assert decide(record, _trigger(reentry="always"), "e2", NOW_MS) is Outcome.ACTIVE


def test_reentry_never_blocks_after_the_first_enrollment_ended() -> None:
    record = {"count": 1, "last_at": NOW_MS - DAY_MS, "active": False, "event_id": "e1"}
    assert decide(record, _trigger(reentry="never"), "e2", NOW_MS) is Outcome.REENTRY_BLOCKED
    assert decide(record, _trigger(reentry="always"), "e2", NOW_MS) is Outcome.ENROLLED


def test_reentry_after_waits_for_the_cooldown_since_the_last_enrollment_ended() -> None:
    entry = _trigger(reentry="after", cooldown_seconds=2 * 86_400)
    ended_yesterday = {"count": 1, "last_at": NOW_MS - DAY_MS, "active": False}
    ended_three_days_ago = {"count": 1, "last_at": NOW_MS - 3 * DAY_MS, "active": False}
    iso = datetime.fromtimestamp((NOW_MS - 3 * DAY_MS) / 1000, UTC).isoformat()
    assert decide(ended_yesterday, entry, "e2", NOW_MS) is Outcome.REENTRY_BLOCKED
    assert decide(ended_three_days_ago, entry, "e2", NOW_MS) is Outcome.ENROLLED
    assert decide({**ended_three_days_ago, "last_at": iso}, entry, "e2", NOW_MS) is (
        Outcome.ENROLLED
    )


def test_the_same_trigger_again_resumes_a_live_enrollment_and_never_enrolls_twice() -> None:
    live = {"count": 2, "last_at": NOW_MS, "active": True, "event_id": "e1"}
    ended = {**live, "active": False}
    assert decide(live, _trigger(reentry="always"), "e1", NOW_MS) is Outcome.RESUMED
    assert decide(ended, _trigger(reentry="always"), "e1", NOW_MS) is Outcome.DUPLICATE


def test_enrolling_counts_up_and_keeps_fields_the_worker_wrote() -> None:
    record = {"count": 1, "last_at": 5, "active": False, "ended": "converted", "step": "x"}
    updated = enrolled(record, _trigger(), "e9", NOW_MS, holdout=True)
    assert updated == {
        "count": 2,
        "last_at": NOW_MS,
        "active": True,
        "version": 3,
        "holdout": True,
        "event_id": "e9",
        "step": "x",
    }


def test_an_unreadable_record_counts_as_never_enrolled() -> None:
    assert enrollments.load(b"{oops") is None
    assert enrollments.load(b"[1]") is None
    assert enrollments.load(None) is None


# -- the hook, over fakes ---------------------------------------------------------------------


class _Pipeline:
    def __init__(self, redis: _FakeRedis) -> None:
        self._redis = redis
        self._results: list[Any] = []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, key: str) -> None:
        self._results.append(self._redis.strings.get(key))

    def hgetall(self, key: str) -> None:
        self._results.append(dict(self._redis.hashes.get(key, {})))

    async def execute(self) -> list[Any]:
        self._redis.round_trips += 1
        results, self._results = self._results, []
        return results


class _FakeRedis:
    """Just what the hook reads: GET, HGET, HGETALL in pipelines, and scripts."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.round_trips += 1
        return dict(self.hashes.get(key, {}))

    async def hget(self, key: str, field: str) -> bytes | None:
        self.round_trips += 1
        return self.hashes.get(key, {}).get(field.encode())

    async def hset(self, key: str, *, mapping: dict[str, str]) -> int:
        self.round_trips += 1
        stored = self.hashes.setdefault(key, {})
        stored.update({k.encode(): v.encode() for k, v in mapping.items()})
        return len(mapping)

    def register_script(self, script: str) -> Any:
        async def run(keys: list[str], args: list[Any]) -> int:
            field = str(args[0]).encode()
            if self.hashes.get(keys[0], {}).get(field) == args[1]:
                del self.hashes[keys[0]][field]
                return 1
            return 0

        return run


class _FakeStore:
    """Enrollment records in a dict, with the real rules."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    async def enroll(
        self, customer_id: str, entry: TriggerEntry, event_id: str, now_ms: int, *, holdout: bool
    ) -> Enrollment:
        record = self.records.get((customer_id, entry.journey_id))
        outcome = decide(record, entry, event_id, now_ms)
        if outcome is Outcome.ENROLLED:
            record = enrolled(record, entry, event_id, now_ms, holdout=holdout)
            self.records[(customer_id, entry.journey_id)] = record
        return Enrollment(outcome, record)


class _FakeCalls:
    def __init__(self, finished: Iterable[str] = (), gone: Iterable[tuple[str, str]] = ()) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.inputs: list[contract.JourneyInput] = []
        self._finished = set(finished)
        self._gone = set(gone)  # (journey, customer) with no running workflow

    async def start(self, request: contract.JourneyInput, event: contract.EventSignal) -> None:
        self.inputs.append(request)
        self.calls.append(("start", request.journey_id, request.customer_id, event.event_id))

    async def signal(self, journey_id: str, customer_id: str, event: contract.EventSignal) -> bool:
        self.calls.append(("signal", journey_id, customer_id, event.event_id))
        return journey_id not in self._finished and (journey_id, customer_id) not in self._gone

    async def merge(self, journey_id: str, customer_id: str, merge: contract.MergeSignal) -> bool:
        self.calls.append(("merge", journey_id, customer_id, merge.into_customer_id))
        return journey_id not in self._finished


class _Contexts:
    def __init__(self, orders_count: int) -> None:
        self.loaded: list[str] = []
        self.orders = orders_count

    async def load(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(customer_ids)
        self.loaded.extend(ids)
        return {cid: {"id": cid, "orders_count": self.orders} for cid in ids}


def _hook(
    redis: _FakeRedis,
    calls: _FakeCalls,
    *,
    store: _FakeStore | None = None,
    contexts: _Contexts | None = None,
) -> JourneyTriggers:
    async def resolve(ids: Iterable[str]) -> dict[str, str]:
        return {cid: cid for cid in ids}

    return JourneyTriggers(
        redis,  # type: ignore[arg-type]
        calls,
        index=TriggerIndexCache(redis),  # type: ignore[arg-type]
        store=store or _FakeStore(),  # type: ignore[arg-type]
        contexts=contexts or _Contexts(1),
        resolve=resolve,
        clock=lambda: NOW_MS / 1000,
    )


def _publish(redis: _FakeRedis, fields: dict[str, list[Any]], revision: bytes = b"1") -> None:
    redis.hashes[keys.TRIGGER_INDEX] = _index(fields)
    redis.strings[keys.TRIGGER_INDEX_REVISION] = revision


async def test_events_no_journey_cares_about_cost_one_read_and_no_temporal_call() -> None:
    redis, calls = _FakeRedis(), _FakeCalls()
    _publish(redis, {"order.completed": [_entry()]})
    hook = _hook(redis, calls)
    await hook.on_applied(AppliedBatch([_event("c1", "order.completed", "warm-up")], []))
    before = redis.round_trips

    batch = [_event(f"c{n}", "page.viewed", f"pv{n}") for n in range(50)]
    await hook.on_applied(AppliedBatch(batch, []))

    assert redis.round_trips - before == 1
    assert calls.calls == [("start", "f2", "c1", "warm-up")]


async def test_a_trigger_starts_one_enrollment_with_the_event_and_a_duplicate_does_not() -> None:
    redis, calls, store = _FakeRedis(), _FakeCalls(), _FakeStore()
    _publish(redis, {"order.completed": [_entry(where="customer.orders_count == 1")]})
    hook = _hook(redis, calls, store=store)
    order = _event("c1", "order.completed", "o1", amount=1200)

    await hook.on_applied(AppliedBatch([order], [order]))
    redis.hashes[keys.customer("c1", keys.ENROLLMENTS)] = {
        b"f2": json.dumps(store.records[("c1", "f2")]).encode()
    }
    await hook.on_applied(AppliedBatch([], [order]))

    # The second delivery finds its own event on the live record: signal-with-start again
    # (idempotent: the run is signalled, the workflow dedupes the event id), no new count.
    assert calls.calls == [("start", "f2", "c1", "o1"), ("start", "f2", "c1", "o1")]
    assert [i.enrollment for i in calls.inputs] == [1, 1]
    assert store.records[("c1", "f2")]["count"] == 1


async def test_where_over_the_customer_filters_and_loads_memory_only_when_needed() -> None:
    redis, calls = _FakeRedis(), _FakeCalls()
    contexts = _Contexts(orders_count=2)
    _publish(
        redis,
        {
            "order.completed": [_entry(where="customer.orders_count == 1")],
            "cart.updated": [_entry(journey_id="cart", where="event.props.items > 0")],
        },
    )
    hook = _hook(redis, calls, contexts=contexts)
    before = TRIGGER_DECISIONS.labels("filtered")._value.get()

    await hook.on_applied(
        AppliedBatch(
            [
                _event("c1", "order.completed", "o1"),
                _event("c2", "cart.updated", "k1", items=0),
                _event("c3", "cart.updated", "k2", items=3),
            ],
            [],
        )
    )

    assert contexts.loaded == ["c1"]
    assert calls.calls == [("start", "cart", "c3", "k2")]
    assert TRIGGER_DECISIONS.labels("filtered")._value.get() - before == 2


async def test_an_awaited_event_is_routed_and_a_finished_enrollment_loses_its_stale_await() -> None:
    redis, calls = _FakeRedis(), _FakeCalls(finished=["gone"])
    _publish(redis, {})
    awaits = keys.customer("c1", keys.AWAITS)
    redis.hashes[awaits] = {
        b"f2": b'["message.replied","order.completed"]',
        b"gone": b'["message.replied"]',
        b"other": b'["account.deleted"]',
    }
    hook = _hook(redis, calls)

    await hook.on_applied(AppliedBatch([_event("c1", "message.replied", "r1")], []))

    assert sorted(calls.calls) == [
        ("signal", "f2", "c1", "r1"),
        ("signal", "gone", "c1", "r1"),
    ]
    assert set(redis.hashes[awaits]) == {b"f2", b"other"}


async def test_an_event_for_an_enrollment_being_handed_over_reaches_the_merged_run() -> None:
    # The merge wrote the known customer's record and awaits; the visitor's run has not yet
    # started the known customer's: the visitor's run takes the event along.
    redis, calls = _FakeRedis(), _FakeCalls(gone=[("f2", "known")])
    _publish(redis, {})
    awaits = keys.customer("known", keys.AWAITS)
    redis.hashes[awaits] = {b"f2": b'["order.completed"]'}
    handed = {"count": 1, "active": True, "handed_from": "c_anon"}
    redis.hashes[keys.customer("known", keys.ENROLLMENTS)] = {b"f2": json.dumps(handed).encode()}
    hook = _hook(redis, calls)

    await hook.on_applied(AppliedBatch([_event("known", "order.completed", "o1")], []))

    assert calls.calls == [("signal", "f2", "known", "o1"), ("signal", "f2", "c_anon", "o1")]
    assert set(redis.hashes[awaits]) == {b"f2"}

    # Neither run there (a lost run): the stale await goes, after two more tries at most.
    gone = _FakeCalls(gone=[("f2", "known"), ("f2", "c_anon")])
    await _hook(redis, gone).on_applied(
        AppliedBatch([_event("known", "order.completed", "o2")], [])
    )
    assert [c[2] for c in gone.calls] == ["known", "c_anon", "known"]
    assert awaits not in redis.hashes or b"f2" not in redis.hashes[awaits]


async def test_holdout_follows_the_journeys_own_hashing_rule() -> None:
    redis, calls = _FakeRedis(), _FakeCalls()
    _publish(redis, {"order.completed": [_entry(journey_id="lift", holdout=0.5)]})
    hook = _hook(redis, calls)
    customers = [f"c{n}" for n in range(40)]

    await hook.on_applied(
        AppliedBatch([_event(c, "order.completed", f"o-{c}") for c in customers], [])
    )

    held = {i.customer_id: i.holdout for i in calls.inputs}
    assert held == {c: in_holdout("lift", 0.5, c) for c in customers}
    assert 0 < sum(held.values()) < len(customers)


async def test_events_of_one_customer_reach_temporal_in_their_order() -> None:
    redis, calls = _FakeRedis(), _FakeCalls()
    _publish(redis, {})
    redis.hashes[keys.customer("c1", keys.AWAITS)] = {b"j": b'["a.one","a.two","a.three"]'}
    hook = _hook(redis, calls)

    await hook.on_applied(
        AppliedBatch(
            [_event("c1", "a.one", "1"), _event("c1", "a.two", "2"), _event("c1", "a.three", "3")],
            [],
        )
    )

    assert [c[3] for c in calls.calls] == ["1", "2", "3"]


async def test_the_index_is_re_read_only_when_its_revision_changes() -> None:
    redis, calls = _FakeRedis(), _FakeCalls()
    _publish(redis, {"order.completed": [_entry()]}, revision=b"1")
    hook = _hook(redis, calls)
    await hook.on_applied(AppliedBatch([_event("c1", "page.viewed", "p1")], []))
    first = redis.round_trips
    await hook.on_applied(AppliedBatch([_event("c1", "page.viewed", "p2")], []))
    assert redis.round_trips - first == 1

    _publish(redis, {"page.viewed": [_entry(journey_id="browse")]}, revision=b"2")
    await hook.on_applied(AppliedBatch([_event("c1", "page.viewed", "p3")], []))

    assert calls.calls == [("start", "browse", "c1", "p3")]


async def test_a_condition_enrolls_when_it_turns_true_and_not_again_while_it_stays_true() -> None:
    redis, calls, contexts = _FakeRedis(), _FakeCalls(), _Contexts(orders_count=0)
    _publish(
        redis,
        {"@condition": [_entry(journey_id="loyal", where="customer.orders_count >= 3")]},
    )
    hook = _hook(redis, calls, contexts=contexts)

    await hook.on_applied(AppliedBatch([_event("c1", "page.viewed", "p1")], []))
    contexts.orders = 3
    await hook.on_applied(AppliedBatch([_event("c1", "order.completed", "o3")], []))
    await hook.on_applied(AppliedBatch([_event("c1", "page.viewed", "p2")], []))

    assert calls.calls == [("start", "loyal", "c1", "o3")]
    assert redis.hashes[keys.customer("c1", keys.CONDITIONS)] == {b"loyal": b"1"}


def test_the_event_signal_carries_the_touchpoint_for_the_resolved_customer() -> None:
    tp = _event("anon-1", "order.completed", "o1", amount=1200)
    tp.trace.traceparent = "00-abc-def-01"
    signal = event_signal(tp, "known-1")
    assert signal == contract.EventSignal(
        event_id="o1",
        name="order.completed",
        occurred_at=model.from_ms(NOW_MS).ToJsonString(),
        customer_id="known-1",
        props={"amount": 1200},
        kind="event",
        traceparent="00-abc-def-01",
    )
