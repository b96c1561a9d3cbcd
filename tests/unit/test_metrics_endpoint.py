"""The operations HTTP endpoint: Prometheus text at /metrics, liveness and readiness probes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from enishi import metrics
from enishi.errors import PortInUseError
from enishi.http_endpoint import MetricsEndpoint

pytestmark = pytest.mark.unit


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, endpoint: MetricsEndpoint, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{endpoint.port}{path}") as response:
        return response.status, await response.text()


async def test_metrics_serves_prometheus_text_with_enishi_metrics(
    http: aiohttp.ClientSession,
) -> None:
    metrics.GRPC_CALLS.labels("/enishi.test.v1.Probe/Scrape", "OK").inc()
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    await endpoint.start()
    try:
        async with http.get(f"http://127.0.0.1:{endpoint.port}/metrics") as response:
            body = await response.text()
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
    finally:
        await endpoint.stop()

    assert "# TYPE enishi_grpc_calls_total counter" in body
    assert "# TYPE enishi_grpc_call_seconds histogram" in body
    assert 'enishi_grpc_calls_total{code="OK",method="/enishi.test.v1.Probe/Scrape"}' in body


async def test_healthz_is_alive_and_readyz_ready_without_a_check(
    http: aiohttp.ClientSession,
) -> None:
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    await endpoint.start()
    try:
        assert await get(http, endpoint, "/healthz") == (200, "ok\n")
        assert await get(http, endpoint, "/readyz") == (200, "ready\n")
    finally:
        await endpoint.stop()


async def test_readyz_follows_a_sync_readiness_check(http: aiohttp.ClientSession) -> None:
    state = {"ready": False}
    endpoint = MetricsEndpoint("127.0.0.1", 0, ready=lambda: state["ready"])
    await endpoint.start()
    try:
        assert (await get(http, endpoint, "/readyz"))[0] == 503
        state["ready"] = True
        assert (await get(http, endpoint, "/readyz"))[0] == 200
        assert (await get(http, endpoint, "/healthz"))[0] == 200
    finally:
        await endpoint.stop()


async def test_readyz_awaits_an_async_check_and_a_failing_check_means_not_ready(
    http: aiohttp.ClientSession,
) -> None:
    answers: list[bool | Exception] = [True, RuntimeError("redis down")]

    async def ready() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    endpoint = MetricsEndpoint("127.0.0.1", 0, ready=ready)
    await endpoint.start()
    try:
        assert (await get(http, endpoint, "/readyz"))[0] == 200
        assert await get(http, endpoint, "/readyz") == (503, "not ready\n")
    finally:
        await endpoint.stop()


async def test_port_in_use_is_reported_with_the_env_var_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = MetricsEndpoint("127.0.0.1", port)

        with pytest.raises(PortInUseError) as caught:
            await endpoint.start()

    message = str(caught.value)
    assert f"port {port}" in message
    assert "ENISHI_METRICS_PORT" in message


async def test_stop_frees_the_port_and_may_be_called_twice(http: aiohttp.ClientSession) -> None:
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    await endpoint.start()
    port = endpoint.port
    await endpoint.stop()
    await endpoint.stop()

    again = MetricsEndpoint("127.0.0.1", port)
    await again.start()
    try:
        assert again.port == port
    finally:
        await again.stop()
