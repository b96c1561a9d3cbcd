"""Request decoding that turns undecodable bytes into field errors instead of INTERNAL.

grpc decodes requests before any handler or interceptor runs, and a decode failure (invalid
UTF-8 in a string, nesting beyond protobuf's recursion limit, truncated bytes) would answer
a status that names nothing. `deserializer(cls)` catches it, finds the offending field by
walking the wire format against the descriptor, and hands the handler an `Undecodable`.
Every gRPC service registers its methods with these deserializers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from enishi.errors import FieldError, InvalidArgument, field_path

# Deeper than any valid request (ingest props nest at most ingest_props_max_depth); also keeps
# the walk itself far from Python's recursion limit.
MAX_WALK_DEPTH: Final = 200

_STRUCT: Final = "google.protobuf.Struct"
_LIST: Final = "google.protobuf.ListValue"
_VALUE: Final = "google.protobuf.Value"

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """A request grpc could not decode: why, by field."""

    errors: tuple[FieldError, ...]

    def invalid(self) -> InvalidArgument:
        """The INVALID_ARGUMENT a handler raises for it."""
        return InvalidArgument(self.errors)


class Malformed(Exception):
    """The bytes are not protobuf wire format."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Malformed
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, int, bytes | None]]:
    """(field number, wire type, payload for length-delimited fields) in order."""
    found: list[tuple[int, int, bytes | None]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        payload = None
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            payload = data[pos : pos + length]
            pos += length
        else:
            raise Malformed  # groups do not exist in proto3
        if pos > len(data) or number == 0:
            raise Malformed
        found.append((number, wire_type, payload))
    return found


def _map_key(entry: bytes) -> str:
    for number, _, payload in fields(entry):
        if number == 1 and payload is not None:
            return payload.decode("utf-8", errors="replace")
    return ""


def find_error(data: bytes, descriptor: Descriptor, path: str, depth: int = 0) -> FieldError:
    """Why `data` does not decode as `descriptor`, naming the field (best effort)."""
    found = _walk(data, descriptor, path, depth)
    return found or FieldError(path, "could not be decoded as protobuf")


def _walk(data: bytes, descriptor: Descriptor, path: str, depth: int) -> FieldError | None:
    if depth > MAX_WALK_DEPTH:
        return FieldError(path, "nested too deeply")
    try:
        entries = fields(data)
    except Malformed:
        return FieldError(path, "malformed protobuf bytes")
    counts: dict[int, int] = {}
    for number, _, payload in entries:
        fd = descriptor.fields_by_number.get(number)
        index = counts.get(number, 0)
        counts[number] = index + 1
        if fd is None or payload is None:
            continue
        here = _child_path(descriptor, fd, path, index, payload)
        if fd.type == FieldDescriptor.TYPE_STRING:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return FieldError(here, "not valid UTF-8")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            problem = _walk(payload, fd.message_type, here, depth + 1)
            if problem is not None:
                return problem
    return None


def _child_path(
    parent: Descriptor, fd: FieldDescriptor, path: str, index: int, payload: bytes
) -> str:
    # Struct, Value and ListValue read as the JSON they encode: props.cart.items[2].
    if parent.full_name == _VALUE or parent.GetOptions().map_entry:
        return path
    if parent.full_name == _LIST:
        return f"{path}[{index}]"
    entry = fd.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if parent.full_name == _STRUCT:
            return f"{path}.{_safe_key(payload)}"
        return f"{field_path(path, fd.name)}[{_safe_key(payload)!r}]"
    if fd.is_repeated:
        return field_path(path, fd.name, index)
    return field_path(path, fd.name)


def _safe_key(entry: bytes) -> str:
    try:
        return _map_key(entry)[:128]
    except Malformed:
        return "?"


def parse(cls: type[M], data: bytes) -> M | None:
    """`data` decoded as `cls`, or None when it does not decode."""
    try:
        return cls.FromString(data)
    except (DecodeError, RecursionError, ValueError):
        return None


def deserializer(cls: type[M], fallback: str = "request") -> Callable[[bytes], M | Undecodable]:
    """A request deserializer for `cls` that never raises.

    An error the walk cannot place on a field is reported on `fallback`.
    """

    descriptor: Descriptor = cls.DESCRIPTOR  # type: ignore[assignment]  # upb's twin type

    def decode(data: bytes) -> M | Undecodable:
        message = parse(cls, data)
        if message is not None:
            return message
        error = find_error(data, descriptor, "")
        return Undecodable((error if error.field else FieldError(fallback, error.message),))

    return decode


def register(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    deserializers: Mapping[str, Callable[[bytes], object]] | None = None,
) -> str:
    """Register every unary method of `service` on `server` with never-raising deserializers.

    Used instead of the generated `add_*Servicer_to_server`: a request that does not decode
    answers INVALID_ARGUMENT naming its field before the handler runs, so handlers only ever
    see real messages (or what a custom deserializer in `deserializers` returns, such as
    ingest's partial batches). Returns the service's full name, for health and reflection.
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        decode = (deserializers or {}).get(method.name) or deserializer(request_cls)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _rejecting_undecodable(getattr(servicer, method.name)),
            request_deserializer=decode,
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
    return str(service.full_name)


def _rejecting_undecodable(
    handler: Callable[[Any, Any], Awaitable[Any]],
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def behavior(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            raise request.invalid()
        return await handler(request, context)

    return behavior
