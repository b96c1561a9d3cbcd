"""API keys for tests: every test server accepts these; a client picks the key it needs.

One key per role, plus for each non-admin role a key holding every other non-admin role
(the key that must still be refused). Secrets are fixed and recognisable, so a test can
search logs for them.
"""

from __future__ import annotations

from typing import Final

from pydantic import SecretStr

from enishi.auth import ApiKey, Role
from enishi.config import GrpcClientSettings

_WORKERS: Final = (Role.INGEST, Role.DESIGNER, Role.READER)


def _key(name: str, roles: set[Role]) -> ApiKey:
    return ApiKey(name, frozenset(roles), f"{name}-secret-0123456789abcdef")


ROLE_KEYS: Final = {role: _key(f"test-{role.value}", {role}) for role in Role}
ALL_BUT_KEYS: Final = {
    role: _key(f"test-all-but-{role.value}", set(_WORKERS) - {role}) for role in _WORKERS
}
KEYS: Final = (*ROLE_KEYS.values(), *ALL_BUT_KEYS.values())

SERVER_KEYS: Final = SecretStr(",".join(key.entry() for key in KEYS))
"""`api_keys=` for a test server's settings (ENISHI_API_KEYS)."""


def client(key: ApiKey) -> GrpcClientSettings:
    """Client settings (for enishi.grpc_client) sending `key`."""
    return GrpcClientSettings(api_key=SecretStr(key.secret))


ADMIN: Final = client(ROLE_KEYS[Role.ADMIN])
"""What the shared fixtures' channels send: they test behaviour, not permissions."""
