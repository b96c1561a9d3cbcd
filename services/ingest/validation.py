"""What makes a touchpoint acceptable; every problem is reported with its field path."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from enishi.errors import FieldError, field_path
from enishi.v1 import touchpoint_pb2

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_NAME_CHARS = 128
MAX_FUTURE = timedelta(hours=24)


def touchpoint_errors(event: touchpoint_pb2.Touchpoint, path: str) -> list[FieldError]:
    """Every problem with `event`, each naming its field under `path` (e.g. `events[3]`)."""
    errors: list[FieldError] = []
    if event.customer.WhichOneof("identity") is None:
        errors.append(
            FieldError(field_path(path, "customer"), "required: one identity of the customer")
        )
    if not event.name:
        errors.append(FieldError(field_path(path, "name"), "required"))
    elif len(event.name) > MAX_NAME_CHARS or not EVENT_NAME.match(event.name):
        errors.append(
            FieldError(
                field_path(path, "name"),
                f"must match <domain>.<action> in lower case (e.g. order.completed), "
                f"got {event.name[:MAX_NAME_CHARS]!r}",
            )
        )
    if event.HasField("occurred_at"):
        occurred = event.occurred_at.ToDatetime(tzinfo=UTC)
        if occurred > datetime.now(UTC) + MAX_FUTURE:
            errors.append(
                FieldError(field_path(path, "occurred_at"), "more than 24h in the future")
            )
    return errors
