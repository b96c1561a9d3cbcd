"""An HTTP server beside a channel consumer: the LINE webhook, the email unsubscribe endpoint.

`http_companion(...)` is a `Companion` for `run_channel`: it builds the aiohttp application
from the service's shared Redis and Kafka clients, serves it on its own port for the life of
the consumer, and stops it with the service. Access logs are off: the paths may carry
tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from enishi.channels.consumer import Companion
from enishi.http_endpoint import bind_tcp

log = structlog.get_logger(__name__)

AppFactory = Callable[[Redis, AIOKafkaProducer], web.Application]


def http_companion(
    app: AppFactory,
    *,
    host: str,
    port: int,
    what: str,
    env_var: str,
    on_port: Callable[[int], None] | None = None,
) -> Companion:
    """Serve `app(redis, producer)` on `host:port` beside the consumer. Port 0 turns it off,
    unless `on_port` is given: then it binds a free port and reports it (tests do)."""

    @contextlib.asynccontextmanager
    async def serve(redis: Redis, producer: AIOKafkaProducer) -> AsyncIterator[None]:
        if not port and on_port is None:
            yield
            return
        runner = web.AppRunner(
            app(redis, producer), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        sock = bind_tcp(host, port, what=what, env_var=env_var)
        try:
            await web.SockSite(runner, sock).start()
            bound = sock.getsockname()[1]
            if on_port is not None:
                on_port(bound)
            log.info("channel.http_listening", what=what, port=bound)
            yield
        finally:
            await runner.cleanup()

    return serve
