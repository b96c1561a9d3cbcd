"""Which customer a `CustomerRef` names: checked, normalised, resolved read-only, or NOT_FOUND.

Lookups never register anything (unlike ingest): an identity nobody has seen is NOT_FOUND,
naming the ref's field, e.g. `customer.email: no customer`. Aliases are followed, so a ref
to a merged-away id finds the survivor.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from enishi import identity, keys
from enishi.errors import InvalidArgument, NotFound, field_path
from enishi.identity import IdentityResolver, Ref
from enishi.v1 import identity_pb2


@dataclass(frozen=True)
class Resolved:
    """The canonical customer a ref found."""

    customer_id: str
    ref: Ref
    merged: bool
    """True when an alias was followed: the ref led to an id merged into customer_id."""


def check_ref(ref: identity_pb2.CustomerRef, path: str = "customer") -> Ref:
    """The normalised ref; `InvalidArgument` naming `<path>.<kind>` when it is not usable."""
    kind = ref.WhichOneof("identity")
    if kind is None:
        raise InvalidArgument.for_field(
            path, "required: exactly one identity (customer_id, email, phone, ...)"
        )
    try:
        return Ref(kind, identity.normalize(kind, getattr(ref, kind)))
    except identity.InvalidIdentity as exc:
        raise InvalidArgument.for_field(field_path(path, kind), str(exc)) from None


class CustomerLookup:
    """Resolves refs to canonical customers that exist, over the shared identity index."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._resolver = IdentityResolver(redis)

    @property
    def resolver(self) -> IdentityResolver:
        return self._resolver

    async def find(self, ref: Ref, path: str = "customer") -> Resolved:
        """The customer `ref` names; `NotFound` naming `<path>.<kind>` when nobody has it."""
        if ref.kind == identity.CUSTOMER_ID:
            first: str | None = ref.value
        else:
            owner = await self._redis.get(keys.identity(ref.kind, ref.value))
            first = owner.decode() if isinstance(owner, bytes) else owner
        if first is not None:
            customer_id = await self._resolver.canonical(first)
            merged = customer_id != first
            if merged or await self.exists(customer_id):
                return Resolved(customer_id, ref, merged)
        raise NotFound(f"{field_path(path, ref.kind)}: no customer")

    async def exists(self, customer_id: str) -> bool:
        """True when enishi remembers anything about the customer or indexes an identity of it.

        Every applied touchpoint sets the `created_at` counter, so the counters hash exists
        for every customer with memory; the identity set exists as soon as ingest saw them.
        """
        found = await self._redis.exists(
            keys.customer(customer_id, keys.COUNTERS), keys.identities(customer_id)
        )
        return int(found) > 0
