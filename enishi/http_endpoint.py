"""The operations HTTP endpoint every enishi process serves: `/metrics`, `/healthz`, `/readyz`.

`/metrics` is the Prometheus text exposition of the default registry (names in
`enishi.metrics`); `/healthz` answers 200 while the event loop runs (liveness);
`/readyz` answers 200 only while the process's readiness check says so, 503 otherwise.
gRPC services get it from `enishi.grpc_server`; other processes start one themselves.
"""

from __future__ import annotations

import errno
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from enishi.errors import PortInUseError

ReadinessCheck = Callable[[], bool | Awaitable[bool]]
"""Says whether the process can do its work now (clients connected, not shutting down)."""

METRICS_PORT_ENV: Final = "ENISHI_METRICS_PORT"

log = structlog.get_logger(__name__)


def bind_tcp(host: str, port: int, *, what: str, env_var: str) -> socket.socket:
    """A listening-ready TCP socket on host:port (0 picks a free port), or `PortInUseError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only lets us rebind over TIME_WAIT; it never shares a live port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise PortInUseError(what, host, port, env_var) from None
        raise
    sock.setblocking(False)
    return sock


class MetricsEndpoint:
    """aiohttp server for `/metrics`, `/healthz` and `/readyz`; `start()` then `stop()`."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        ready: ReadinessCheck | None = None,
        port_env_var: str = METRICS_PORT_ENV,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._ready = ready
        self._port_env_var = port_env_var
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for); only after `start()`."""
        if self._port is None:
            raise RuntimeError("metrics endpoint: not started")
        return self._port

    async def start(self) -> None:
        """Bind and serve; raises `PortInUseError` naming the env var if the port is taken."""
        if self._runner is not None:
            return
        sock = bind_tcp(
            self._host, self._requested_port, what="metrics", env_var=self._port_env_var
        )
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # Scrapes and probes are not worth a log line each; shutdown must not wait on them.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]
        log.info("metrics.listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        """Stop serving; safe to call twice or before `start()`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready is None:
            return web.Response(text="ready\n")
        try:
            result = self._ready()
            ready = await result if inspect.isawaitable(result) else result
        except Exception:
            log.warning("metrics.readiness_check_failed", exc_info=True)
            ready = False
        if ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
