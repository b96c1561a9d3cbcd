"""Redis key layout: every key enishi writes is spelled here and nowhere else.

Documented in docs/keys.md. Keys of one customer share the hash tag `{<customer id>}` so a
Lua script or MULTI touching one customer stays on one Redis Cluster slot.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "enishi"

# -- identities (ingest resolves them; global, not per customer slot) -------------------


def identity(kind: str, value: str) -> str:
    """STRING: the canonical customer id known by identity `kind` = `value`."""
    return f"{PREFIX}:id:{kind}:{value}"


def alias(customer_id: str) -> str:
    """STRING: the customer id `customer_id` was merged into (absent when not merged)."""
    return f"{PREFIX}:alias:{customer_id}"


def identities(customer_id: str) -> str:
    """SET: the `<kind>:<value>` identity index entries owned by `customer_id`."""
    return f"{PREFIX}:ids:{customer_id}"


def pending_merges(customer_id: str) -> str:
    """HASH: merged-away id -> matched kind, merges into `customer_id` not yet on Kafka."""
    return f"{PREFIX}:merges:{customer_id}"


# -- customer memory (the stream processor writes; CustomerService reads) ----------------


def customer(customer_id: str, part: str) -> str:
    """One part of one customer's memory; `part` names the structure (see docs/keys.md)."""
    return f"{PREFIX}:c:{{{customer_id}}}:{part}"


# One customer's memory is these structures, all under the customer's hash tag. The order
# of MEMORY_PARTS is the KEYS order of the memory Lua script (enishi/memory/scripts.py).
SEEN: Final = "seen"  # ZSET event_id -> apply time (ms): the dedupe window
TIMELINE: Final = "timeline"  # ZSET event_id -> occurred_at (ms): the retained entries
TIMELINE_ENTRIES: Final = "timeline:entries"  # HASH event_id -> "<name>\0<TimelineEntry>"
TIMELINE_AGGREGATES: Final = "timeline:agg"  # HASH "<name>|c|f|l" -> count / first / last ms
TRAITS: Final = "traits"  # HASH trait -> JSON value
TRAITS_VERSIONS: Final = "traits:v"  # HASH trait -> LWW version (tombstones kept)
IDENTITY: Final = "identity"  # HASH kind (email, ..., "push:<token>") -> value
IDENTITY_VERSIONS: Final = "identity:v"  # HASH kind -> LWW version
CONSENTS: Final = "consents"  # HASH channel -> ChannelConsent bytes
CONSENTS_VERSIONS: Final = "consents:v"  # HASH channel -> LWW version
REACHABILITY: Final = "reachability"  # HASH channel -> ChannelReachability bytes
REACHABILITY_VERSIONS: Final = "reachability:v"  # HASH channel -> LWW version
PREFERENCES: Final = "preferences"  # HASH field path -> Preferences bytes (that field only)
PREFERENCES_VERSIONS: Final = "preferences:v"  # HASH field path -> LWW version
COUNTERS: Final = "counters"  # HASH counter -> number (times in ms), currency
COUNTERS_VERSIONS: Final = "counters:v"  # HASH "currency" -> first-write-wins version
ORDERS: Final = "orders"  # ZSET event_id -> occurred_at (ms): the two earliest orders
MESSAGES: Final = "messages"  # ZSET "<channel>:<event_id>" -> occurred_at (ms), last 7 days
DENSITY: Final = "density"  # HASH day number (UTC) -> weighted touchpoints that day
MERGED: Final = "merged"  # SET ids merged into this customer

MEMORY_PARTS: Final = (
    SEEN,
    TIMELINE,
    TIMELINE_ENTRIES,
    TIMELINE_AGGREGATES,
    TRAITS,
    TRAITS_VERSIONS,
    IDENTITY,
    IDENTITY_VERSIONS,
    CONSENTS,
    CONSENTS_VERSIONS,
    REACHABILITY,
    REACHABILITY_VERSIONS,
    PREFERENCES,
    PREFERENCES_VERSIONS,
    COUNTERS,
    COUNTERS_VERSIONS,
    ORDERS,
    MESSAGES,
    DENSITY,
    MERGED,
)


def memory_keys(customer_id: str) -> tuple[str, ...]:
    """Every key of one customer's memory, in MEMORY_PARTS order."""
    return tuple(customer(customer_id, part) for part in MEMORY_PARTS)


def customer_scan_pattern(part: str) -> str:
    """SCAN MATCH pattern for `part` of every customer: `enishi:c:{*}:<part>`."""
    return f"{PREFIX}:c:{{*}}:{part}"


def customer_of(key: str, part: str) -> str | None:
    """The customer id of `customer(id, part)`; None for any other key."""
    head, tail = f"{PREFIX}:c:{{", f"}}:{part}"
    if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
        return key[len(head) : -len(tail)]
    return None


# -- journeys (the registry writes definitions and the trigger index) --------------------

JOURNEY_IDS: Final = f"{PREFIX}:journeys"
"""SET of every registered journey id."""

TRIGGER_INDEX: Final = f"{PREFIX}:triggers"
"""HASH event name -> JSON list of live trigger entries (docs/journey-runtime.md)."""

