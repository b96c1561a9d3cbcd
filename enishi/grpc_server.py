"""The gRPC server skeleton every enishi gRPC service runs: one way to serve, log, measure, fail.

`GrpcServer` builds a `grpc.aio` server with the standard health service, reflection and
`ServiceInterceptor` (API keys and roles checked, request ids, one log line and metrics per
call, domain errors mapped to status codes), serves TLS when given a certificate, serves the
metrics/health HTTP endpoint beside it, and stops gracefully:
health NOT_SERVING, in-flight calls drained for `shutdown_grace_seconds`, then
`on_shutdown` (flush and close Kafka producers, Redis clients...).
`run(...)` is the whole `__main__` of a service whose clients need no async set-up.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn, cast

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from ulid import ULID

from enishi import auth, metrics, process, tls, tracing
from enishi.config import GrpcServiceSettings, env_var
from enishi.errors import (
    MAX_FIELD_ERRORS_IN_MESSAGE,
    EnishiError,
    InvalidArgument,
    PortInUseError,
    dependency_error,
)
from enishi.http_endpoint import MetricsEndpoint, ReadinessCheck

AddServicers = Callable[[grpc.aio.Server], Iterable[str]]
"""Registers a service's servicers on the server; returns their full names (`enishi.v1.Ingest`)."""

OnShutdown = Callable[[], Awaitable[None]]

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]

Admit = Callable[[], str | None]
"""Checks the call's API key: the caller's key name; raises Unauthenticated / PermissionDenied."""

REQUEST_ID_KEY: Final = "x-request-id"

# A caller-chosen id ends up in every log line: accept only short, plain ids.
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Probes and tooling call these constantly; a log line each would drown real traffic.
_QUIET_SERVICES: Final = (health.SERVICE_NAME, reflection.SERVICE_NAME)

# Codes that mean the server, not the caller, is at fault.
_SERVER_FAULTS: Final = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)

log = structlog.get_logger(__name__)


