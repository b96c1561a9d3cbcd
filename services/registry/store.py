"""Redis storage of journeys: immutable versioned definitions, status, and the trigger index.

Keys are `enishi.keys` (docs/journey-runtime.md). Every write is one optimistic transaction
(WATCH, read, MULTI/EXEC, retried on a concurrent change), so two registry replicas never
allocate the same version and a status change and its trigger index entries land together.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from enishi import keys
from enishi.errors import FailedPrecondition
from enishi.registry import TriggerEntry
from enishi.v1 import journey_pb2
from services.registry.stats import Counters, read_counters
from services.registry.trigger_index import replace_journey

# State hash fields (keys.journey_state). `hash:<content hash>` → version makes registration
# idempotent on content; `activated:<version>` → when that version last became live.
STATUS: Final = "status"
LIVE_VERSION: Final = "live_version"
LATEST_VERSION: Final = "latest_version"
UPDATED_AT: Final = "updated_at"
NAME: Final = "name"
DESIGNER: Final = "designer"
REASON: Final = "reason"
HASH_PREFIX: Final = "hash:"
ACTIVATED_PREFIX: Final = "activated:"


class Status(enum.StrEnum):
    """A journey's status as stored (lower case) and as the proto names it."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"

    def to_proto(self) -> journey_pb2.JourneyStatus.ValueType:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Status:
        """KeyError for UNSPECIFIED and unknown numbers."""
        return _FROM_PROTO[journey_pb2.JourneyStatus.ValueType(value)]


_TO_PROTO: Final = {
    Status.DRAFT: journey_pb2.JOURNEY_STATUS_DRAFT,
    Status.ACTIVE: journey_pb2.JOURNEY_STATUS_ACTIVE,
    Status.PAUSED: journey_pb2.JOURNEY_STATUS_PAUSED,
    Status.ARCHIVED: journey_pb2.JOURNEY_STATUS_ARCHIVED,
}
_FROM_PROTO: Final = {v: k for k, v in _TO_PROTO.items()}


@dataclass(frozen=True)
class JourneyState:
    """One journey as a whole (keys.journey_state), decoded."""

    journey_id: str
    status: Status
    live_version: int
    latest_version: int
    updated_at: datetime
    name: str
    designer: str
    reason: str = ""
    activated_at: Mapping[int, datetime] = field(default_factory=dict)

    @classmethod
    def decode(cls, journey_id: str, raw: Raw) -> JourneyState | None:
        """None when the journey is not registered (empty hash)."""
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        activated = {
            int(k.removeprefix(ACTIVATED_PREFIX)): datetime.fromisoformat(v)
            for k, v in fields.items()
            if k.startswith(ACTIVATED_PREFIX)
        }
        return cls(
            journey_id=journey_id,
            status=Status(fields[STATUS]),
            live_version=int(fields.get(LIVE_VERSION, "0")),
            latest_version=int(fields[LATEST_VERSION]),
            updated_at=datetime.fromisoformat(fields[UPDATED_AT]),
            name=fields.get(NAME, ""),
            designer=fields.get(DESIGNER, ""),
            reason=fields.get(REASON, ""),
            activated_at=activated,
        )

    def same_position(self, other: JourneyState) -> bool:
        """Same status and live version: a decision made on `other` still holds."""
        return (self.status, self.live_version) == (other.status, other.live_version)