TRIGGER_INDEX_REVISION: Final = f"{PREFIX}:triggers:rev"
"""STRING counter, incremented on every trigger index change; readers cache per revision."""


def journey_versions(journey_id: str) -> str:
    """HASH version number -> JourneyDefinition protobuf bytes (immutable once written)."""
    return f"{PREFIX}:journey:{journey_id}:versions"


def journey_state(journey_id: str) -> str:
    """HASH status, live_version, latest_version, updated_at, designer of the last change."""
    return f"{PREFIX}:journey:{journey_id}:state"


# -- enrollments (one customer's journey bookkeeping shares the customer's hash tag) ------

AWAITS: Final = "awaits"  # HASH journey_id -> JSON list of event names the enrollment awaits
ENROLLMENTS: Final = "enrollments"  # HASH journey_id -> JSON {count, last_at, active}


# -- sending (the send activity's frequency caps, one customer's hash tag) ----------------


def cap_day(customer_id: str, local_day: str) -> str:
    """HASH `*` -> messages reserved that local day (YYYY-MM-DD), `<channel>` -> per channel."""
    return customer(customer_id, f"cap:d:{local_day}")


def cap_week(customer_id: str, local_week: str) -> str:
    """STRING: messages reserved in that local ISO week (`YYYY-Www`)."""
    return customer(customer_id, f"cap:w:{local_week}")


def cap_reservation(customer_id: str, dispatch_id: str) -> str:
    """STRING: the channel `dispatch_id` reserved caps on (a retried send counts once)."""
    return customer(customer_id, f"cap:r:{dispatch_id}")


# -- triggers (the stream processor keeps these; docs/journey-runtime.md) -----------------

CONDITIONS: Final = "conditions"  # HASH journey_id -> "1"/"0": last value of its @condition


def journey_enrollments_total(journey_id: str) -> str:
    """STRING counter: enrollments ever made in `journey_id` (all versions), for its cap."""
    return f"{PREFIX}:journey:{journey_id}:enrolled"


# -- channels (channel services and the provider sandbox; docs/channels.md) ---------------


def delivery(channel: str, dispatch_id: str) -> str:
    """STRING: the delivery record of one dispatch (`inflight`, or `done` with its receipt)."""
    return f"{PREFIX}:delivery:{channel}:{dispatch_id}"


def rate_bucket(provider: str) -> str:
    """HASH tokens, ts (ms): the token bucket every instance of one provider adapter shares."""
    return f"{PREFIX}:ratelimit:{provider}"


def line_last_dispatch(line_user_id: str) -> str:
    """STRING: the newest LINE dispatch to a user (a reply is linked to it), 7 days."""
    return f"{PREFIX}:line:last:{line_user_id}"


SANDBOX_LEDGER: Final = f"{PREFIX}:sandbox:ledger"
"""LIST of JSON entries: every delivery the provider sandbox accepted, oldest first."""


def sandbox_idempotency(provider: str, key: str) -> str:
    """STRING: the sandbox's provider message id for an idempotency key (its dedupe)."""
    return f"{PREFIX}:sandbox:idem:{provider}:{key}"


# -- journey stats (the stream processor counts JOURNEY touchpoints; the registry reads) --
# One journey's stats keys share the hash tag `{<journey id>}`: the counting Lua script
# touches all three at once (docs/keys.md, "Journey stats").


def journey_stats(journey_id: str, part: str) -> str:
    """One part of one journey's analytics; `part` is one of JOURNEY_STATS_PARTS."""
    return f"{PREFIX}:jstats:{{{journey_id}}}:{part}"


STATS_SEEN: Final = "seen"  # ZSET event_id -> first counted (ms): the dedupe window
STATS_COUNTS: Final = "counts"  # HASH stats_step_field / stats_group_field -> count
STATS_POSITIONS: Final = "at"  # HASH workflow id -> "<entry v>|<group>|<v>|<step>", while running

JOURNEY_STATS_PARTS: Final = (STATS_SEEN, STATS_COUNTS, STATS_POSITIONS)
"""The KEYS order of the counting Lua script (services/stream/journey_stats.py)."""


def journey_stats_keys(journey_id: str) -> tuple[str, ...]:
    """Every stats key of one journey, in JOURNEY_STATS_PARTS order."""
    return tuple(journey_stats(journey_id, part) for part in JOURNEY_STATS_PARTS)


# Counter fields of STATS_COUNTS. Step and journey ids are slugs and groups are words, so `|`
# never occurs inside a part. The counting Lua script spells the same layout.
STATS_GROUPS: Final = ("treatment", "holdout")
STATS_STEP_COUNTERS: Final = ("entered", "completed", "exited", "cancelled", "migrated", "goal")
STATS_GROUP_COUNTERS: Final = ("enrolled", "goal", "ended")


def stats_step_field(version: int, step_id: str, group: str, counter: str) -> str:
    """`step|<version>|<step id>|<group>|<counter>`: one of STATS_STEP_COUNTERS."""
    return f"step|{version}|{step_id}|{group}|{counter}"


def stats_group_field(version: int, group: str, counter: str) -> str:
    """`group|<entry version>|<group>|<counter>`: one of STATS_GROUP_COUNTERS."""
    return f"group|{version}|{group}|{counter}"
