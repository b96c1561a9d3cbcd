"""The local stack's API keys: one random key per role, made once, kept in the state directory.

`enishi dev up` writes `<state_dir>/api-keys` (mode 0600) on its first start and hands it to
every service as `ENISHI_API_KEYS_FILE`; the CLI and the demo use its admin key when
`ENISHI_API_KEY` is unset (enishi/grpc_client.py). Format: enishi/auth.py.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from enishi.auth import ApiKey, ApiKeysError, Role, read_keys_file

FILE_NAME: Final = "api-keys"
MODE: Final = 0o600


def path(state_dir: Path) -> Path:
    """Where the local stack keeps its keys."""
    return state_dir.resolve() / FILE_NAME


def generate() -> list[ApiKey]:
    """A fresh key per role, named `dev-<role>`."""
    return [
        ApiKey(f"dev-{role.value}", frozenset({role}), secrets.token_urlsafe(32)) for role in Role
    ]


def ensure(state_dir: Path) -> Path:
    """The keys file, made on first use; only its owner may read it."""
    target = path(state_dir)
    if target.exists():
        target.chmod(MODE)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "# enishi dev stack API keys (name:roles:secret); keep private.\n"
    text += "".join(f"{key.entry()}\n" for key in generate())
    # O_EXCL: two `dev up` racing never leave a file the services and the CLI disagree on.
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    except FileExistsError:
        return target
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return target


def admin_key(state_dir: Path) -> str | None:
    """The local stack's admin secret, or None when there is no (readable) keys file."""
    target = path(state_dir)
    if not target.exists():
        return None
    try:
        keys = read_keys_file(target)
    except ApiKeysError:
        return None
    for key in keys:
        if Role.ADMIN in key.roles:
            return key.secret
    return None
