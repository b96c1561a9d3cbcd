"""The gRPC skeleton: health, reflection, error mapping, request ids, metrics, graceful stop.

A real `grpc.aio` server on an ephemeral port serves a bytes-in/bytes-out test service
(no generated protos needed) and is called over a real channel.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
import pytest_asyncio
import redis.exceptions
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from enishi import grpc_client
from enishi.config import GrpcServiceSettings
from enishi.errors import (
    MAX_FIELD_ERRORS_IN_MESSAGE,
    FieldError,
    InvalidArgument,
    NotFound,
    PortInUseError,
    field_path,
)
from enishi.grpc_server import REQUEST_ID_KEY, GrpcServer, current_request_id
from tests import auth_support
from tests.polling import eventually
from tests.unit.conftest import LOG_SERVICE, Lines

pytestmark = pytest.mark.unit

SERVICE = "enishi.test.v1.Echo"
Context = grpc.aio.ServicerContext[bytes, bytes]


@dataclass
class Echo:
    """A test service: one method per behaviour the interceptor must handle."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    seen_request_ids: list[str | None] = field(default_factory=list)

    async def echo(self, request: bytes, context: Context) -> bytes:
        self.seen_request_ids.append(current_request_id())
        return request

    async def invalid(self, request: bytes, context: Context) -> bytes:
        raise InvalidArgument(
            [
                FieldError(
                    field_path("events", 3, "name"),
                    "must match <domain>.<action>, got 'Order Completed'",
                ),
                FieldError("events[7].customer_id", "must not be empty"),
            ]
        )

    async def missing(self, request: bytes, context: Context) -> bytes:
        raise NotFound("journey f2-second-purchase: no such journey")

    async def crash(self, request: bytes, context: Context) -> bytes:
        raise RuntimeError("bug while handling hanako@example.jp")

    async def redis_down(self, request: bytes, context: Context) -> bytes:
        raise redis.exceptions.ConnectionError("Error 111 connecting to localhost:6379")

    async def refuse(self, request: bytes, context: Context) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "designers only")

    async def slow(self, request: bytes, context: Context) -> bytes:
        self.entered.set()
        await self.release.wait()
        return b"done"

    async def count(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            if i == 2:
                raise InvalidArgument.for_field("n", "at most 2")
            yield str(i).encode()

    def add(self, server: grpc.aio.Server) -> list[str]:
        unary = {
            "Echo": self.echo,
            "Invalid": self.invalid,
            "Missing": self.missing,
            "Crash": self.crash,
            "RedisDown": self.redis_down,
            "Refuse": self.refuse,
            "Slow": self.slow,
        }
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(behavior) for name, behavior in unary.items()
        }
        handlers["Count"] = grpc.unary_stream_rpc_method_handler(self.count)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        return [SERVICE]


def settings(**overrides: Any) -> GrpcServiceSettings:
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_seconds": 5.0,
        "api_keys": auth_support.SERVER_KEYS,
        **overrides,
    }
    return GrpcServiceSettings(**values)


@dataclass
class Served:
    server: GrpcServer
    echo: Echo
    channel: grpc.aio.Channel

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        return unary(self.channel, method)


def unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=bytes, response_deserializer=bytes
    )


