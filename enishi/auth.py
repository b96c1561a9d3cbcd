"""Who may call which gRPC method: API keys carrying roles, and the one table of method roles.

A key is `name:role[+role...]:secret`. Servers read keys from `ENISHI_API_KEYS` (comma
separated) and `ENISHI_API_KEYS_FILE` (one a line, `#` comments); callers present the secret
as `authorization: Bearer <secret>` (or `x-api-key: <secret>`). `ServiceInterceptor`
(enishi/grpc_server.py) asks `Guard.admit` before every call; `METHOD_ROLES` says which
role each method needs. Rules and rotation: docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from enishi.config import GrpcServiceSettings, env_var
from enishi.errors import ConfigurationError, PermissionDenied, Unauthenticated


class Role(StrEnum):
    """What a key may do. `admin` may do everything."""

    INGEST = "ingest"  # producers: write touchpoints, identities, consents
    DESIGNER = "designer"  # journey designers: validate, register, activate, pause, migrate
    READER = "reader"  # dashboards, staff tools: read customers, journeys, stats
    ADMIN = "admin"


# Every method of every enishi gRPC service, and the role it needs. A method missing here
# needs `admin` (fail closed); tests/unit/test_auth.py fails when a proto method is missing,
# and docs/security.md's table is checked against this one.
METHOD_ROLES: Final[Mapping[str, Role]] = {
    "/enishi.v1.IngestService/Track": Role.INGEST,
    "/enishi.v1.IngestService/BatchTrack": Role.INGEST,
    "/enishi.v1.IngestService/Identify": Role.INGEST,
    "/enishi.v1.CustomerService/GetCustomer": Role.READER,
    "/enishi.v1.CustomerService/ListTimeline": Role.READER,
    "/enishi.v1.CustomerService/FindCustomer": Role.READER,
    # A consent or preference change is written as touchpoints, like Identify: the
    # producers (a preference centre, an app backend) hold ingest keys; readers never write.
    "/enishi.v1.CustomerService/UpdatePreferences": Role.INGEST,
    "/enishi.v1.JourneyRegistry/ValidateJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/RegisterJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/ActivateJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/PauseJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/ResumeJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/ArchiveJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/PlanMigration": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/MigrateJourney": Role.DESIGNER,
    "/enishi.v1.JourneyRegistry/ListJourneys": Role.READER,
    "/enishi.v1.JourneyRegistry/GetJourney": Role.READER,
    "/enishi.v1.JourneyRegistry/GetJourneyStats": Role.READER,
}

# Probes and tooling must work without a key: health checks and reflection reveal nothing
# a caller could not learn from the protos.
OPEN_SERVICES: Final = ("grpc.health.v1.Health", "grpc.reflection.")

AUTHORIZATION_HEADER: Final = "authorization"
API_KEY_HEADER: Final = "x-api-key"
BEARER: Final = "bearer "
MIN_SECRET_CHARS: Final = 24

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_SECRET_RE: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


def required_role(method: str) -> Role | None:
    """The role `method` (`/pkg.Service/Method`) needs; None for the open services."""
    if method.lstrip("/").startswith(OPEN_SERVICES):
        return None
    return METHOD_ROLES.get(method, Role.ADMIN)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    """One key: a public name (logged), its roles, and the secret (never logged)."""

    name: str
    roles: frozenset[Role]
    secret: str = field(repr=False)

    def allows(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles

    def entry(self) -> str:
        """The key as one `name:role[+role]:secret` entry."""
        return f"{self.name}:{'+'.join(sorted(self.roles))}:{self.secret}"


class ApiKeysError(ValueError):
    """Keys that cannot be used; the message names the source and the key, never a secret."""


def parse_entry(entry: str, where: str) -> ApiKey:
    """One `name:role[+role]:secret`; `where` (e.g. `ENISHI_API_KEYS entry 2`) locates it."""
    name, sep, rest = entry.strip().partition(":")
    roles_text, sep2, secret = rest.partition(":")
    if not (sep and sep2):
        raise ApiKeysError(f"{where}: expected name:role[+role]:secret")
    if not _NAME_RE.fullmatch(name):
        raise ApiKeysError(
            f"{where}: key name must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    roles = set()
    for text in roles_text.split("+"):
        try:
            roles.add(Role(text.strip().lower()))
        except ValueError:
            raise ApiKeysError(
                f"{where}: key {name!r}: unknown role {text!r}, "
                f"expected {', '.join(r.value for r in Role)}"
            ) from None
    if len(secret) < MIN_SECRET_CHARS:
        raise ApiKeysError(
            f"{where}: key {name!r}: secret shorter than {MIN_SECRET_CHARS} characters"
        )
    if not _SECRET_RE.fullmatch(secret) or "," in secret:
        raise ApiKeysError(
            f"{where}: key {name!r}: secret must be printable ASCII without spaces or commas"
        )
    return ApiKey(name, frozenset(roles), secret)


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """Keys from `text`: entries separated by commas or new lines; `#` starts a comment line."""
    keys = []
    entries = [
        entry
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for entry in line.split(",")
        if entry.strip()
    ]
    for number, entry in enumerate(entries, start=1):
        keys.append(parse_entry(entry, f"{source} entry {number}"))
    return keys


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys in a keys file; raises ApiKeysError when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeysError(f"{path}: cannot read: {exc.__class__.__name__}") from None
    return parse_keys(text, str(path))


class KeyRing:
    """The keys a server accepts, held as digests, looked up in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys: list[tuple[bytes, ApiKey]] = []
        names: set[str] = set()
        for key in keys:
            if key.name in names:
                raise ApiKeysError(f"key {key.name!r} appears twice")
            names.add(key.name)
            digest = _digest(key.secret)
            for other_digest, other in self._keys:
                if hmac.compare_digest(digest, other_digest):
                    raise ApiKeysError(f"keys {other.name!r} and {key.name!r} share a secret")
            # The ring keeps no secret, only its digest.
            self._keys.append((digest, ApiKey(key.name, key.roles, "")))

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def names(self) -> list[str]:
        return [key.name for _, key in self._keys]

    def identify(self, secret: str) -> ApiKey | None:
        """The key whose secret is `secret`, or None.

        Every key is compared, whatever matched, over fixed-length digests: the time taken
        says nothing about which key (or how much of one) was right.
        """
        presented = _digest(secret)
        found: ApiKey | None = None
        for digest, key in self._keys:
            if hmac.compare_digest(presented, digest):
                found = key
        return found


