"""Loading a journey version's definition: the registry's immutable source text from Redis.

Versions never change once registered (docs/journeys.md, "Versions"), so each process keeps
what it loaded. `parsed(source)` is the one place the workflow turns source into a `Journey`:
pure and cached, and imported by the workflow through the sandbox.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError
from redis.asyncio import Redis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from enishi import keys
from enishi.journeys import Journey
from enishi.journeys.loader import load_source
from enishi.v1 import journey_pb2

NOT_FOUND: Final = "DefinitionNotFound"
"""ApplicationError type: the version is not registered (non-retryable)."""
INVALID: Final = "DefinitionInvalid"
"""ApplicationError type: the stored source no longer reads as a journey (non-retryable)."""
_CACHE_MAX: Final = 512


@dataclass(frozen=True)
class DefinitionRequest:
    journey_id: str
    version: int


@dataclass(frozen=True)
class DefinitionSource:
    """One registered version: its source text and who registered it."""

    journey_id: str
    version: int
    source: str
    designer: str = ""


class DefinitionActivities:
    """Reads `keys.journey_versions(id)`; caches per process (definitions are immutable)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._cache: dict[tuple[str, int], DefinitionSource] = {}

    @activity.defn(name="load_definition")
    async def load_definition(self, req: DefinitionRequest) -> DefinitionSource:
        """The source of `req.version`; ApplicationError(non_retryable) when not registered."""
        return await self.source(req.journey_id, req.version)

    async def source(self, journey_id: str, version: int) -> DefinitionSource:
        """The registered source of one version, from the process cache or Redis."""
        cached = self._cache.get((journey_id, version))
        if cached is not None:
            return cached
        raw = await self._redis.hget(keys.journey_versions(journey_id), str(version))
        if raw is None:
            raise ApplicationError(
                f"journey {journey_id!r} version {version}: not registered",
                type=NOT_FOUND,
                non_retryable=True,
            )
        definition = journey_pb2.JourneyDefinition.FromString(
            raw if isinstance(raw, bytes) else raw.encode()
        )
        result = DefinitionSource(journey_id, version, definition.source, definition.designer)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[(journey_id, version)] = result
        return result

    async def journey(self, journey_id: str, version: int) -> Journey:
        """The parsed journey of one version: the send activity's `JourneyLoader`."""
        source = await self.source(journey_id, version)
        try:
            return parsed(source.source)
        except DefinitionInvalid as exc:
            raise ApplicationError(
                f"journey {journey_id!r} version {version}: {exc}",
                type=INVALID,
                non_retryable=True,
            ) from None


class DefinitionInvalid(ValueError):
    """A stored source that no longer reads as a journey (the registry validated it once)."""


@functools.lru_cache(maxsize=_CACHE_MAX)
def parsed(source: str) -> Journey:
    """The journey in `source`, read into the models; raises `DefinitionInvalid`.

    Only the schema, not the whole validator: the registry ran that at registration, and a
    rule added to the validator since must not fail running enrollments. Pure (YAML, pydantic,
    CEL compilation), so the workflow calls it; cached, since versions are immutable.
    """
    loaded = load_source(source)
    if loaded.data is None:
        first = loaded.diagnostics[0].message if loaded.diagnostics else "unreadable"
        raise DefinitionInvalid(first)
    try:
        return Journey.model_validate(loaded.data)
    except ValidationError as exc:
        raise DefinitionInvalid(str(exc)) from None
