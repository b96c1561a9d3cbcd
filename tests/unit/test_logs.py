"""Logging: one JSON line per event, stdlib routed through structlog, personal data redacted."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from enishi.logs import REDACTED, configure_logging, redact, redact_personal_data
from tests.unit.conftest import Lines

pytestmark = pytest.mark.unit


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    event = {
        "event": "dispatch.published",
        "email": "hanako@example.jp",
        "customer": {
            "phone": "+819012345678",
            "line_user_id": "U4af4980629b5f1e7ed4f5c5a44d3c6b7",
            "traits": [{"push_token": "abc123"}, {"Authorization": "Bearer xyz"}],
        },
        "api_key": "k-123",
        "channel": "line",
    }

    out = redact_personal_data(None, "info", event)

    assert out["email"] == REDACTED
    assert out["customer"]["phone"] == REDACTED
    assert out["customer"]["line_user_id"] == REDACTED
    assert out["customer"]["traits"] == [{"push_token": REDACTED}, {"Authorization": REDACTED}]
    assert out["api_key"] == REDACTED
    assert out["channel"] == "line"
    assert out["event"] == "dispatch.published"


def test_api_keys_are_redacted_under_any_spelling_of_their_name() -> None:
    event = {
        "x-api-key": "k-123",
        "X_API_KEY": "k-123",
        "api_keys": "shop:ingest:k-123",
        "ENISHI_API_KEY": "k-123",
        "metadata": [{"authorization": "Bearer k-123"}],
        "key_names": ["shop", "ops"],
    }

    out = redact_personal_data(None, "info", event)

    assert {k: v for k, v in out.items() if k != "metadata"} == {
        "x-api-key": REDACTED,
        "X_API_KEY": REDACTED,
        "api_keys": REDACTED,
        "ENISHI_API_KEY": REDACTED,
        "key_names": ["shop", "ops"],  # names are not secrets
    }
    assert out["metadata"] == [{"authorization": REDACTED}]


def test_a_bearer_credential_quoted_in_a_message_is_masked() -> None:
    out = redact({"error": "upstream refused 'authorization: Bearer abcDEF123-_.xyz' (401)"})
    assert out["error"] == f"upstream refused 'authorization: Bearer {REDACTED}' (401)"
    assert redact("the bearer of good news") == "the bearer of good news"


def test_redaction_never_changes_the_callers_objects() -> None:
    customer = {"email": "hanako@example.jp", "tags": ["vip"]}

    redact_personal_data(None, "info", {"customer": customer})

    assert customer == {"email": "hanako@example.jp", "tags": ["vip"]}


def test_emails_and_phone_numbers_inside_other_strings_are_masked() -> None:
    out = redact(
        {
            "reason": "bounce from hanako.sato+crm@mail.example.co.jp, retry later",
            "note": ["call +81 90-1234-5678 or +14155550100 after 10:00"],
        }
    )

    assert out["reason"] == "bounce from [email], retry later"
    assert out["note"] == ["call [phone] or [phone] after 10:00"]


def test_ordinary_values_survive_redaction() -> None:
    text = "order o-2024-0001 total +1500 yen, 3 items, version 1.2.3"
    event = {"event": "order.completed", "msg": text, "count": 3, "email_verified": True}

    assert redact_personal_data(None, "info", event) == event


def test_typed_values_are_redacted_field_by_field() -> None:
    @dataclass(frozen=True)
    class Contact:
        customer_id: str
        email: str

    out = redact({"contact": Contact("c-1", "hanako@example.jp")})

    assert out == {"contact": {"customer_id": "c-1", "email": REDACTED}}


def test_self_referencing_values_do_not_hang_redaction() -> None:
    loop: dict[str, Any] = {"name": "a"}
    loop["self"] = loop

    out = redact(loop)

    assert out["name"] == "a"


def test_service_lines_are_json_with_utc_time_service_and_context(json_lines: Lines) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-1")
    structlog.get_logger("enishi.test").info("thing.happened", channel="email", to="a@b.example")

    (line,) = json_lines()
    assert line["event"] == "thing.happened"
    assert line["level"] == "info"
    assert line["service"] == "test-service"
    assert line["logger"] == "enishi.test"
    assert line["request_id"] == "req-1"
    assert line["timestamp"].endswith("Z")
    assert line["to"] == "[email]"


def test_stdlib_library_logs_come_out_as_redacted_json(json_lines: Lines) -> None:
    logging.getLogger("thirdparty.client").warning(
        "could not reach %s", "broker for ops@example.com"
    )

    (line,) = json_lines()
    assert line["logger"] == "thirdparty.client"
    assert line["level"] == "warning"
    assert line["service"] == "test-service"
    assert line["event"] == "could not reach broker for [email]"


def test_tracebacks_are_logged_as_text_with_personal_data_masked(json_lines: Lines) -> None:
    try:
        raise ValueError("no customer with email hanako@example.jp")
    except ValueError:
        structlog.get_logger("enishi.test").exception("lookup.failed")

    (line,) = json_lines()
    assert "Traceback" in line["exception"]
    assert "ValueError: no customer with email [email]" in line["exception"]
    assert "hanako" not in json.dumps(line)


def test_records_below_the_level_are_dropped(json_lines: Lines) -> None:
    structlog.get_logger("enishi.test").debug("noise")
    logging.getLogger("thirdparty.client").debug("noise")
    structlog.get_logger("enishi.test").info("signal")

    assert [line["event"] for line in json_lines()] == ["signal"]


def test_console_format_renders_one_readable_line() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    try:
        configure_logging("DEBUG", "console", "test-service", stream=buffer)
        structlog.get_logger("enishi.test").debug("thing.happened", phone="+819012345678")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()

    text = buffer.getvalue()
    assert "thing.happened" in text
    assert "+8190" not in text
    assert REDACTED in text


def test_unknown_level_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="log_level: unknown level 'LOUD'"):
        configure_logging("LOUD", "json", "test-service")
