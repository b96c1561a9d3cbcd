"""Request decoding that turns undecodable bytes into INVALID_ARGUMENT instead of INTERNAL.

grpc decodes a request before any handler runs; with the generated deserializers a string
that is not UTF-8 (or truncated bytes) would answer a status that names nothing. These
deserializers hand the handler an `Undecodable` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from enishi.errors import FieldError, InvalidArgument

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """A request grpc could not decode."""

    error: FieldError

    def invalid(self) -> InvalidArgument:
        return InvalidArgument(self.error)


def deserializer(cls: type[M]) -> Callable[[bytes], M | Undecodable]:
    """A deserializer for `cls` that never raises."""

    def parse(data: bytes) -> M | Undecodable:
        try:
            return cls.FromString(data)
        except (DecodeError, RecursionError, ValueError):
            return Undecodable(
                FieldError(
                    "request",
                    f"could not be decoded as {cls.DESCRIPTOR.name} "
                    "(malformed protobuf, or a string that is not UTF-8)",
                )
            )

    return parse