def current_request_id() -> str | None:
    """The request id of the gRPC call being served (for Kafka headers, downstream calls)."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def _new_request_id() -> str:
    return str(ULID())


def _request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
            return value
    return _new_request_id()


class _Call:
    """One call in flight: what the interceptor needs to log, measure and map its outcome."""

    def __init__(self, method: str, request_id: str) -> None:
        self.method = method
        self.request_id = request_id
        self.quiet = method.lstrip("/").startswith(_QUIET_SERVICES)
        self.caller: str | None = None
        self.code: grpc.StatusCode | None = None
        self.error: str | None = None
        self.fields: list[str] | None = None
        self._started = time.perf_counter()
        self._tokens: Mapping[str, contextvars.Token[Any]] = {}
        self._span: tracing.ActiveSpan | None = None

    def begin(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._tokens = structlog.contextvars.bind_contextvars(request_id=self.request_id)
        if tracing.enabled() and not self.quiet:
            # The server span continues the caller's trace (`traceparent` metadata).
            self._span = tracing.begin_span(
                self.method.lstrip("/"),
                kind=tracing.SpanKind.SERVER,
                parent=tracing.extract_context(context.invocation_metadata()),
                attributes={"rpc.system": "grpc", "enishi.request_id": self.request_id},
            )

    def admit(self, check: Admit) -> None:
        """Check the API key and record who is calling (the key's name, never the secret)."""
        try:
            caller = check()
        except auth.RoleMissing as exc:
            self.caller = exc.caller
            raise
        self.caller = caller
        if caller is not None:
            # The key's name (never its secret) in every line the handler logs.
            self._tokens = {
                **self._tokens,
                **structlog.contextvars.bind_contextvars(caller=caller),
            }

    async def fail(self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        """Answer the caller for `exc`; always raises (the abort, or `exc` itself)."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the handler chose its status with context.abort(); keep it
        metadata = ((REQUEST_ID_KEY, self.request_id),)
        if not isinstance(exc, EnishiError):
            unavailable = dependency_error(exc)
            if unavailable is not None:
                log.warning("grpc.dependency_unavailable", method=self.method, error=repr(exc))
                exc = unavailable
        if isinstance(exc, EnishiError):
            self.code = exc.status_code
            self.error = type(exc).__name__
            if isinstance(exc, InvalidArgument):
                self.fields = [e.field for e in exc.errors[:MAX_FIELD_ERRORS_IN_MESSAGE]]
            await context.abort(exc.status_code, str(exc), trailing_metadata=metadata)
        self.code = grpc.StatusCode.INTERNAL
        self.error = type(exc).__name__
        log.error("grpc.unhandled_error", method=self.method, exc_info=exc)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error (correlation id {self.request_id})",
            trailing_metadata=metadata,
        )

    def end(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        elapsed = time.perf_counter() - self._started
        code = self.code or context.code() or grpc.StatusCode.OK
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics.GRPC_CALLS.labels(self.method, code_name).inc()
        metrics.GRPC_CALL_SECONDS.labels(self.method).observe(elapsed)
        fields: dict[str, Any] = {
            "method": self.method,
            "code": code_name,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if self.caller is not None:
            fields["caller"] = self.caller
        if self.error is not None:
            fields["error"] = self.error
        if self.fields is not None:
            fields["fields"] = self.fields
        if self.quiet and code == grpc.StatusCode.OK:
            log.debug("grpc.call", **fields)
        elif code in _SERVER_FAULTS:
            log.error("grpc.call", **fields)
        else:
            log.info("grpc.call", **fields)
        structlog.contextvars.reset_contextvars(**self._tokens)
        if self._span is not None:
            if isinstance(code, grpc.StatusCode):
                self._span.span.set_attribute("rpc.grpc.status_code", code.value[0])
            self._span.end(error=code_name if code in _SERVER_FAULTS else None)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """API key check, request id, `grpc.call` log line, metrics and error mapping, every method."""

    def __init__(self, guard: auth.Guard) -> None:
        self._guard = guard

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED itself
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        request_id = _request_id(metadata)
        admit = functools.partial(self._guard.admit, method, metadata)
        # The stubs type behaviours for the sync server; under grpc.aio they are coroutines.
        if handler.response_streaming:
            inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
            behavior = _streaming(cast(Behavior, inner), method, request_id, admit)
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
        else:
            inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
            behavior = _unary(cast(Behavior, inner), method, request_id, admit)
            factory = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
        return factory(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unary(inner: Behavior, method: str, request_id: str, admit: Admit) -> Behavior:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(method, request_id)
        call.begin(context)
        try:
            call.admit(admit)
            return await inner(request, context)
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await call.fail(exc, context)
        finally:
            call.end(context)

    return behavior


def _streaming(inner: Behavior, method: str, request_id: str, admit: Admit) -> Behavior:
    async def behavior(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        call = _Call(method, request_id)
        call.begin(context)
        try:
            call.admit(admit)
            result = inner(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            elif inspect.isawaitable(result):
                await result  # writes its responses with context.write()
            else:
                for response in result:
                    yield response
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await call.fail(exc, context)
        finally:
            call.end(context)

    return behavior


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """One gRPC service process: `await start()` / `await stop()`, or `await serve()`."""

    def __init__(
        self,
        settings: GrpcServiceSettings,
        service_name: str,
        add_servicers: AddServicers,
        *,
        on_shutdown: OnShutdown | None = None,
        ready: ReadinessCheck | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        metrics_host: str = "0.0.0.0",
    ) -> None:
        self.settings = settings
        self.service_name = service_name
        self.health = health.aio.HealthServicer()
        self._add_servicers = add_servicers
        self._on_shutdown = on_shutdown
        self._ready = ready
        self._interceptors = tuple(interceptors)
        self._metrics_host = metrics_host
        self._server: grpc.aio.Server | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._port: int | None = None
        self._services: tuple[str, ...] = ()
        self._serving = False
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The gRPC port actually bound (the ephemeral one when settings ask for 0)."""
        if self._port is None:
            raise RuntimeError(f"{self.service_name}: gRPC server not started")
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The metrics/health HTTP port, or None when `metrics_port` is 0 (off)."""
        return self._endpoint.port if self._endpoint is not None else None

    @property
    def is_serving(self) -> bool:
        """True from the end of `start()` until `stop()` begins."""
        return self._serving

    @property
    def services(self) -> tuple[str, ...]:
        """Full names of the application services registered by `add_servicers`."""
        return self._services

    async def start(self) -> None:
        """Bind, start serving and mark every service SERVING.

        Raises `PortInUseError` naming `ENISHI_GRPC_PORT` / `ENISHI_METRICS_PORT`, and
        `ConfigurationError` when there are no API keys (and auth is not disabled on purpose)
        or a TLS file cannot be used.
        """
        if self._server is not None:
            raise RuntimeError(f"{self.service_name}: gRPC server already started")
        s = self.settings
        guard = auth.guard_from_settings(s)
        credentials = tls.server_credentials(s)
        if guard.disabled:
            log.warning(
                "grpc.auth_disabled",
                reason=f"{env_var(s, 'auth_disabled')}=true: any caller may call any method",
            )
        # grpc sets SO_REUSEPORT by default, which lets a second server silently share
        # (and steal half the calls of) a port that is already serving.
        server = grpc.aio.server(
            interceptors=[ServiceInterceptor(guard), *self._interceptors],
            options=[("grpc.so_reuseport", 0)],
        )
        self._services = tuple(self._add_servicers(server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = _address(s.grpc_host, s.grpc_port)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            raise PortInUseError(
                "gRPC", s.grpc_host, s.grpc_port, env_var(s, "grpc_port")
            ) from None
        endpoint = None
        if s.metrics_port:
            endpoint = MetricsEndpoint(
                self._metrics_host,
                s.metrics_port,
                ready=self._is_ready,
                port_env_var=env_var(s, "metrics_port"),
            )
            await endpoint.start()
        try:
            await server.start()
        except BaseException:
            if endpoint is not None:
                await endpoint.stop()
            raise
        self._server, self._endpoint, self._port = server, endpoint, port
        for name in ("", *self._services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        log.info(
            "grpc.serving",
            host=s.grpc_host,
            port=port,
            metrics_port=self.metrics_port,
            services=list(self._services),
            tls="mutual" if s.grpc_tls_client_ca_file else bool(credentials),
            key_names=guard.key_names,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, drain in-flight calls for `grace` seconds, then `on_shutdown`.

        `grace` defaults to `shutdown_grace_seconds`. Safe to call twice; a second call
        waits for the first to finish.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._serving = False
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        try:
            if self._server is not None:
                log.info("grpc.stopping", grace_seconds=grace)
                await self.health.enter_graceful_shutdown()
                await self._server.stop(grace)
            if self._on_shutdown is not None:
                await self._on_shutdown()
        finally:
            if self._endpoint is not None:
                await self._endpoint.stop()
            self._stopped.set()
            log.info("grpc.stopped")

    async def serve(self) -> None:
        """Start, serve until cancelled (SIGTERM through `enishi.process`), then `stop()`."""
        try:
            await self.start()
            # Not server.wait_for_termination(): cancelling that wait cancels grpc's own
            # shutdown future, and the graceful stop below would then fail at once.
            await self._stopped.wait()
        finally:
            await self.stop()

    async def _is_ready(self) -> bool:
        if not self.is_serving:
            return False
        if self._ready is None:
            return True
        result = self._ready()
        return bool(await result) if inspect.isawaitable(result) else bool(result)


def run(
    settings: GrpcServiceSettings,
    service_name: str,
    add_servicers: AddServicers,
    *,
    on_shutdown: OnShutdown | None = None,
    ready: ReadinessCheck | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT and return the exit code: `raise SystemExit(run(...))`.

    `add_servicers` runs inside the event loop, so it may create asyncio clients.
    Services that must `await` their clients' start-up write their own `main` with
    `GrpcServer(...).serve()` and hand it to `enishi.process.run`.
    """

    async def main() -> None:
        server = GrpcServer(
            settings, service_name, add_servicers, on_shutdown=on_shutdown, ready=ready
        )
        await server.serve()

    return process.run(main, settings=settings, service=service_name)
