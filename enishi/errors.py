"""Domain errors: handlers raise these, the gRPC interceptor turns them into status codes.

Each `EnishiError` subclass names its `status_code`; `enishi.grpc_server` is the one place
that applies it. Messages go to the caller as the status details, so they name the field
and the rule, never personal data or secrets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from temporalio.service import RPCError, RPCStatusCode

# Status details travel in HTTP/2 trailers, and peers reject metadata above ~8 KiB by
# default; a batch with thousands of bad events must still produce a readable answer.
MAX_FIELD_ERRORS_IN_MESSAGE = 10
MAX_MESSAGE_CHARS = 2000


class EnishiError(Exception):
    """Base of every error a handler may raise on purpose; `status_code` is its gRPC code."""

    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its path (`events[3].name`) and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def field_path(*parts: str | int) -> str:
    """The path of a nested field: `field_path("events", 3, "name")` is `events[3].name`."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


class InvalidArgument(EnishiError):
    """The request is malformed; every offending field is named in the message."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, errors: Iterable[FieldError] | FieldError) -> None:
        self.errors: tuple[FieldError, ...] = (
            (errors,) if isinstance(errors, FieldError) else tuple(errors)
        )
        if not self.errors:
            raise ValueError("InvalidArgument needs at least one FieldError")
        super().__init__(_join(self.errors))

    @classmethod
    def for_field(cls, field: str, message: str) -> InvalidArgument:
        """One bad field: `InvalidArgument.for_field("events[3].name", "must match ...")`."""
        return cls(FieldError(field, message))

    @classmethod
    def from_validation_error(cls, exc: ValidationError, prefix: str = "") -> InvalidArgument:
        """Translate a pydantic `ValidationError`; `prefix` is the path of the validated value."""
        errors = []
        for err in exc.errors(include_url=False):
            path = field_path(*(p for p in (prefix, *err["loc"]) if p != ""))
            errors.append(FieldError(path, err["msg"]))
        return cls(errors)


def _join(errors: Sequence[FieldError]) -> str:
    shown = "; ".join(str(e) for e in errors[:MAX_FIELD_ERRORS_IN_MESSAGE])
    hidden = len(errors) - MAX_FIELD_ERRORS_IN_MESSAGE
    if hidden > 0:
        shown += f"; and {hidden} more"
    if len(shown) > MAX_MESSAGE_CHARS:
        shown = shown[: MAX_MESSAGE_CHARS - 3] + "..."
    return shown


class NotFound(EnishiError):
    """The thing the request names does not exist."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EnishiError):
    """The thing the request would create exists already (e.g. a registered version)."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EnishiError):
    """The system is not in a state that allows the request (e.g. activating a draft)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(EnishiError):
    """A quota or size limit was hit; the caller may retry later or send less."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(EnishiError):
    """The caller did not prove who it is."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EnishiError):
    """The caller is known but may not do this."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(EnishiError):
    """A dependency (Kafka, Redis, Temporal) is down; the caller should retry with backoff."""

    status_code = grpc.StatusCode.UNAVAILABLE


def dependency_error(exc: BaseException) -> Unavailable | None:
    """`exc` as UNAVAILABLE when it says Redis, Kafka or Temporal cannot be reached, else None.

    The gRPC interceptor applies this to every handler, so no service wraps its own calls.
    """
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return Unavailable("customer memory (Redis) unavailable; retry with backoff")
    if isinstance(exc, KafkaError):
        # What reaches a handler has outlived the client's own retries: broker unreachable,
        # leaderless partitions, timeouts. All are the caller's cue to back off and retry.
        return Unavailable("Kafka unavailable; retry with backoff")
    if isinstance(exc, RPCError) and exc.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
    ):
        return Unavailable("Temporal unavailable; retry with backoff")
    return None


class PortInUseError(RuntimeError):
    """A listener could not bind its port; the message names the setting that moves it."""

    def __init__(self, what: str, host: str, port: int, env_var: str) -> None:
        self.host = host
        self.port = port
        self.env_var = env_var
        super().__init__(
            f"{what} port {port} on {host} is already in use (or cannot be bound); "
            f"stop the other process or set {env_var} to a free port (0 picks one)"
        )


class ConfigurationError(RuntimeError):
    """A setting keeps the process from starting; the message names the variable to fix."""

    def __init__(self, env_var: str, message: str) -> None:
        self.env_var = env_var
        super().__init__(message)