# The health and reflection stubs are untyped; these are the same calls, typed.
def health_check(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryUnaryMultiCallable[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]:
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def health_watch(
    channel: grpc.aio.Channel,
) -> grpc.aio.UnaryStreamMultiCallable[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]:
    return channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def reflection_info(
    channel: grpc.aio.Channel,
) -> grpc.aio.StreamStreamMultiCallable[
    reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
]:
    return channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    echo = Echo()
    server = GrpcServer(settings(), "echo", echo.add)
    await server.start()
    channel = grpc_client.aio_channel(f"127.0.0.1:{server.port}", auth_support.ADMIN)
    try:
        yield Served(server, echo, channel)
    finally:
        echo.release.set()
        await channel.close()
        await server.stop(0)


def calls(lines: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [x for x in lines if x["event"] == "grpc.call" and x["method"] == f"/{SERVICE}/{method}"]


async def test_health_answers_serving_for_the_server_and_each_service(served: Served) -> None:
    for name in ("", SERVICE):
        reply = await health_check(served.channel)(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_registered_service(served: Served) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    replies = [reply async for reply in reflection_info(served.channel)(iter([request]))]

    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_a_successful_call_answers_normally(served: Served) -> None:
    assert await served.unary("Echo")(b"hello") == b"hello"


async def test_invalid_argument_arrives_with_every_bad_field_named(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.unary("Invalid")(b"")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "events[3].name: must match <domain>.<action>, got 'Order Completed'; "
        "events[7].customer_id: must not be empty"
    )


async def test_not_found_arrives_as_not_found_with_its_message(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.unary("Missing")(b"")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "journey f2-second-purchase: no such journey"


async def test_unexpected_exception_is_internal_with_a_correlation_id_and_serving_goes_on(
    served: Served, json_lines: Lines
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.unary("Crash")(b"", metadata=((REQUEST_ID_KEY, "req-crash-1"),))

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error (correlation id req-crash-1)"
    assert (REQUEST_ID_KEY, "req-crash-1") in tuple(caught.value.trailing_metadata() or ())
    assert await served.unary("Echo")(b"still here") == b"still here"

    (error,) = [x for x in json_lines() if x["event"] == "grpc.unhandled_error"]
    assert error["request_id"] == "req-crash-1"
    assert "RuntimeError: bug while handling [email]" in error["exception"]
    (call,) = calls(json_lines(), "Crash")
    assert (call["code"], call["level"], call["error"]) == ("INTERNAL", "error", "RuntimeError")


async def test_a_dependency_that_is_down_answers_unavailable_not_internal(
    served: Served,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.unary("RedisDown")(b"")

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Redis" in (caught.value.details() or "")


async def test_context_abort_in_a_handler_passes_through_untouched(served: Served) -> None:
    labels = {"method": f"/{SERVICE}/Refuse", "code": "PERMISSION_DENIED"}
    before = REGISTRY.get_sample_value("enishi_grpc_calls_total", labels) or 0.0

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.unary("Refuse")(b"")

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "designers only"

    # The interceptor counts in a `finally` that may run after the client has its status.
    async def counted() -> bool:
        return REGISTRY.get_sample_value("enishi_grpc_calls_total", labels) == before + 1

    await eventually(counted, timeout=5)


async def test_streaming_method_is_served_and_its_domain_errors_mapped(served: Served) -> None:
    count = served.channel.unary_stream(
        f"/{SERVICE}/Count", request_serializer=bytes, response_deserializer=bytes
    )
    received: list[bytes] = []

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in count(b"5"):
            received.append(message)

    assert received == [b"0", b"1"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "n: at most 2"


async def test_request_id_from_metadata_is_in_the_call_log_line_and_the_handler(
    served: Served, json_lines: Lines
) -> None:
    await served.unary("Echo")(b"x", metadata=((REQUEST_ID_KEY, "req-42"),))

    (line,) = calls(json_lines(), "Echo")
    assert line["request_id"] == "req-42"
    assert line["code"] == "OK"
    assert line["service"] == LOG_SERVICE
    assert isinstance(line["duration_ms"], float)
    assert "x" not in line.values()  # payloads are never logged
    assert served.echo.seen_request_ids == ["req-42"]


async def test_calls_without_a_request_id_get_distinct_new_ones(
    served: Served, json_lines: Lines
) -> None:
    await asyncio.gather(*(served.unary("Echo")(b"x") for _ in range(5)))

    ids = {line["request_id"] for line in calls(json_lines(), "Echo")}
    assert len(ids) == 5
    assert set(served.echo.seen_request_ids) == ids


async def test_a_hostile_request_id_is_replaced(served: Served, json_lines: Lines) -> None:
    await served.unary("Echo")(b"x", metadata=((REQUEST_ID_KEY, 'a b" level=admin ' * 20),))

    (line,) = calls(json_lines(), "Echo")
    assert len(line["request_id"]) == 26  # a fresh ULID


async def test_client_errors_are_logged_with_field_names_but_not_values(
    served: Served, json_lines: Lines
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await served.unary("Invalid")(b"")

    (line,) = calls(json_lines(), "Invalid")
    assert line["level"] == "info"
    assert line["fields"] == ["events[3].name", "events[7].customer_id"]
    assert "Order Completed" not in json.dumps(line)


async def test_calls_are_counted_by_method_and_code_and_timed(served: Served) -> None:
    method = f"/{SERVICE}/Missing"

    def count(code: str) -> float:
        return (
            REGISTRY.get_sample_value("enishi_grpc_calls_total", {"method": method, "code": code})
            or 0.0
        )

    def timed() -> float:
        return (
            REGISTRY.get_sample_value("enishi_grpc_call_seconds_count", {"method": method}) or 0.0
        )

    before, timed_before = count("NOT_FOUND"), timed()
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await served.unary("Missing")(b"")

    # The interceptor counts in a `finally` that may run after the client has its status.
    async def counted() -> bool:
        return count("NOT_FOUND") == before + 3 and timed() == timed_before + 3

    await eventually(counted, timeout=5)
    assert count("OK") == 0.0


async def next_status(
    watch: grpc.aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
) -> int:
    reply = await watch.read()
    assert isinstance(reply, health_pb2.HealthCheckResponse)
    return reply.status


async def test_graceful_stop_goes_not_serving_and_lets_the_call_in_flight_finish() -> None:
    echo = Echo()
    server = GrpcServer(settings(), "echo", echo.add)
    await server.start()
    async with grpc_client.aio_channel(f"127.0.0.1:{server.port}", auth_support.ADMIN) as channel:
        watch = health_watch(channel)(health_pb2.HealthCheckRequest(service=SERVICE))
        assert await next_status(watch) == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(unary(channel, "Slow")(b""))
        await echo.entered.wait()

        stopping = asyncio.create_task(server.stop(grace=5.0))
        update = await asyncio.wait_for(next_status(watch), 5)
        assert update == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert not in_flight.done()

        echo.release.set()
        assert await asyncio.wait_for(in_flight, 5) == b"done"
        await asyncio.wait_for(stopping, 5)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(channel, "Echo")(b"", timeout=1)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_runs_on_shutdown_once_even_when_called_twice() -> None:
    closed: list[str] = []

    async def close_clients() -> None:
        closed.append("producer")

    server = GrpcServer(settings(), "echo", Echo().add, on_shutdown=close_clients)
    await server.start()
    await asyncio.gather(server.stop(0), server.stop(0))

    assert closed == ["producer"]


async def test_cancelling_serve_stops_gracefully_and_closes_clients() -> None:
    closed: list[str] = []

    async def close_clients() -> None:
        closed.append("producer")

    server = GrpcServer(settings(), "echo", Echo().add, on_shutdown=close_clients)
    serving = asyncio.create_task(server.serve())
    while not server.is_serving:
        await asyncio.sleep(0.01)

    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving

    assert closed == ["producer"]
    reply = await server.health.Check(health_pb2.HealthCheckRequest(), None)  # type: ignore[arg-type]
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_port_in_use_error_names_the_port_and_the_env_var() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = GrpcServer(settings(grpc_port=port), "echo", Echo().add)

        with pytest.raises(PortInUseError) as caught:
            await server.start()

    message = str(caught.value)
    assert f"port {port}" in message
    assert "ENISHI_GRPC_PORT" in message


async def test_a_second_server_cannot_share_a_port_already_serving(served: Served) -> None:
    second = GrpcServer(settings(grpc_port=served.server.port), "echo", Echo().add)

    with pytest.raises(PortInUseError, match="ENISHI_GRPC_PORT"):
        await second.start()


async def test_metrics_endpoint_runs_beside_the_server_and_is_ready_only_while_serving() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    server = GrpcServer(
        settings(metrics_port=metrics_port), "echo", Echo().add, metrics_host="127.0.0.1"
    )
    await server.start()
    url = f"http://127.0.0.1:{metrics_port}"
    try:
        assert server.metrics_port == metrics_port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{url}/metrics") as response:
                assert "enishi_grpc_calls_total" in await response.text()
    finally:
        await server.stop(0)
    assert server.metrics_port == metrics_port
    assert not await server._is_ready()


def test_many_bad_fields_make_a_bounded_message() -> None:
    errors = [FieldError(field_path("events", i, "name"), "must not be empty") for i in range(500)]

    message = str(InvalidArgument(errors))

    assert message.startswith("events[0].name: must not be empty; events[1].name")
    assert message.endswith(f"; and {500 - MAX_FIELD_ERRORS_IN_MESSAGE} more")


def test_pydantic_validation_errors_become_field_errors() -> None:
    class Event(BaseModel):
        name: str
        count: int

    class Batch(BaseModel):
        events: list[Event]

    with pytest.raises(ValidationError) as caught:
        Batch.model_validate({"events": [{"name": "a.b", "count": 1}, {"name": "c.d"}]})

    error = InvalidArgument.from_validation_error(caught.value, prefix="request")
    assert [e.field for e in error.errors] == ["request.events[1].count"]


# `run()` is what a service's __main__ calls; only a real process can receive SIGTERM.
_RUN_SERVICE = """
import structlog
from enishi.config import GrpcServiceSettings
from enishi.grpc_server import run

async def close_clients() -> None:
    structlog.get_logger("probe").info("probe.clients_closed")

raise SystemExit(run(GrpcServiceSettings(), "probe", lambda server: [], on_shutdown=close_clients))
"""


async def start_service(**env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RUN_SERVICE,
        env={
            **os.environ,
            "ENISHI_GRPC_HOST": "127.0.0.1",
            "ENISHI_GRPC_PORT": "0",
            "ENISHI_METRICS_PORT": "0",
            "ENISHI_LOG_FORMAT": "json",
            "ENISHI_LOG_LEVEL": "INFO",
            "ENISHI_API_KEYS": auth_support.SERVER_KEYS.get_secret_value(),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_until(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while line := await asyncio.wait_for(proc.stdout.readline(), 30):
        record: dict[str, Any] = json.loads(line)
        if record["event"] == event:
            return record
    raise AssertionError(f"process ended before logging {event}")


async def test_run_serves_until_sigterm_then_stops_cleanly() -> None:
    proc = await start_service()
    try:
        serving = await read_until(proc, "grpc.serving")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{serving['port']}") as channel:
            reply = await health_check(channel)(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        proc.send_signal(signal.SIGTERM)
        assert (await read_until(proc, "process.stopping"))["signal"] == "SIGTERM"
        await read_until(proc, "probe.clients_closed")
        await read_until(proc, "process.stopped")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_with_its_port_taken_exits_with_one_readable_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = await start_service(ENISHI_GRPC_PORT=str(taken.getsockname()[1]))
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 2
    (failure,) = [
        r for r in map(json.loads, stdout.splitlines()) if r["event"] == "process.cannot_start"
    ]
    assert failure["env_var"] == "ENISHI_GRPC_PORT"
    assert "ENISHI_GRPC_PORT" in failure["reason"]
    assert b"Traceback" not in stdout + stderr