Metadata = Sequence[tuple[str, str | bytes]]


class RoleMissing(PermissionDenied):
    """A known key without the method's role; `caller` is the key's name, for the log."""

    def __init__(self, message: str, caller: str) -> None:
        super().__init__(message)
        self.caller = caller


def presented_secret(metadata: Metadata | None) -> str | None:
    """The secret in `authorization: Bearer <secret>` or `x-api-key: <secret>`, if any."""
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == AUTHORIZATION_HEADER and value[: len(BEARER)].lower() == BEARER:
            return value[len(BEARER) :].strip()
        if key == API_KEY_HEADER:
            return value.strip()
    return None


class Guard:
    """Decides each call: who is calling, and may they call this method."""

    def __init__(self, ring: KeyRing | None) -> None:
        self._ring = ring  # None: auth disabled, every caller may do everything

    @property
    def disabled(self) -> bool:
        return self._ring is None

    @property
    def key_names(self) -> list[str]:
        return self._ring.names if self._ring is not None else []

    def admit(self, method: str, metadata: Metadata | None) -> str | None:
        """The calling key's name (None when no key is needed or checked).

        Raises Unauthenticated for a missing or unknown key and PermissionDenied for a key
        without the method's role. Messages name the role, never the secret.
        """
        role = required_role(method)
        if role is None or self._ring is None:
            return None
        secret = presented_secret(metadata)
        if not secret:
            raise Unauthenticated(
                f"{method}: no API key; send `authorization: Bearer <key>` "
                f"(a key with role {role.value})"
            )
        key = self._ring.identify(secret)
        if key is None:
            raise Unauthenticated(f"{method}: unknown API key")
        if not key.allows(role):
            raise RoleMissing(
                f"{method}: needs role {role.value}; key {key.name!r} has "
                f"{'+'.join(sorted(key.roles))}",
                key.name,
            )
        return key.name


def guard_from_settings(settings: GrpcServiceSettings) -> Guard:
    """The guard a service runs with; raises ConfigurationError when it would be unsafe.

    No keys at all is an error unless `ENISHI_AUTH_DISABLED=true`: a service never ends up
    open by accident.
    """
    env_keys, env_file = env_var(settings, "api_keys"), env_var(settings, "api_keys_file")
    if settings.auth_disabled:
        return Guard(None)
    keys: list[ApiKey] = []
    try:
        keys += parse_keys(settings.api_keys.get_secret_value(), env_keys)
    except ApiKeysError as exc:
        raise ConfigurationError(env_keys, str(exc)) from None
    if settings.api_keys_file is not None:
        try:
            keys += read_keys_file(settings.api_keys_file)
        except ApiKeysError as exc:
            raise ConfigurationError(env_file, str(exc)) from None
    if not keys:
        raise ConfigurationError(
            env_keys,
            f"no API keys: set {env_keys} or {env_file} (docs/security.md), "
            f"or {env_var(settings, 'auth_disabled')}=true to serve without authentication",
        )
    try:
        return Guard(KeyRing(keys))
    except ApiKeysError as exc:
        raise ConfigurationError(env_keys, f"{env_keys} / {env_file}: {exc}") from None
