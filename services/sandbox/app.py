"""The sandbox process's parts put together: SMTP and HTTP servers over one ledger and faults.

Tests run it in-process (`async with Sandbox(...)`, ports 0 for free ones); `__main__` runs it
as the `sandbox` service of `enishi dev up`.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi.config import SandboxSettings
from enishi.http_endpoint import bind_tcp
from services.sandbox.faults import Faults
from services.sandbox.http_api import SandboxApi
from services.sandbox.ledger import Ledger
from services.sandbox.smtp import SandboxSmtpHandler, smtp_factory

log = structlog.get_logger(__name__)


class Sandbox:
    """SMTP on `sandbox_smtp_port`, the HTTP shapes and admin API on `sandbox_http_port`."""

    def __init__(
        self, settings: SandboxSettings, redis: Redis, producer: AIOKafkaProducer | None = None
    ) -> None:
        self.settings = settings
        self.ledger = Ledger(redis)
        self.faults = Faults()
        self._api = SandboxApi(
            self.ledger,
            self.faults,
            redis=redis,
            producer=producer,
            line_webhook_url=settings.sandbox_line_webhook_url,
            line_channel_secret=settings.sandbox_line_channel_secret.get_secret_value(),
        )
        self._smtp: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.smtp_port = 0
        self.http_port = 0

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP side, for clients on this host."""
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        settings = self.settings
        smtp_sock = bind_tcp(
            settings.sandbox_host,
            settings.sandbox_smtp_port,
            what="sandbox SMTP",
            env_var="ENISHI_SANDBOX_SMTP_PORT",
        )
        http_sock = bind_tcp(
            settings.sandbox_host,
            settings.sandbox_http_port,
            what="sandbox HTTP",
            env_var="ENISHI_SANDBOX_HTTP_PORT",
        )
        handler = SandboxSmtpHandler(self.ledger, self.faults)
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(lambda: smtp_factory(handler), sock=smtp_sock)
        self.smtp_port = smtp_sock.getsockname()[1]
        runner = web.AppRunner(
            self._api.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.SockSite(runner, http_sock).start()
        self._runner = runner
        self.http_port = http_sock.getsockname()[1]
        log.info("sandbox.listening", smtp_port=self.smtp_port, http_port=self.http_port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()
            await smtp.wait_closed()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