Raw = Mapping[bytes | str, bytes | str]
"""A hash as redis-py returns it (bytes unless the client decodes responses)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _mapping(fields: Mapping[str, str] | Mapping[str, bytes]) -> dict[Any, Any]:
    # redis-py's hset wants a Mapping keyed by its EncodableT union; ours are plain str.
    return dict(fields)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class JourneyStore:
    """Definitions, states and the trigger index in one Redis (see module docstring)."""

    def __init__(self, redis: aioredis.Redis, clock: Callable[[], datetime] = _now) -> None:
        self._redis = redis
        self._clock = clock

    async def stats_counters(self, journey_id: str) -> Counters:
        """The journey's analytics counters, as the stream processor keeps them."""
        return await read_counters(self._redis, journey_id)

    async def ping(self) -> bool:
        """Readiness: Redis answers."""
        try:
            return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    # --- reading ----------------------------------------------------------------------------

    async def journey_ids(self) -> list[str]:
        """Every registered journey id, sorted."""
        members = await self._redis.smembers(keys.JOURNEY_IDS)
        return sorted(_text(m) for m in members)

    async def state(self, journey_id: str) -> JourneyState | None:
        raw = await self._redis.hgetall(keys.journey_state(journey_id))
        return JourneyState.decode(journey_id, raw)

    async def states(self, journey_ids: Sequence[str]) -> list[JourneyState]:
        """The states of `journey_ids` that exist, in the given order (one round trip)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for journey_id in journey_ids:
                pipe.hgetall(keys.journey_state(journey_id))
            raws = await pipe.execute()
        found = (JourneyState.decode(j, r) for j, r in zip(journey_ids, raws, strict=True))
        return [s for s in found if s is not None]

    async def definition(
        self, journey_id: str, version: int
    ) -> journey_pb2.JourneyDefinition | None:
        raw = await self._redis.hget(keys.journey_versions(journey_id), str(version))
        return None if raw is None else journey_pb2.JourneyDefinition.FromString(_bytes(raw))

    async def definitions(self, journey_id: str) -> list[journey_pb2.JourneyDefinition]:
        """Every version, oldest first."""
        raw = await self._redis.hgetall(keys.journey_versions(journey_id))
        found = [journey_pb2.JourneyDefinition.FromString(_bytes(v)) for v in raw.values()]
        return sorted(found, key=lambda d: d.version)

    async def trigger_index(self) -> tuple[int, dict[str, bytes]]:
        """The revision and the whole index, read together."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.TRIGGER_INDEX_REVISION)
            pipe.hgetall(keys.TRIGGER_INDEX)
            revision, index = await pipe.execute()
        return int(revision or 0), {_text(k): _bytes(v) for k, v in index.items()}

    # --- writing ----------------------------------------------------------------------------

    async def register(
        self, definition: journey_pb2.JourneyDefinition
    ) -> tuple[journey_pb2.JourneyDefinition, bool]:
        """Store `definition` as the next version; (stored, True), or (existing, False) when a
        version with the same content hash exists. `definition.version` is assigned here."""
        journey_id = definition.journey_id
        state_key = keys.journey_state(journey_id)
        hash_field = HASH_PREFIX + definition.content_hash
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(state_key)
                    existing = await pipe.hget(state_key, hash_field)
                    if existing is not None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        found = await self.definition(journey_id, int(_text(existing)))
                        if found is None:  # pragma: no cover - written in one transaction
                            raise RuntimeError(f"{journey_id}: content hash without its version")
                        return found, False
                    state = JourneyState.decode(
                        journey_id,
                        await pipe.hgetall(state_key),
                    )
                    if state is not None and state.status is Status.ARCHIVED:
                        raise FailedPrecondition(
                            f"source.id: journey '{journey_id}' is archived and takes no new "
                            "versions; register it under a new id"
                        )
                    version = (state.latest_version if state else 0) + 1
                    now = self._clock()
                    stored = journey_pb2.JourneyDefinition()
                    stored.CopyFrom(definition)
                    stored.version = version
                    stored.created_at.FromDatetime(now)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hsetnx(
                        keys.journey_versions(journey_id), str(version), stored.SerializeToString()
                    )
                    pipe.hset(
                        state_key,
                        mapping=_mapping(
                            {
                                STATUS: (state.status if state else Status.DRAFT).value,
                                LIVE_VERSION: str(state.live_version if state else 0),
                                LATEST_VERSION: str(version),
                                UPDATED_AT: _iso(now),
                                NAME: stored.name,
                                DESIGNER: stored.designer,
                                hash_field: str(version),
                            }
                        ),
                    )
                    pipe.sadd(keys.JOURNEY_IDS, journey_id)
                    written, *_ = await pipe.execute()
                    if not written:  # pragma: no cover - WATCH on the state guards the number
                        raise RuntimeError(f"{journey_id} v{version} already existed")
                    return stored, True
                except WatchError:
                    continue

    async def transition(
        self,
        expected: JourneyState,
        status: Status,
        *,
        live_version: int,
        entries: Mapping[str, TriggerEntry],
        reason: str | None = None,
    ) -> JourneyState | None:
        """Set status and live version and make `entries` the journey's trigger index entries,
        with INCR of the index revision, atomically. None (nothing written) when the journey's
        status or live version is no longer `expected`'s: the caller decides again."""
        journey_id = expected.journey_id
        state_key = keys.journey_state(journey_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(state_key, keys.TRIGGER_INDEX)
                    current = JourneyState.decode(
                        journey_id,
                        await pipe.hgetall(state_key),
                    )
                    if current is None or not current.same_position(expected):
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return None
                    index = await pipe.hgetall(keys.TRIGGER_INDEX)
                    change = replace_journey(
                        {_text(k): _bytes(v) for k, v in index.items()}, journey_id, entries
                    )
                    now = self._clock()
                    fields = {STATUS: status.value, LIVE_VERSION: str(live_version)}
                    fields[UPDATED_AT] = _iso(now)
                    if reason is not None:
                        fields[REASON] = reason
                    if status is Status.ACTIVE and (
                        live_version != current.live_version or current.status is not Status.ACTIVE
                    ):
                        fields[ACTIVATED_PREFIX + str(live_version)] = _iso(now)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(state_key, mapping=_mapping(fields))
                    if change.set:
                        pipe.hset(keys.TRIGGER_INDEX, mapping=_mapping(change.set))
                    if change.delete:
                        pipe.hdel(keys.TRIGGER_INDEX, *change.delete)
                    if not change.empty:
                        pipe.incr(keys.TRIGGER_INDEX_REVISION)
                    await pipe.execute()
                    return await self.state(journey_id)
                except WatchError:
                    continue
