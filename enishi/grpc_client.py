"""Channels to enishi's gRPC services: the one way our clients connect, send a key, trust TLS.

`aio_channel(target)` (asyncio) and `channel(target)` (blocking, for the CLI) read
`GrpcClientSettings` (`ENISHI_API_KEY`, `ENISHI_GRPC_TLS*`) unless given settings, attach the
key to every call as `authorization: Bearer <key>`, and use TLS when configured. With no
`ENISHI_API_KEY`, a loopback target gets the local stack's admin key
(`<ENISHI_DEV_STATE_DIR>/api-keys`, written by `enishi dev up`), so the CLI and the demo work
on a fresh stack with auth on; a remote target never does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Final, NamedTuple

import grpc
import grpc.aio

from enishi import tls
from enishi.auth import AUTHORIZATION_HEADER
from enishi.config import DevStackSettings, GrpcClientSettings
from enishi.devstack import api_keys

_LOCAL_HOSTS: Final = frozenset({"localhost", "ip6-localhost"})

HINT: Final = (
    "set ENISHI_API_KEY to a key with the role this call needs (docs/security.md); "
    "on the local stack, `enishi dev up` writes them to .enishi/api-keys"
)


def is_loopback(target: str) -> bool:
    """Whether `target` (`host:port`, `[v6]:port`, `dns:///host:port`) is this machine."""
    host = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host.lower() in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(target: str, settings: GrpcClientSettings) -> str | None:
    """The key to send to `target`: `ENISHI_API_KEY`, else the dev stack's admin key (loopback)."""
    configured = settings.api_key.get_secret_value()
    if configured:
        return configured
    if is_loopback(target):
        return api_keys.admin_key(DevStackSettings().state_dir)
    return None


def _with_key(metadata: Any, key: str) -> list[tuple[str, str | bytes]]:
    pairs = [(k, v) for k, v in (metadata or ()) if k != AUTHORIZATION_HEADER]
    return [*pairs, (AUTHORIZATION_HEADER, f"Bearer {key}")]


class _AioKey:
    """Adds the API key to a call's metadata (asyncio channels)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_key(details.metadata, self._key)),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files an interceptor under the first of the four kinds it is an instance of,
# so each kind needs its own object.
class _AioKeyUnaryUnary(_AioKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


class _AioKeyUnaryStream(_AioKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)


class _AioKeyStreamUnary(_AioKey, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


class _AioKeyStreamStream(_AioKey, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


def _aio_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    return [
        _AioKeyUnaryUnary(key),
        _AioKeyUnaryStream(key),
        _AioKeyStreamUnary(key),
        _AioKeyStreamStream(key),
    ]


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the API key to every call of a blocking channel."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _details(self, details: Any) -> Any:
        return _Details(
            details.method,
            details.timeout,
            _with_key(details.metadata, self._key),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def aio_channel(target: str, settings: GrpcClientSettings | None = None) -> grpc.aio.Channel:
    """An asyncio channel to `target` with the configured key and TLS."""
    settings = settings if settings is not None else GrpcClientSettings()
    key = api_key(target, settings)
    interceptors = _aio_interceptors(key) if key else None
    credentials = tls.channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)


def channel(target: str, settings: GrpcClientSettings | None = None) -> grpc.Channel:
    """A blocking channel to `target` with the configured key and TLS (for the CLI)."""
    settings = settings if settings is not None else GrpcClientSettings()
    key = api_key(target, settings)
    credentials = tls.channel_credentials(settings)
    plain = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    return grpc.intercept_channel(plain, _SyncKey(key)) if key else plain


def auth_hint(code: grpc.StatusCode | None) -> str | None:
    """What to tell a person whose call was refused for its key; None for other codes."""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return HINT
    return None
