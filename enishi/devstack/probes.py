"""Health probes for each kind of part: one async function each, True when healthy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import grpc
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enishi import grpc_client

NOISY_CLIENT_LOGGERS = ("aiokafka", "temporalio")


def quiet_client_logs() -> None:
    """Silence client libraries' connection-refused chatter, expected while parts boot.

    Called by the CLI only: a library module must not change logging for its importers.
    """
    for name in NOISY_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


async def kafka(bootstrap: str, timeout: float = 2.0) -> bool:
    """The broker answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


async def temporal(address: str, timeout: float = 2.0) -> bool:
    """The Temporal frontend answers its health check."""
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address), timeout)
        return bool(await asyncio.wait_for(client.service_client.check_health(), timeout))
    except Exception:
        return False


async def redis_ping(url: str, timeout: float = 2.0) -> bool:
    """Redis/Valkey answers PING."""
    client = redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def grpc_health(target: str, timeout: float = 2.0) -> bool:
    """A gRPC server answers SERVING through the standard health protocol."""
    # The client helper: TLS when the clients are configured for it (health needs no key).
    async with grpc_client.aio_channel(target) as channel:
        # The health stubs' typing lacks the generated methods.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def http_ready(url: str, timeout: float = 2.0) -> bool:
    """An HTTP readiness endpoint answers 200."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
