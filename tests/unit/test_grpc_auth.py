"""API keys at the one interceptor: refused calls are answered, logged by key name, never by key.

The echo test service of test_grpc_server.py is not in the role table, so it needs `admin`
(what any method the table forgets would need).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from enishi import grpc_client
from enishi.auth import Role
from enishi.errors import ConfigurationError
from enishi.grpc_server import GrpcServer
from tests import auth_support
from tests.unit.conftest import Lines
from tests.unit.test_grpc_server import (
    SERVICE,
    Echo,
    calls,
    health_check,
    reflection_info,
    settings,
    unary,
)

pytestmark = pytest.mark.unit

ADMIN = auth_support.ROLE_KEYS[Role.ADMIN]
READER = auth_support.ROLE_KEYS[Role.READER]


@pytest_asyncio.fixture
async def address() -> AsyncIterator[str]:
    echo = Echo()
    server = GrpcServer(settings(), "echo", echo.add)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def test_a_call_without_a_key_is_unauthenticated_and_logged_as_such(
    address: str, json_lines: Lines
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(channel, "Echo")(b"x")

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (caught.value.details() or "")
    (line,) = calls(json_lines(), "Echo")
    assert (line["code"], line["error"]) == ("UNAUTHENTICATED", "Unauthenticated")
    assert "caller" not in line


async def test_an_unknown_key_is_unauthenticated_whichever_header_carries_it(
    address: str,
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        for header, value in (
            ("authorization", f"Bearer {ADMIN.secret}x"),
            ("x-api-key", ADMIN.secret[:-1]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unary(channel, "Echo")(b"x", metadata=((header, value),))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details() == f"/{SERVICE}/Echo: unknown API key"


async def test_a_key_without_the_role_is_denied_naming_the_role_never_the_key(
    address: str, json_lines: Lines
) -> None:
    async with grpc_client.aio_channel(address, auth_support.client(READER)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(channel, "Echo")(b"x")

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = caught.value.details() or ""
    assert "needs role admin" in details and "'test-reader'" in details
    assert READER.secret not in details
    (line,) = calls(json_lines(), "Echo")
    assert (line["code"], line["caller"]) == ("PERMISSION_DENIED", "test-reader")


async def test_the_callers_key_name_is_in_the_call_line_and_the_secret_in_no_line(
    address: str, json_lines: Lines
) -> None:
    async with grpc_client.aio_channel(address, auth_support.ADMIN) as channel:
        assert await unary(channel, "Echo")(b"x") == b"x"
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(channel, "Crash")(b"")
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(channel, "Echo")(b"x", metadata=(("x-api-key", READER.secret + "x"),))

    lines = json_lines()
    (ok,) = calls(lines, "Echo")[:1]
    assert (ok["code"], ok["caller"]) == ("OK", "test-admin")
    (crash,) = [x for x in lines if x["event"] == "grpc.unhandled_error"]
    assert crash["caller"] == "test-admin"  # what the handler logs carries it too
    text = json.dumps(lines)
    assert ADMIN.secret not in text and READER.secret not in text


async def test_a_stream_is_checked_like_a_unary_call(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        count = channel.unary_stream(
            f"/{SERVICE}/Count", request_serializer=bytes, response_deserializer=bytes
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in count(b"1"):
                pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_answer_without_a_key(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_check(channel)(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in reflection_info(channel)(iter([request]))]
    assert SERVICE in {s.name for s in replies[0].list_services_response.service}


async def test_a_server_without_keys_will_not_start_and_binds_nothing() -> None:
    server = GrpcServer(settings(api_keys=""), "echo", Echo().add)

    with pytest.raises(ConfigurationError, match="no API keys") as caught:
        await server.start()

    assert caught.value.env_var == "ENISHI_API_KEYS"
    assert not server.is_serving


async def test_auth_disabled_on_purpose_serves_anyone_and_says_so(json_lines: Lines) -> None:
    server = GrpcServer(settings(api_keys="", auth_disabled=True), "echo", Echo().add)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert await unary(channel, "Echo")(b"x") == b"x"
    finally:
        await server.stop(0)

    (warning,) = [x for x in json_lines() if x["event"] == "grpc.auth_disabled"]
    assert warning["level"] == "warning"
    assert "ENISHI_AUTH_DISABLED=true" in warning["reason"]


_RUN_WITHOUT_KEYS = """
from enishi.config import GrpcServiceSettings
from enishi.grpc_server import run

raise SystemExit(run(GrpcServiceSettings(), "probe", lambda server: []))
"""


async def test_a_service_started_without_keys_exits_with_one_readable_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENISHI_")}
    env |= {"ENISHI_GRPC_HOST": "127.0.0.1", "ENISHI_GRPC_PORT": "0", "ENISHI_LOG_FORMAT": "json"}
    env["ENISHI_API_KEYS"] = "weak:reader:short"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RUN_WITHOUT_KEYS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 2, stderr.decode()
    (failure,) = [
        r for r in map(json.loads, stdout.splitlines()) if r["event"] == "process.cannot_start"
    ]
    assert failure["env_var"] == "ENISHI_API_KEYS"
    assert "key 'weak': secret shorter than 24 characters" in failure["reason"]
    assert b"Traceback" not in stdout + stderr
    assert b"short" not in stdout.replace(b"shorter", b"")
