"""Structured logging: structlog configured once, stdlib routed through it, personal data redacted.

Every process calls `configure_logging(...)` at start-up and logs with
`structlog.get_logger(__name__).info("event.name", key=value)`. Records from stdlib loggers
(aiokafka, temporalio, grpc) go through the same processors, so every line is rendered
the same way and passes the same redaction.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from enishi.config import LogFormat

REDACTED: Final = "[redacted]"
EMAIL_MASK: Final = "[email]"
PHONE_MASK: Final = "[phone]"

# A key is sensitive when one of its `_`-separated words is one of these, or it holds
# `api_key` (`push_token`, `customer_email`, `Authorization`, `x-api-key` all match).
_SENSITIVE_WORDS: Final = frozenset(
    {
        "email",
        "phone",
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "cookie",
        "credentials",
    }
)
_SENSITIVE_KEYS: Final = frozenset({"line_user_id", "api_key", "set_cookie", "msisdn"})

_EMAIL_RE: Final = re.compile(
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
# E.164 (`+819012345678`), also as people type it (`+81 90-1234-5678`).
_PHONE_RE: Final = re.compile(r"(?<![\w+])\+[1-9](?:[ \-.]?\d){6,14}(?!\d)")
# A credential quoted in a message (`Authorization: Bearer <key>` in an error text).
_BEARER_RE: Final = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}")

# Deeper structures are summarised, not walked: a log line is no place for them, and
# a self-referencing value must not recurse forever.
_MAX_DEPTH: Final = 8

_HANDLER_NAME: Final = "enishi"


def is_sensitive_key(key: str) -> bool:
    """Whether values under `key` are personal data or secrets, whatever they look like."""
    normalized = key.lower().replace("-", "_")
    if normalized in _SENSITIVE_KEYS or "api_key" in normalized:
        return True
    return any(word in _SENSITIVE_WORDS for word in normalized.split("_"))


def mask_text(text: str) -> str:
    """`text` with email addresses, phone numbers and bearer credentials in it masked."""
    if "@" in text:
        text = _EMAIL_RE.sub(EMAIL_MASK, text)
    if "+" in text:
        text = _PHONE_RE.sub(PHONE_MASK, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER_RE.sub(rf"\1 {REDACTED}", text)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` with personal data removed; the original is never changed."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if _depth >= _MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {k: _redact_item(str(k), v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, _depth)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic models: redact field by field, keys included
        return redact(model_dump(), _depth)
    # Anything else would be rendered with str()/repr() anyway; do it here so it is masked.
    return mask_text(str(value))


def _redact_item(key: str, value: Any, depth: int) -> Any:
    if value is not None and not isinstance(value, bool) and is_sensitive_key(key):
        return REDACTED
    return redact(value, depth)


def redact_personal_data(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: drop secrets and personal data from every event, recursively."""
    return {k: _redact_item(k, v, 0) for k, v in event_dict.items()}


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        raise ValueError(
            f"log_level: unknown level {level!r}, expected DEBUG, INFO, WARNING or ERROR"
        )
    return number


def configure_logging(
    level: str, fmt: LogFormat, service: str, *, stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging for this process: one line per event on `stream`.

    Safe to call again (tests do); the last call wins. `stream` defaults to stdout.
    """
    level_number = _level_number(level)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Run for structlog and stdlib records alike, before they reach the handler.
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_service(service),
            structlog.processors.StackInfoRenderer(),
            # Tracebacks become plain strings so redaction sees them too (no locals shown).
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number)
    logging.captureWarnings(True)

    # Only the structlog-side chain is cached by loggers; everything that varies between
    # calls (level, service, renderer, stream) lives in the stdlib handler above.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
