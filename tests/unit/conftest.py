"""Fixtures shared by unit tests."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from enishi.logs import configure_logging

Lines = Callable[[], list[dict[str, Any]]]
LOG_SERVICE = "test-service"


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Logging configured as a service would (service `test-service`), into a readable buffer."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("INFO", "json", LOG_SERVICE, stream=buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
